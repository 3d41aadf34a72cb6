"""Workload W through Flower's simulation runtime (`flwr[simulation]`, the `bench` extra).

Bench-only: nothing in fedprune/ or tests imports this module or Flower.

Same model (steps.Runtime's), data, partition, client sampling (steps.sample_clients: the
strategy sends round r's training messages to exactly those clients), per-client batch order
(steps.seed_for(seed, round, client)) and plain SGD loop as the bare floor, and the same test of
the global model on the 10k test set after every round (Flower's centralised `evaluate_fn`,
skipped at round 0 because W does not test the initial model). Aggregation is Flower's own
FedAvg (sample-weighted, in numpy). Clients run in Ray actors: one actor with all the threads,
as the bare loop trains one client at a time with all the threads.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import train_plain  # noqa: E402

from fedprune import steps  # noqa: E402
from fedprune.config import ExperimentConfig  # noqa: E402
from fedprune.tasks.datasets import load_dataset  # noqa: E402
from fedprune.tasks.objectives import build_task  # noqa: E402
from fedprune.training.local import evaluate  # noqa: E402


@cache
def _client_side(cfg_json: str, threads: int):
    """Per actor process, once: the config, data, partition and a model to train in."""
    torch.set_num_threads(threads)
    cfg = ExperimentConfig.model_validate_json(cfg_json)
    data = load_dataset(cfg.data.dataset)
    rt = steps.Runtime.build(cfg, data=data)
    return cfg, data, rt.shards, rt.model


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    config = msg.content["config"]
    cfg, data, shards, model = _client_side(str(config["cfg"]), int(config["threads"]))
    client, round_ = int(config["client"]), int(config["server-round"])
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    rows = torch.from_numpy(shards[client])
    seed = steps.seed_for(cfg.seed, round_, client)
    train_plain(model, data.x_train[rows], data.y_train[rows], cfg, seed)
    reply = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"num-examples": len(rows)}),
        }
    )
    return Message(content=reply, reply_to=msg)


class SampledFedAvg(FedAvg):
    """FedAvg whose round r trains exactly steps.sample_clients(cfg, r); node i of the sorted
    node ids stands for client i (the message names the client, so it picks its own shard)."""

    def __init__(self, cfg: ExperimentConfig, threads: int) -> None:
        super().__init__(fraction_evaluate=0.0, min_available_nodes=cfg.data.num_clients)
        self.cfg, self.threads = cfg, threads

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = sorted(grid.get_node_ids())
        while len(nodes) < self.cfg.data.num_clients:  # nodes may still be registering
            time.sleep(0.05)
            nodes = sorted(grid.get_node_ids())
        messages = []
        for client in steps.sample_clients(self.cfg, server_round):
            record = ConfigRecord(
                {
                    "server-round": server_round,
                    "client": client,
                    "cfg": self.cfg.model_dump_json(),
                    "threads": self.threads,
                }
            )
            content = RecordDict({"arrays": arrays, "config": record})
            messages.append(
                Message(content=content, message_type="train", dst_node_id=nodes[client])
            )
        return messages


def flower_run(cfg: ExperimentConfig, threads: int) -> float:
    """Run W in Flower's simulation; returns the global model's test accuracy after the last
    round (evaluated in the server process with fedprune.training.local.evaluate, as the others)."""
    data = load_dataset(cfg.data.dataset)
    model = steps.Runtime.build(cfg, data=data).model
    accuracies: list[float] = []

    def evaluate_global(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:  # W tests after every round, not the initial model
            return None
        model.load_state_dict(arrays.to_torch_state_dict())
        batch = cfg.eval.batch_size
        result = evaluate(model, data.x_test, data.y_test, batch_size=batch, task=build_task())
        accuracies.append(result.metrics["accuracy"])
        return MetricRecord({"accuracy": result.metrics["accuracy"], "loss": result.loss})

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        SampledFedAvg(cfg, threads).start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=cfg.rounds,
            evaluate_fn=evaluate_global,
        )

    # Ray's workers import this module by name: put bench/ on their path.
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [here, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    logging.getLogger("flwr").setLevel(int(os.environ.get("FLWR_LOG", logging.WARNING)))
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=cfg.data.num_clients,
        backend_config={
            "client_resources": {"num_cpus": threads, "num_gpus": 0.0},
            "init_args": {
                "num_cpus": threads,
                "num_gpus": 0,
                "include_dashboard": False,
                "log_to_driver": False,
                "logging_level": "ERROR",
            },
        },
    )
    if len(accuracies) != cfg.rounds:
        raise RuntimeError(f"Flower tested {len(accuracies)} of {cfg.rounds} rounds")
    return accuracies[-1]
