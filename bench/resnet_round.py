"""One FL round of ResNet-18 on 32×32×3 images: dense against structured 50% (clients train
the physically shrunk model, as `pruning.method: structured` has them do).

    .venv/bin/python bench/resnet_round.py [--device cpu|cuda] [--repeats 5] [--clients 4]
        [--samples 256] [--batch-size 32]

A round here is what the engine does per round between broadcast and publish, from fedprune's
own functions: for each client, load the broadcast weights into the learner, one local epoch
of SGD (`local_train`), read the trained weights back (structured: expanded to the full
shape, `expand_weights`), then FedAvg over the clients (`weighted_average`, as the `fedavg`
strategy does). Not timed: encoding, the store, evaluation, MLflow (small beside training
here). The data are synthetic (Gaussian images, uniform labels: the speed of a step does
not depend on what the pixels are), fixed per client and made once. Both variants get one
untimed warm-up round (allocator, cuDNN autotuning), then the repeats are interleaved (dense,
structured, dense, …) so drift on a shared machine cannot bias the ratio; the medians and
dense / structured are printed. The mask is the structured method's at 50% of parameters
(L2-norm channel ranking of the fresh model).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

# Idle OpenMP threads sleep instead of spinning (see bench/speed.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from fedprune.pruning.channels import (  # noqa: E402
    ChannelGraph,
    expand_weights,
    macs,
    shrink,
    slice_weights,
    structured_mask,
)
from fedprune.pruning.masks import Mask, Weights, full_mask, prunable_names  # noqa: E402
from fedprune.strategies.buffers import (  # noqa: E402
    DecodedUpdate,
    sample_weights,
    weighted_average,
)
from fedprune.tasks.models import MODELS  # noqa: E402
from fedprune.tasks.objectives import build_task  # noqa: E402
from fedprune.training.local import ClientConfig, local_train  # noqa: E402

SHAPE = (3, 32, 32)
CLASSES = 10


class Variant:
    """What one variant's clients train: the learner, the weights it starts from, and the
    mask that expands its results to the global model's shape (empty: dense)."""

    def __init__(self, model: nn.Module, sparsity: float, device: torch.device):
        weights = {n: t.detach().clone() for n, t in model.state_dict().items()}
        self.like = {n: t.to(device) for n, t in weights.items()}
        self.mask: Mask = {}
        learner, start = model, weights
        if sparsity:
            graph = ChannelGraph.of(model, SHAPE)
            full = full_mask(weights, prunable_names(weights, True, statistics=True))
            mask = structured_mask(graph, weights, full, sparsity=sparsity)
            learner, start = shrink(graph, weights, mask), slice_weights(weights, mask)
            self.mask = {n: m.to(device) for n, m in mask.items()}
        self.params = sum(p.numel() for p in learner.parameters())
        self.macs = macs(learner, SHAPE)
        self.learner = learner.to(device)
        self.start = {n: t.to(device) for n, t in start.items()}

    def round(self, data: list[tuple[torch.Tensor, torch.Tensor]], cfg: ClientConfig) -> Weights:
        """One round: every client's local training, then FedAvg; the new global weights."""
        task = build_task()
        trained = []
        for client, (x, y) in enumerate(data):
            self.learner.load_state_dict(self.start)
            generator = torch.Generator().manual_seed(client)
            local_train(self.learner, {}, x=x, y=y, cfg=cfg, generator=generator, task=task)
            local = {n: t.detach().clone() for n, t in self.learner.state_dict().items()}
            trained.append(expand_weights(local, self.mask, self.like) if self.mask else local)
        sizes = [len(y) for _, y in data]
        updates = [DecodedUpdate(w, self.mask, n) for w, n in zip(trained, sizes, strict=True)]
        return weighted_average(updates, list(self.like), sample_weights(updates))


def timed(variant: Variant, data: list, cfg: ClientConfig, device: torch.device) -> float:
    start = time.perf_counter()
    variant.round(data, cfg)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--samples", type=int, default=256, help="per client")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = MODELS.get("resnet18")(SHAPE, CLASSES, MODELS["resnet18"].params())
    variants = {"dense": Variant(model, 0.0, device), "structured 50%": Variant(model, 0.5, device)}
    data = [
        (
            torch.randn(args.samples, *SHAPE, device=device),
            torch.randint(CLASSES, (args.samples,), device=device),
        )
        for _ in range(args.clients)
    ]
    cfg = ClientConfig(epochs=1, batch_size=args.batch_size, lr=0.05)
    print(
        f"ResNet-18, {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} synthetic data, {args.clients} clients x "
        f"{args.samples} samples, batch {args.batch_size}, {args.device}, "
        f"{torch.get_num_threads()} threads"
    )
    for name, variant in variants.items():
        print(f"  {name:15s} params {variant.params:>11,}  MACs/sample {variant.macs:>13,.0f}")
        timed(variant, data, cfg, device)  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, variant in variants.items():
            seconds[name].append(timed(variant, data, cfg, device))
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    for name, times in seconds.items():
        runs = " ".join(f"{t:.2f}" for t in times)
        print(f"  {name:15s} median {medians[name]:.3f} s per round  ({runs})")
    print(f"  dense / structured: {medians['dense'] / medians['structured 50%']:.2f}x")


if __name__ == "__main__":
    main()
