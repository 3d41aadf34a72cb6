"""`fedprune privacy calibrate CONFIG`: the noise multiplier a target ε needs, and what the
config's own spends round by round."""

from __future__ import annotations

import argparse

from rich.table import Table

from fedprune.console import console
from fedprune.errors import UserError


def cmd_calibrate(args: argparse.Namespace) -> int:
    from fedprune import steps
    from fedprune.config import load_config
    from fedprune.privacy.accounting import calibrate, worst_epsilon

    cfg = load_config(args.config)
    privacy = cfg.privacy
    if not privacy.private:
        raise UserError(f"{args.config}: privacy.mechanism is none: there is nothing to calibrate")
    target = args.epsilon if args.epsilon is not None else privacy.target_epsilon
    if target is None:
        raise UserError("--epsilon: give the target ε (the config sets no privacy.target_epsilon)")
    with console.status("splitting the data" if privacy.mechanism == "local" else "accounting"):
        rt = steps.Runtime.build(cfg, with_data=privacy.mechanism == "local")
        costs = rt.privacy_costs()
    account = {"delta": privacy.delta, "accountant": privacy.accountant}
    needed = calibrate(costs, target, rounds=cfg.rounds, **account)
    console.print(
        f"noise_multiplier ≥ {needed:.4g} keeps ε ≤ {target} at δ = {privacy.delta} over "
        f"{cfg.rounds} rounds ({privacy.mechanism} DP, {privacy.accountant} accountant"
        + (f", q = {cfg.sampling.fraction}" if privacy.mechanism == "central" else "")
        + ")"
    )
    table = Table(
        title=f"ε spent with noise_multiplier {privacy.noise_multiplier}", show_edge=False
    )
    table.add_column("after round", justify="right")
    table.add_column("ε", justify="right")
    marks = sorted({1, *(max(1, cfg.rounds * k // 4) for k in (1, 2, 3, 4))})
    for rounds in marks:
        table.add_row(str(rounds), f"{worst_epsilon(costs, rounds, **account):.3g}")
    console.print(table)
    return 0


def add_privacy_commands(sub: argparse._SubParsersAction) -> None:
    privacy = sub.add_parser("privacy", help="differential privacy: calibrate the noise")
    commands = privacy.add_subparsers(dest="privacy_command", required=True)
    calibrate = commands.add_parser(
        "calibrate", help="the noise multiplier that meets a target ε, and the config's ε"
    )
    calibrate.add_argument("config", help="the experiment's YAML config (its privacy section)")
    calibrate.add_argument(
        "--epsilon", type=float, help="the target ε (default: privacy.target_epsilon)"
    )
    calibrate.set_defaults(handler=cmd_calibrate)
