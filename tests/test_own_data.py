"""Users' own data and models: CSV / Parquet / npz data sets kept at sites, federated
standardisation, models and loaders by import path, regression, and every bad input failing
before any round with a message that names the field and the file."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from fedprune.cli import EXIT_BAD_INPUT, main
from fedprune.engine.local import run_experiment
from fedprune.errors import UserError
from fedprune.steps import Runtime
from fedprune.steps.features import client_moments, combine

LINEAR = {"name": "tests.user_code:linear"}
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hospitals"


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory) -> Path:
    """The example's three hospitals, written by its own prepare.py."""
    prepare = runpy.run_path(str(EXAMPLE / "prepare.py"))
    return prepare["write"](tmp_path_factory.mktemp("hospitals") / "data")


@pytest.fixture
def tabular(make_config, hospitals):
    def build(**overrides):
        data = {
            "dataset": "csv",
            "path": str(hospitals),
            "label": "diagnosis",
            "num_clients": 3,
            "partition": {"kind": "natural"},
        }
        data |= overrides.pop("data", {})
        overrides.setdefault("model", {"name": "tests.user_code:linear"})
        return make_config(data=data, **overrides)

    return build


def test_three_hospitals_train_a_user_model_with_their_own_csvs(tabular, hospitals):
    cfg = tabular(rounds=5, model={"name": "tests.user_code:linear", "kwargs": {"bias": True}})
    rt = Runtime.build(cfg)
    sizes = [len(pd.read_csv(hospitals / "clients" / s / "train.csv")) for s in rt.data.sites]
    assert rt.data.sites == ("hospital-a", "hospital-b", "hospital-c")
    assert [len(rows) for rows in rt.shards] == sizes and sizes[0] > sizes[1] > sizes[2]
    result = run_experiment(cfg)
    last = result.history[-1]
    assert last.test["accuracy"] > 0.9 and last.test["roc_auc"] > 0.95
    assert set(last.test) == {"accuracy", "macro_f1", "roc_auc"}
    run = MlflowClient(cfg.tracking).get_run(result.run_id)
    assert run.data.tags["main_metric"] == "test_accuracy"
    assert {"test_accuracy", "test_macro_f1", "test_roc_auc"} <= set(run.data.metrics)
    stats = Path(result.location) / "standardization.json"
    assert stats.is_file(), "the features' statistics are recorded with the run"


def test_federated_standardisation_equals_central_standardisation_of_the_union(tabular):
    rt = Runtime.build(tabular())
    raw = Runtime.build(tabular(data={"standardize": False})).data
    union = raw.x_train.double()
    mean, std = union.mean(0), union.std(0, unbiased=False)
    assert torch.allclose(rt.standardization.mean, mean, atol=1e-9)
    assert torch.allclose(rt.standardization.std, std, rtol=1e-9)
    central = ((raw.x_test.double() - mean) / std).float()
    assert torch.allclose(rt.data.x_test, central, atol=1e-5)
    # what each client sends is three numbers per feature and a count, never a row
    sent = client_moments(raw.x_train[torch.from_numpy(rt.shards[0])])
    assert sent.total.shape == sent.squares.shape == (raw.x_train.shape[1],)
    assert torch.allclose(combine([sent]).mean, raw.x_train[rt.shards[0]].double().mean(0))


def test_parquet_and_npz_hold_the_same_data_as_csv(tabular, make_config, hospitals, tmp_path):
    for file in hospitals.rglob("*.csv"):
        target = tmp_path / "pq" / file.relative_to(hospitals).with_suffix(".parquet")
        target.parent.mkdir(parents=True, exist_ok=True)
        pd.read_csv(file).to_parquet(target)
        frame = pd.read_csv(file)
        x, y = frame.drop(columns="diagnosis").to_numpy(), frame["diagnosis"].to_numpy()
        npz = tmp_path / "npz" / file.relative_to(hospitals).with_suffix(".npz")
        npz.parent.mkdir(parents=True, exist_ok=True)
        split = "test" if file.name == "test.csv" else "train"
        np.savez(npz, **{f"x_{split}": x, f"y_{split}": y})
    csv = Runtime.build(tabular(data={"standardize": False})).data
    parquet = Runtime.build(tabular(data={"dataset": "parquet", "path": str(tmp_path / "pq")}))
    npz = {"dataset": "npz", "path": str(tmp_path / "npz"), "num_clients": 3}
    npz_cfg = make_config(data=npz | {"partition": {"kind": "natural"}}, model=LINEAR)
    for data in (Runtime.build(npz_cfg).data, parquet.data):
        assert data.sites == csv.sites
        assert torch.equal(data.y_train, csv.y_train) and torch.equal(data.y_test, csv.y_test)
    assert torch.allclose(Runtime.build(npz_cfg).data.x_train, csv.x_train)


