"""The compiled pipeline with data kept at sites (`kubeflow.sites`), run by kfp.local, against
the local engine (a file of its own, so it runs beside tests/test_pipeline_local.py)."""

from pathlib import Path

from mlflow.tracking import MlflowClient

from fedprune.engine import local as engine
from pipelines.federated_pruning import run_locally


def test_sites_as_places_read_only_their_own_folders_and_match_the_local_engine(
    make_config, tmp_path, monkeypatch
):
    """The hospitals example's user package through the pipeline with `kubeflow.sites`: each
    site's pods get a folder holding only that site's train.csv, the server's pods one holding
    only test.csv (as separate volumes or S3 prefixes would), and the run still equals the
    local engine's on the whole data set, federated standardisation included."""
    import runpy
    import shutil

    example = Path(__file__).resolve().parents[1] / "examples" / "hospitals"
    monkeypatch.syspath_prepend(str(example))  # the engine here, the component processes below
    monkeypatch.setenv("PYTHONPATH", f"{example}:{Path.cwd()}")
    data = runpy.run_path(str(example / "prepare.py"))["write"](tmp_path / "data")
    server = tmp_path / "server"
    server.mkdir()
    shutil.copy(data / "test.csv", server)
    sites = {}
    for folder in sorted((data / "clients").iterdir()):
        own = tmp_path / "at" / folder.name
        own.mkdir(parents=True)
        shutil.copy(folder / "train.csv", own)
        sites[folder.name] = {"path": str(own), "node_selector": {"site": folder.name}}
    settings = dict(
        rounds=2,
        model={"name": "hospital_models:tabular_mlp", "kwargs": {"hidden": 16}},
        pruning={"schedule": {"kind": "oneshot", "target": 0.5, "at_round": 1}},
        aggregation={"method": "median"},  # a robust rule, in the aggregate pod as in-process
    )
    whole = {"dataset": "csv", "path": str(data), "label": "diagnosis", "num_clients": 3,
             "partition": {"kind": "natural"}, "train_subset": None}  # fmt: skip
    local = engine.run_experiment(make_config(data=whole, **settings))
    placed = make_config(
        data=whole | {"path": str(server)},
        kubeflow={"sites": sites, "aggregator": {"device": "cpu"}},
        **settings,
    )
    run_locally(placed, tmp_path / "pipeline-root")
    folders = {p.name: p for p in (Path(placed.store) / placed.experiment).iterdir()}
    kfp_run = next(r for name, r in folders.items() if name != local.run_id)
    names = [f"rounds/{r:04d}/model.safetensors" for r in (1, 2)]
    for name in [*names, "model.safetensors", "standardization.json"]:
        assert (kfp_run / name).read_bytes() == (folders[local.run_id] / name).read_bytes(), name
    client = MlflowClient(placed.tracking)
    experiment = client.get_experiment_by_name(placed.experiment).experiment_id
    (run,) = client.search_runs([experiment], filter_string="tags.engine = 'kubeflow'")
    kfp_auc = {p.step: p.value for p in client.get_metric_history(run.info.run_id, "test_roc_auc")}
    assert kfp_auc == {m.round: m.test["roc_auc"] for m in local.history}
    (output,) = client.get_run(run.info.run_id).outputs.model_outputs  # the UI lists it
    assert output.step == 2
    assert "MLmodel" in {a.path for a in client.list_logged_model_artifacts(output.model_id)}
