"""MLflow tracking: params are the flattened config, metrics one point per round (step=round).

MLflow is imported on first use: it is slow to import and `fedprune --help` should not wait.
This module imports nothing else of fedprune's (the local engine's tracking process,
`fedprune.tracking.worker`, loads it without torch); `fedprune.tracking.runs` builds trackers
and runs from a config."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from fedprune.errors import UserError

BATCH = 100
# MLflow's own HTTP retries (exponential backoff) default to 7 tries with factor 2: minutes before
# a stopped server is reported. These defaults give up after about 7 s; the environment overrides.
RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
"""The tag MLflow 3's UI reads to open an experiment in its model-training view."""


class TrackingError(UserError):
    """The MLflow tracking server or database cannot be used as configured."""


@contextlib.contextmanager
def tracking_errors(uri: str) -> Iterator[None]:
    """MLflow's exceptions → one line that says where and what to check."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        reason = str(error.message).strip().splitlines()[0][:300]
        raise TrackingError(
            f"MLflow tracking at {uri} failed: {reason} — check `tracking` and that the "
            "server is running and reachable"
        ) from None


@contextlib.contextmanager
def schema_lock(uri: str) -> Iterator[None]:
    """For a SQLite database, one process at a time creates or migrates its schema: MLflow
    does both on first use, and two runs starting together on a new database would race
    (`duplicate column name`). A lock file beside the database; other URIs need none."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Tracker:
    def __init__(self, uri: str, experiment: str, artifact_root: Path):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        remote = uri.startswith(("http://", "https://"))
        if remote:
            for name, value in RETRY_DEFAULTS.items():
                os.environ.setdefault(name, value)
        with schema_lock(uri), tracking_errors(uri):
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = self._experiment(experiment, remote, artifact_root)
        self.run_id = ""

    def _experiment(self, name: str, remote: bool, artifact_root: Path) -> str:
        """The experiment's id, created on first use; two runs starting at once may both try
        to create it, and the loser takes the winner's."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is None:
            # Local runs keep their artifacts beside the store instead of in ./mlruns.
            location = None if remote else artifact_root.resolve().as_uri()
            with contextlib.suppress(MlflowException):  # created meanwhile by another run
                self.client.create_experiment(name, artifact_location=location)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise TrackingError(f"MLflow at {self.uri} did not create experiment '{name}'")
        if EXPERIMENT_KIND not in found.tags:  # else the UI opens it in its GenAI view
            self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        return found.experiment_id

    def start(
        self, run_name: str, params: dict[str, str], tags: dict[str, str], add_id: bool = False
    ) -> str:
        """A new run; with `add_id` its name ends in the run id's first 8 characters."""
        from mlflow.entities import Param

        with tracking_errors(self.uri):
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
            self.run_id = run.info.run_id
            if add_id:
                self.client.update_run(self.run_id, name=f"{run_name}-{self.run_id[:8]}")
            items = [Param(k, v) for k, v in params.items()]
            for start in range(0, len(items), BATCH):
                self.client.log_batch(self.run_id, params=items[start : start + BATCH])
        return self.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        with tracking_errors(self.uri):
            for start in range(0, len(items), BATCH):
                self.client.log_batch(self.run_id, metrics=items[start : start + BATCH])

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        with tracking_errors(self.uri):
            self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def finish(self, status: str = "FINISHED") -> None:
        with tracking_errors(self.uri):
            self.client.set_terminated(self.run_id, status=status)

    def abandon(self, status: str) -> None:
        """Mark the run FAILED or KILLED if the server still answers; the error that got us here
        is the one to report, not a second one from a tracking server that is down too."""
        try:
            self.finish(status)
        except Exception as error:
            logging.getLogger(__name__).warning(
                "could not mark run %s %s: %s", self.run_id, status, error
            )

    def reopen(self, run_id: str) -> None:
        """Continue a run of this experiment (resume): it becomes RUNNING again."""
        from mlflow.exceptions import MlflowException

        with tracking_errors(self.uri):
            try:
                run = self.client.get_run(run_id)
            except MlflowException as error:
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                run = None
            if run is None or run.info.experiment_id != self.experiment_id:
                raise TrackingError(f"run {run_id} not found in experiment at {self.uri}")
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id

    def logged_steps(self, metric: str) -> set[int]:
        with tracking_errors(self.uri):
            return {m.step for m in self.client.get_metric_history(self.run_id, metric)}

    def log_bytes(self, name: str, data: bytes, folder: str | None = None) -> None:
        """Log an in-memory object as an artifact (MLflow uploads files)."""
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / name
            path.write_bytes(data)
            self.log_artifact(path, folder)

    def prepare_model_logging(self) -> None:
        """Import what `log_model` needs (torch, MLflow's pytorch flavour: ~1.5 s), so that the
        tracking process does it while rounds train instead of after the last one."""
        import mlflow.pytorch  # noqa: F401
        import torch  # noqa: F401

    def log_model(
        self,
        model_file: str,
        example_file: str,
        registered: str | None,
        tags: dict[str, str],
        step: int,
    ) -> str | None:
        """Log the model pickled in `model_file` (`torch.save` of the module) as the run's
        MLflow model `model` (pytorch flavour; an MLflow 3 logged model, so the UI lists it
        with the run and `runs:/<run id>/model` loads it), tagged `tags`, its signature
        inferred from the inputs in `example_file` (.npy) and its outputs, as the run's output
        at `step`; with `registered`, add it as a new version of that registered model.
        Returns the version."""
        import mlflow.pytorch
        import numpy as np
        import torch
        from mlflow.entities import LoggedModelOutput
        from mlflow.exceptions import MlflowException
        from mlflow.models import infer_signature

        # Pickled on purpose (see below): MLflow's advice to use pt2 instead is not for us.
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        model = torch.load(model_file, weights_only=False)
        example = np.load(example_file)
        with torch.no_grad():
            outputs = model(torch.from_numpy(example)).numpy()
        with tracking_errors(self.uri), tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / "model"
            mlflow.pytorch.save_model(
                model,
                str(folder),
                signature=infer_signature(example, outputs),
                input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                # pickled, not "pt2": a pt2 export fixes the batch size to the example's
                serialization_format="pickle",
            )
            logged = self.client.create_logged_model(
                self.experiment_id, name="model", source_run_id=self.run_id, tags=tags,
                model_type="pytorch",
            )  # fmt: skip
            self.client.log_model_artifacts(logged.model_id, str(folder))
            self.client.finalize_logged_model(logged.model_id, "READY")
            self.client.log_outputs(self.run_id, [LoggedModelOutput(logged.model_id, step)])
            if registered is None:
                return None
            try:
                self.client.create_registered_model(registered)
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            version = self.client.create_model_version(
                registered, logged.artifact_location, run_id=self.run_id, tags=tags,
                model_id=logged.model_id,
            )  # fmt: skip
            return str(version.version)

    def log_input(self, name: str, digest: str, source: str, context: str) -> None:
        """Record the data set the run saw (an MLflow dataset input, with its digest)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name, digest=digest, source_type="local", source=source)
        tags = [InputTag(key="mlflow.data.context", value=context)]
        with tracking_errors(self.uri):
            self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, tags)])

    def set_tag(self, key: str, value: str) -> None:
        with tracking_errors(self.uri):
            self.client.set_tag(self.run_id, key, value)

    def attach(self, run_id: str) -> Tracker:
        """Log into a run another process opened (each Kubeflow step is its own pod)."""
        self.run_id = run_id
        return self

    def ui_hint(self) -> str:
        return ui_hint(self.uri)


def ui_hint(uri: str) -> str:
    """How to look at runs tracked at `uri`: a command that works as pasted, with the
    `mlflow` of this environment by its path (the venv need not be active)."""
    import shlex
    import sys

    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    beside = Path(sys.executable).parent / "mlflow"
    mlflow = shlex.quote(str(beside)) if beside.exists() else "mlflow"
    return f"{mlflow} ui --backend-store-uri {shlex.quote(uri)}  (then open http://127.0.0.1:5000)"