def test_a_loader_by_import_path_and_a_regression_task(make_config, tmp_path):
    cfg = make_config(
        data={"dataset": "tests.user_code:blobs", "kwargs": {"samples": 400}, "num_clients": 4},
        model=LINEAR,
        rounds=5,
        client={"epochs": 5, "lr": 0.1},
    )
    assert run_experiment(cfg).history[-1].test["accuracy"] > 0.9
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5], dtype=np.float32) + 0.3
    np.savez(tmp_path / "lin.npz", x_train=x[:400], y_train=y[:400], x_test=x[400:], y_test=y[400:])
    regression = make_config(
        task="regression",
        rounds=5,
        data={"dataset": "npz", "path": str(tmp_path / "lin.npz"), "num_clients": 4},
        model={"name": "tests.user_code:linear"},
        client={"epochs": 5, "lr": 0.1},
    )
    history = run_experiment(regression).history
    assert history[-1].test["rmse"] < min(0.05, history[0].test["rmse"])
    assert set(history[-1].test) == {"rmse", "mae"}


def write_site(root: Path, frame: pd.DataFrame, site: str = "a") -> None:
    (root / "clients" / site).mkdir(parents=True, exist_ok=True)
    frame.to_csv(root / "clients" / site / "train.csv", index=False)
    frame.to_csv(root / "test.csv", index=False)


GOOD = pd.DataFrame({"f1": [0.1, 0.2, 0.3, 0.4], "f2": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"data": {"label": "outcome"}},
            r"data.label: no column 'outcome' in .*train.csv \(columns: f1, f2, y\)",
        ),
        (
            {"frame": GOOD.assign(f2=[1.0, None, 3.0, 4.0])},
            r"empty or NaN cells in column 'f2' \(first at data row 2\)",
        ),
        ({"frame": GOOD.assign(f1=["a", "b", "c", "d"])}, r"column 'f1' of .* is not numeric"),
        ({"frame": GOOD.assign(y=[0.5, 1, 0, 1])}, "not integer class ids"),
        (
            {"frame": GOOD.assign(y=["B", "M", "B", "X"]), "data": {"classes": ["B", "M"]}},
            r"labels \['X'\] not in data.classes",
        ),
        ({"empty_site": True}, r"site folder .*clients/b has no train.csv"),
        ({"data": {"num_clients": 2}}, r"data.num_clients is 2 but the data set has 1 sites \(a\)"),
        (
            {"model": {"name": "tests.no_such_module:linear"}},
            "model.name: cannot import 'tests.no_such_module'",
        ),
        (
            {"model": {"name": "tests.user_code:wrong_signature"}},
            "model.name: wrong_signature cannot be called with input_shape, num_classes",
        ),
        (
            {"model": {"name": "tests.user_code:not_a_module"}},
            "model.name: tests.user_code:not_a_module returned str, not a torch.nn.Module",
        ),
        (
            {"task": "regression", "model": {"name": "tests.user_code:ten_outputs"}},
            r"returns \(2, 10\) for a batch of 2, but task regression with 1 targets needs \(2, 1\)",
        ),
    ],
)
def test_bad_input_fails_before_any_round_naming_field_and_file(
    make_config, tmp_path, change, message
):
    root = tmp_path / "data"
    write_site(root, change.get("frame", GOOD))
    if change.get("empty_site"):
        (root / "clients" / "b").mkdir()
    data = {
        "dataset": "csv",
        "path": str(root),
        "label": "y",
        "num_clients": 1,
        "partition": {"kind": "natural"},
    } | change.get("data", {})
    model = change.get("model", {"name": "tests.user_code:linear"})
    cfg = make_config(data=data, model=model, task=change.get("task", "classification"))
    with pytest.raises(UserError, match=message):
        Runtime.build(cfg)
    assert not (tmp_path / "runs" / "test").exists(), "nothing was published"


