"""The FL steps as plain functions: plain data in, plain data out, no I/O.

Both engines call these (through the round driver, `fedprune.engine.round`) and nothing else
for the science: the local engine in one process, the Kubeflow components one step per pod.
"""

from fedprune.records import ClientUpdate, Downloads, GlobalModel, RoundMetrics, seed_for
from fedprune.steps.clients import train_clients
from fedprune.steps.downloads import Personal, broadcast, downloads, personal_starts
from fedprune.steps.metrics import evaluate, is_test_round, round_metrics
from fedprune.steps.personal import mix_accuracy
from fedprune.steps.runtime import (
    Runtime,
    init_global,
    load_data,
    partition_data,
    sample_clients,
)
from fedprune.steps.screening import Rejection, RoundFailed, accepted, screen
from fedprune.steps.server import aggregate, mean_importance, server_prune

__all__ = [
    "Rejection",
    "RoundFailed",
    "accepted",
    "screen",
    "ClientUpdate",
    "Downloads",
    "GlobalModel",
    "Personal",
    "RoundMetrics",
    "Runtime",
    "aggregate",
    "broadcast",
    "downloads",
    "evaluate",
    "init_global",
    "is_test_round",
    "load_data",
    "mean_importance",
    "mix_accuracy",
    "partition_data",
    "personal_starts",
    "round_metrics",
    "sample_clients",
    "seed_for",
    "server_prune",
    "train_clients",
]
