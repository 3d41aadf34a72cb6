"""The `privacy` section: differential privacy (client-level on the server, or sample-level
on each client) with its accountant, and secure aggregation. docs/privacy.md explains each
setting with its paper."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from fedprune.errors import UserError
from fedprune.registry import Params


class PrivacyError(UserError):
    """Privacy settings the experiment cannot hold (found once the data is split)."""


class PrivacyConfig(Params):
    mechanism: Literal["none", "central", "local"] = "none"
    """`central`: client-level DP-FedAvg (McMahan et al. 2018, arXiv 1710.06963): each
    client's model change is clipped to `clip` and the server adds Gaussian noise of
    `noise_multiplier`·`clip` to their sum. `local`: sample-level DP-SGD on every client
    (Abadi et al. 2016, arXiv 1607.00133) through Opacus: each example's gradient clipped to
    `clip`, noise of `noise_multiplier`·`clip` added to every batch's sum."""
    noise_multiplier: Annotated[float, Field(ge=0.0)] = 1.0
    """The Gaussian noise's standard deviation over the clipping norm (σ). `fedprune privacy
    calibrate` tells the smallest one that meets a target ε."""
    clip: Annotated[float, Field(gt=0.0)] = 1.0
    """L2 bound: of a client's model change (central), of one example's gradient (local)."""
    clip_quantile: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    """Central DP: adapt `clip` every round towards this quantile of the clients' change
    norms (Andrew et al. 2021, arXiv 1905.03871; 0.5 is their median), starting from `clip`;
    None keeps `clip` fixed."""
    clip_lr: Annotated[float, Field(gt=0.0)] = 0.2
    """Adaptive clipping's step: clip ← clip · exp(−clip_lr · (b̃ − clip_quantile)), b̃ the
    noised share of clients within the clip."""
    clip_count_noise: Annotated[float, Field(gt=0.0)] | None = None
    """Adaptive clipping: the std of the noise on the count of clients within the clip;
    None: expected clients a round / 20 (the paper's). Part of `noise_multiplier`'s budget:
    the changes get σ_Δ = (σ⁻² − (2·clip_count_noise)⁻²)^-½."""
    delta: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-5
    """The δ of (ε, δ)-DP; choose it below 1 / the number of clients (central) or of one
    client's examples (local)."""
    target_epsilon: Annotated[float, Field(gt=0.0)] | None = None
    """Stop before ε at `delta` would exceed this: the run trains the rounds the budget allows
    and publishes its final model; a config whose first round already exceeds it is refused."""
    accountant: Literal["rdp", "prv"] = "rdp"
    """Opacus's accountant: Rényi DP (Mironov 2017) or the tighter PRV accountant (Gopi et
    al. 2021, arXiv 2106.02848)."""
    secure_aggregation: bool = False
    """The server learns only the sum of the clients' weighted updates (Bonawitz et al. 2017):
    pairwise masks from X25519 key agreement, dropout recovery by Shamir-shared seeds."""
    threshold: Annotated[float, Field(gt=0.5, le=1.0)] = 0.6
    """Secure aggregation: the share of a round's clients that must stay until the end
    (Shamir threshold t = ⌈threshold·n⌉); more may drop out only if t remain."""

    @model_validator(mode="after")
    def _usable(self) -> PrivacyConfig:
        if self.mechanism == "none":
            if self.target_epsilon is not None:
                raise ValueError(
                    "privacy.target_epsilon needs a mechanism: set privacy.mechanism to "
                    "central or local"
                )
            return self
        if self.noise_multiplier == 0:
            raise ValueError(
                f"privacy.noise_multiplier 0 gives no privacy (ε is infinite) with mechanism "
                f"'{self.mechanism}': set it above 0 (`fedprune privacy calibrate` tells the "
                "one that meets a target ε)"
            )
        return self

    @property
    def private(self) -> bool:
        return self.mechanism != "none"