def test_npz_without_the_arrays_and_labels_outside_the_classes(make_config, tmp_path):
    np.savez(
        tmp_path / "a.npz", x_train=np.zeros((4, 2)), x_test=np.zeros((2, 2)), y_test=np.zeros(2)
    )
    cfg = make_config(data={"dataset": "npz", "path": str(tmp_path / "a.npz"), "num_clients": 2})
    with pytest.raises(
        UserError, match=r"a.npz has no array y_train \(it holds: x_train, x_test, y_test\)"
    ):
        Runtime.build(cfg)
    write_site(tmp_path / "c", GOOD.assign(y=[0, 1, 2, 1]))
    classes = make_config(
        data={
            "dataset": "csv",
            "path": str(tmp_path / "c"),
            "label": "y",
            "num_clients": 1,
            "classes": None,
        },
        model={"name": "tests.user_code:linear"},
    )
    assert Runtime.build(classes).shape.num_classes == 3


def test_the_cli_exits_2_on_bad_data_and_publishes_nothing(tmp_path, monkeypatch):
    config = tmp_path / "bad.yaml"
    config.write_text(
        f"data: {{dataset: csv, path: {tmp_path / 'missing'}, label: y}}\n"
        f"store: {tmp_path / 'runs'}\ntracking: sqlite:///{tmp_path / 'runs' / 'mlflow.db'}\n"
    )
    assert main(["run", str(config)]) == EXIT_BAD_INPUT
    assert not (tmp_path / "runs").exists()


def test_the_example_runs_from_its_folder(tmp_path, monkeypatch, hospitals):
    """README's "Your own data and model": the example's config as a user runs it."""
    monkeypatch.chdir(EXAMPLE)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(EXAMPLE))])
    config = tmp_path / "config.yaml"
    text = (EXAMPLE / "config.yaml").read_text().replace("path: data", f"path: {hospitals}")
    text = text.replace("rounds: 20", "rounds: 3").replace("store: runs", f"store: {tmp_path}/runs")
    text = text.replace("start_round: 5, end_round: 15", "start_round: 1, end_round: 3")
    config.write_text(text.replace("sqlite:///runs/", f"sqlite:///{tmp_path}/runs/"))
    assert main(["run", str(config)]) == 0


def test_the_final_model_is_an_mlflow_model_that_takes_raw_features(tabular, hospitals):
    import mlflow

    cfg = tabular(
        rounds=3,
        registry={"name": "hospitals-test"},
        export={"onnx": True},
        pruning={"schedule": {"kind": "oneshot", "target": 0.5, "at_round": 1}},
    )
    result = run_experiment(cfg)
    mlflow.set_tracking_uri(cfg.tracking)
    model = mlflow.pytorch.load_model(f"runs:/{result.run_id}/model")
    test = pd.read_csv(hospitals / "test.csv")
    raw = torch.tensor(test.drop(columns="diagnosis").to_numpy(), dtype=torch.float32)
    with torch.no_grad():
        predicted = model(raw).argmax(1)
    accuracy = float((predicted == torch.tensor(test["diagnosis"].to_numpy())).float().mean())
    assert accuracy == pytest.approx(result.history[-1].test["accuracy"])
    client = MlflowClient(cfg.tracking)
    (version,) = client.search_model_versions("name='hospitals-test'")
    assert version.run_id == result.run_id
    assert version.tags["sparsity"] == f"{result.history[-1].sparsity:.4f}"
    assert float(version.tags["test_accuracy"]) == pytest.approx(accuracy)
    registered = mlflow.pytorch.load_model(f"models:/hospitals-test/{version.version}")
    with torch.no_grad():
        assert torch.equal(registered(raw).argmax(1), predicted), "the version is that model"
    (logged,) = client.get_run(result.run_id).inputs.dataset_inputs
    import onnxruntime

    onnx = onnxruntime.InferenceSession(str(Path(result.location) / "model.onnx"))
    (scores,) = onnx.run(None, {onnx.get_inputs()[0].name: raw.numpy()})
    assert np.array_equal(scores.argmax(1), predicted.numpy()), "ONNX takes raw features too"
    assert "model.onnx" in {a.path for a in client.list_artifacts(result.run_id)}
    assert logged.dataset.name == f"csv:{hospitals}" and len(logged.dataset.digest) == 16


