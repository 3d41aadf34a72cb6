"""The final model where users expect it: an MLflow model (pytorch flavour) in the run, with
its signature and an input example, optionally registered in the MLflow Model Registry with its
sparsity and main metric as tags. The logged model is the one that runs (`Method.served`:
structured-pruned models in their shrunk shape) and takes raw features (a data set's
standardisation is part of it)."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

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


def log_final_model(
    rt: Runtime,
    tracker: Tracker | Background,
    *,
    global_model: GlobalModel,
    history: list[RoundMetrics],
) -> None:
    """Log the final model as the run's MLflow model (`export.mlflow_model`) and register it
    under `registry.name` if set."""
    if not rt.cfg.export.mlflow_model:
        return
    last = history[-1]
    main = rt.task.main
    tags = {
        "sparsity": f"{last.sparsity:.4f}",
        f"test_{main}": f"{last.test.get(main, float('nan')):.6g}",
    }
    with tempfile.TemporaryDirectory() as scratch:
        model_file, example_file = Path(scratch) / "model.pt", Path(scratch) / "example.npy"
        torch.save(served_model(rt, global_model), model_file)
        np.save(example_file, input_example(rt))
        tracker.log_model(str(model_file), str(example_file), rt.cfg.registry.name, tags)