def check_privacy(cfg) -> None:
    """Refuse, with the reason, what the privacy settings cannot hold with the rest of the
    experiment (`cfg`: an ExperimentConfig)."""
    from fedprune.privacy.accounting import round_costs, unreachable
    from fedprune.pruning.methods import METHODS
    from fedprune.strategies import STRATEGIES

    privacy = cfg.privacy
    if privacy.mechanism == "none" and not privacy.secure_aggregation:
        return
    strategy = STRATEGIES.get(cfg.aggregation.method)
    if not strategy.from_average:
        sees = "the noised sum" if privacy.mechanism == "central" else "the sum"
        setting = (
            "privacy.mechanism central" if privacy.mechanism == "central" else "secure aggregation"
        )
        usable = ", ".join(n for n in STRATEGIES.names() if STRATEGIES.get(n).from_average)
        raise ValueError(
            f"aggregation.method '{cfg.aggregation.method}' needs each client's update, but "
            f"with {setting} the server sees only {sees} (and one client's influence on such "
            f"a rule is not bounded by the clip): use one of {usable}"
        )
    if privacy.secure_aggregation and cfg.clients_per_round() < 2:
        raise ValueError(
            "privacy.secure_aggregation needs at least 2 clients a round (one client's sum is "
            f"its update), not {cfg.clients_per_round()}: raise sampling"
        )
    if privacy.secure_aggregation and cfg.aggregation.outlier_norm is not None:
        raise ValueError(
            "aggregation.outlier_norm compares each client's update norm, which secure "
            "aggregation hides: leave it unset (privacy.mechanism central bounds every "
            "update by privacy.clip instead)"
        )
    if privacy.mechanism == "none":
        return
    if not METHODS.get(cfg.pruning.method).needs(cfg.pruning).private:
        private = [n for n in METHODS.names() if METHODS.get(n).needs(METHODS[n].params()).private]
        raise ValueError(
            f"pruning method '{cfg.pruning.method}' with these settings uses the clients' data "
            "outside the privatised training (importance uploads, masks chosen by accuracy, "
            f"dense gradients or mask counts), which privacy.mechanism '{privacy.mechanism}' "
            f"cannot account for: use {', '.join(private)}"
        )
    if privacy.clip_quantile is not None:
        if privacy.mechanism != "central":
            raise ValueError(
                "privacy.clip_quantile adapts central DP's clip: set mechanism central"
            )
        if privacy.secure_aggregation:
            raise ValueError(
                "privacy.clip_quantile: the server clips each change to the adapted clip, "
                "which secure aggregation hides from it; use a fixed clip with it"
            )
        count_noise = count_noise_of(privacy, cfg.expected_clients_per_round())
        if 2 * count_noise <= privacy.noise_multiplier:
            raise ValueError(
                f"privacy.clip_count_noise {count_noise:.3g} must exceed noise_multiplier / 2 "
                f"({privacy.noise_multiplier / 2:.3g}): the count's noise takes its part of "
                "the budget from the changes' noise (raise it, or sample more clients a round)"
            )
    if privacy.mechanism == "local":
        if cfg.client.vectorize:
            raise ValueError(
                "client.vectorize: privacy.mechanism local trains each client with Opacus's "
                "per-sample gradients, one client at a time"
            )
        return
    if not cfg.sampling.poisson:
        raise ValueError(
            "privacy.mechanism central: the accountant assumes each client joins a round "
            "independently with probability q (Poisson sampling); set sampling: {fraction: q, "
            "poisson: true} (fixed-size sampling is not accounted)"
        )
    if problem := unreachable(privacy, round_costs(cfg)):
        raise ValueError(problem)


def pipeline_problem(cfg) -> str | None:
    """What the Kubeflow pipeline cannot run yet of these settings (None: it can)."""
    if cfg.privacy.secure_aggregation:
        return (
            "privacy.secure_aggregation runs in the local engine only (`fedprune run`): the "
            "key exchange and shares through the store as round artifacts are not built yet"
        )
    privacy = cfg.privacy
    if privacy.target_epsilon is None:
        return None
    if privacy.mechanism == "local":  # its ε depends on the shards, split in the pods
        return (
            "privacy.target_epsilon with mechanism local: the pipeline's rounds are fixed when "
            "it compiles, before the data is split; set rounds to what `fedprune privacy "
            "calibrate` allows and leave target_epsilon unset"
        )
    from fedprune.privacy.accounting import allowed_rounds, round_costs

    allowed = allowed_rounds(privacy, round_costs(cfg), rounds=cfg.rounds)
    if allowed < cfg.rounds:
        return (
            f"privacy.target_epsilon {privacy.target_epsilon} allows {allowed} of the "
            f"{cfg.rounds} rounds, and the pipeline's rounds are fixed when it compiles: set "
            f"rounds to {allowed} (or raise privacy.noise_multiplier)"
        )
    return None


def count_noise_of(privacy: PrivacyConfig, expected_clients: float) -> float:
    """Adaptive clipping's noise on the within-clip count (default: expected clients / 20)."""
    if privacy.clip_count_noise is not None:
        return privacy.clip_count_noise
    return expected_clients / 20