def test_pruning_methods_say_which_weights_of_a_user_model_they_skip(make_config):
    from fedprune.steps.runtime import init_global

    recurrent = {"name": "tests.user_code:recurrent"}
    blobs = {"dataset": "tests.user_code:blobs", "num_clients": 4}
    oneshot = {"schedule": {"kind": "oneshot", "target": 0.5, "at_round": 1}}
    magnitude = make_config(model=recurrent, data=blobs, pruning=oneshot, rounds=1)
    rt = Runtime.build(magnitude)
    # unstructured pruning understands LSTM and linear weights: it prunes them all
    assert {"lstm.weight_ih_l0", "lstm.weight_hh_l0", "head.weight"} <= set(init_global(rt).mask)
    result = run_experiment(magnitude)
    tags = MlflowClient(magnitude.tracking).get_run(result.run_id).data.tags
    assert tags["pruning.skipped"] == "none" and result.history[-1].sparsity > 0.4
    structured = make_config(
        model=recurrent, data=blobs, pruning={"method": "structured", **oneshot}
    )
    rt = Runtime.build(structured)
    assert rt.method.skipped(init_global(rt).mask) == [
        "lstm.weight_ih_l0",
        "lstm.weight_hh_l0",
        "head.weight",
    ]


def test_a_site_with_its_own_test_set_gets_metrics_of_its_own(tabular, hospitals, tmp_path):
    import shutil

    data = shutil.copytree(hospitals, tmp_path / "data")
    test = pd.read_csv(data / "test.csv")
    test.iloc[:40].to_csv(data / "clients" / "hospital-b" / "test.csv", index=False)
    cfg = tabular(rounds=2, data={"path": str(data)})
    result = run_experiment(cfg)
    own = result.history[-1].site_test
    assert list(own) == ["hospital-b"] and set(own["hospital-b"]) == {
        "accuracy",
        "macro_f1",
        "roc_auc",
    }
    history = MlflowClient(cfg.tracking).get_metric_history(
        result.run_id, "site.hospital-b.test_accuracy"
    )
    assert [p.step for p in history] == [1, 2]
    assert history[-1].value == pytest.approx(own["hospital-b"]["accuracy"])


def test_a_data_set_in_s3_is_read_through_the_store_client(
    tabular, hospitals, s3_server, s3_env, tmp_path, monkeypatch
):
    monkeypatch.setenv("FEDPRUNE_DATA", str(tmp_path / "cache"))
    client = s3_server.client()
    for file in hospitals.rglob("*.csv"):
        client.fput_object("fedprune", f"sites/{file.relative_to(hospitals)}", str(file))
    s3 = {"endpoint": s3_server.endpoint, "secure": False}
    remote = Runtime.build(tabular(data={"path": "s3://fedprune/sites"}, s3=s3))
    local = Runtime.build(tabular())
    assert remote.data.sites == local.data.sites
    assert torch.equal(remote.data.x_train, local.data.x_train)
    assert (tmp_path / "cache" / "s3" / "fedprune" / "sites" / "test.csv").is_file()


def write_images(root: Path, *, modes=("L", "L"), size: int = 12) -> None:
    """Two classes told apart by brightness, at two sites and in the server's test set."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("clients/a/train", "clients/b/train", "test"):
        for label, (name, level) in enumerate((("dark", 40), ("light", 210))):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(6):
                pixels = np.clip(level + rng.normal(0, 20, (size, size)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).convert(modes[label]).save(folder / f"{k}.png")


def test_an_image_folder_kept_at_two_sites(make_config, tmp_path):
    write_images(tmp_path / "img")
    data = {
        "dataset": "imagefolder",
        "path": str(tmp_path / "img"),
        "size": 8,
        "num_clients": 2,
        "partition": {"kind": "natural"},
    }
    cfg = make_config(data=data, model=LINEAR, rounds=3, client={"epochs": 5})
    rt = Runtime.build(cfg)
    assert rt.data.sites == ("a", "b") and rt.shape == rt.data.shape
    assert rt.data.x_train.shape == (24, 1, 8, 8) and rt.shape.num_classes == 2
    assert run_experiment(cfg).history[-1].test["accuracy"] == 1.0
    write_images(tmp_path / "mixed", modes=("L", "RGB"))
    mixed = make_config(data=data | {"path": str(tmp_path / "mixed")}, model=LINEAR)
    with pytest.raises(
        UserError, match=r"light/0.png is RGB but the images before it are L: set data.channels"
    ):
        Runtime.build(mixed)
    assert Runtime.build(
        make_config(data=data | {"path": str(tmp_path / "mixed"), "channels": 3}, model=LINEAR)
    ).shape.input_shape == (3, 8, 8)
    (tmp_path / "img" / "test" / "dark" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="cannot read image .*broken.png"):
        Runtime.build(cfg)
