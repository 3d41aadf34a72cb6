"""Clients of a round trained in worker processes (`engine.workers`, local engine only).

Each worker holds the data, the partition and one model, received once when the pool starts
(torch shares the tensors' memory instead of copying them). A client's result depends only on
(seed, round, client) and on the threads it trains with, so the workers' results equal a
sequential run that uses the same threads per client: `threads_per_worker` is fixed here so
the pool never oversubscribes the cores.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import torch
import torch.multiprocessing as torch_mp

from fedprune import steps
from fedprune.config import ExperimentConfig
from fedprune.errors import ignore_signals
from fedprune.records import ClientUpdate
from fedprune.tasks.datasets import FederatedData
from fedprune.tasks.partitioners import Partition

_worker: dict[str, steps.Runtime] = {}


def _start(*, cfg: ExperimentConfig, data: FederatedData, shards: Partition, threads: int) -> None:
    ignore_signals()  # Ctrl-C reaches the whole process group: the main process ends us
    torch.set_num_threads(threads)
    _worker["rt"] = steps.Runtime.build(cfg, data=data, shards=shards)


def _train(
    payload: bytes, client: int, *, round_: int, personal: dict[int, steps.Personal]
) -> ClientUpdate:
    (update,) = steps.train_clients(
        _worker["rt"], payload, [client], round_=round_, personal=personal
    )
    return update


def threads_per_worker(workers: int) -> int:
    return max(1, torch.get_num_threads() // workers)


class ClientPool:
    def __init__(self, rt: steps.Runtime):
        workers = rt.cfg.engine.workers
        self.executor = ProcessPoolExecutor(
            workers,
            mp_context=torch_mp.get_context("spawn"),  # fork after OpenMP started can hang
            initializer=functools.partial(
                _start,
                cfg=rt.cfg,
                data=rt.data,
                shards=rt.shards,
                threads=threads_per_worker(workers),
            ),
        )

    def train(
        self,
        payload: bytes,
        clients: list[int],
        *,
        round_: int,
        personal: dict[int, steps.Personal],
    ) -> Iterator[ClientUpdate]:
        """Each client's update as soon as it is ready, in client order (`personal`: the
        clients' own masks and downloads, LotteryFL)."""
        futures = [
            self.executor.submit(
                _train,
                payload,
                c,
                round_=round_,
                personal={c: personal[c]} if c in personal else {},
            )
            for c in clients
        ]
        for future in futures:
            yield future.result()

    def close(self) -> None:
        self.executor.shutdown(cancel_futures=True)
