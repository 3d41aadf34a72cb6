"""The final model where users expect it: an MLflow model (pytorch flavour) in the run, with
its signature and an input example, optionally registered in the MLflow Model Registry with its
sparsity and main metric as tags, and optionally as ONNX. The exported model is the one that
runs (`Method.served`: structured-pruned models in their shrunk shape) and takes raw features
(a data set's standardisation is part of it)."""

from __future__ import annotations

import copy
import importlib.util
import tempfile
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as st_save
from torch import nn

from fedprune.config import ExperimentConfig
from fedprune.errors import UserError
from fedprune.records import GlobalModel, RoundMetrics
from fedprune.steps import Runtime
from fedprune.steps.features import Standardized
from fedprune.tracking.background import Background
from fedprune.tracking.mlflow import Tracker

EXAMPLE_ROWS = 5


def served_model(rt: Runtime, global_model: GlobalModel) -> nn.Module:
    """A copy of the model as it runs, taking raw inputs."""
    model = copy.deepcopy(rt.method.served(global_model.weights, global_model.mask)).eval()
    return Standardized(model, rt.standardization) if rt.standardization else model


def input_example(rt: Runtime) -> np.ndarray:
    """A few raw test inputs (zeros of the input shape in a pod without the data)."""
    if rt.data is None:
        return np.zeros((EXAMPLE_ROWS, *rt.shape.input_shape), dtype=np.float32)
    x = rt.data.x_test[:EXAMPLE_ROWS]
    if rt.standardization is not None:  # back to raw features, as a caller would send them
        stats = rt.standardization
        x = (x.reshape(len(x), -1).double() * stats.std + stats.mean).float().reshape(x.shape)
    return x.numpy()


class ExportError(UserError):
    """An export the environment cannot do."""


def check_export(cfg: ExperimentConfig) -> None:
    """Before any round: the packages an enabled export needs are installed."""
    if cfg.export.onnx and importlib.util.find_spec("onnxscript") is None:
        raise ExportError(
            "export.onnx: the ONNX exporter needs the onnx extra: pip install 'fedprune[onnx]'"
        )


SHRUNK = "model.shrunk.safetensors"
"""A structured-pruned model's weights in their shrunk shape (`final_artifacts`)."""


def final_artifacts(rt: Runtime, global_model: GlobalModel) -> dict[str, bytes]:
    """What is published beside the final model: the data's statistics (serving needs them),
    for a method that removes channels the model's weights in their shrunk shape (`SHRUNK`:
    a state dict that loads strictly into `Method.served`'s module, no mask) and, with
    `export.onnx`, `model.onnx`."""
    out = rt.data_artifacts()
    if rt.method.trains_shrunk:
        served = rt.method.served(global_model.weights, global_model.mask)
        out[SHRUNK] = st_save({n: t.contiguous() for n, t in served.state_dict().items()})
    if rt.cfg.export.onnx:
        out["model.onnx"] = onnx_bytes(rt, global_model)
    return out


def onnx_bytes(rt: Runtime, global_model: GlobalModel) -> bytes:
    """The served model as ONNX, any batch size (torch.onnx's dynamo exporter)."""
    example = torch.from_numpy(input_example(rt))
    batch = torch.export.Dim("batch", min=1)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        torch.onnx.export(
            served_model(rt, global_model), (example,), str(path), dynamo=True,
            dynamic_shapes=({0: batch},), verbose=False,
        )  # fmt: skip
        return path.read_bytes()


def log_final_model(
    rt: Runtime,
    tracker: Tracker | Background,
    *,
    global_model: GlobalModel,
    history: list[RoundMetrics],
) -> Callable[[], None]:
    """Start logging the final model as the run's MLflow model (`export.mlflow_model`),
    registered under `registry.name` if set; returns what waits for it to be logged. With
    the local engine's tracking process it is logged there while the caller plots and
    publishes (on 2 cores, a second of the run's fixed cost)."""
    if not rt.cfg.export.mlflow_model:
        return lambda: None
    last = history[-1]
    main = rt.task.main
    tags = {
        "sparsity": f"{last.sparsity:.4f}",
        f"test_{main}": f"{last.test.get(main, float('nan')):.6g}",
    }
    scratch = tempfile.TemporaryDirectory()  # until the model is logged: the files are read
    model_file, example_file = Path(scratch.name) / "model.pt", Path(scratch.name) / "example.npy"
    torch.save(served_model(rt, global_model), model_file)
    np.save(example_file, input_example(rt))
    answer = tracker.log_model(
        str(model_file), str(example_file), rt.cfg.registry.name, tags, len(history)
    )

    def logged() -> None:
        try:
            if isinstance(answer, Future):  # the tracking process answers later
                answer.result()
        finally:
            scratch.cleanup()

    return logged
