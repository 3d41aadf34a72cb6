"""Sites as places (`kubeflow.sites`): what each place reads, and the settings that would
read a site's data outside that site, refused before any pod starts."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

from fedprune.config import ConfigError, parse_config
from fedprune.io.exchange import pod_runtime
from fedprune.steps import Runtime
from fedprune.steps.sites import federate, load_view, summarize, view_of

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hospitals"
SITES = ("hospital-a", "hospital-b", "hospital-c")


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory) -> Path:
    return runpy.run_path(str(EXAMPLE / "prepare.py"))["write"](tmp_path_factory.mktemp("h") / "d")


def config(path: str, **overrides):
    raw = {
        "data": {"dataset": "csv", "path": path, "label": "diagnosis", "num_clients": 3,
                 "partition": {"kind": "natural"}},
        "model": {"name": "tests.user_code:linear"},
        "kubeflow": {"sites": {site: {} for site in SITES}},
    }  # fmt: skip
    for key, value in overrides.items():
        raw[key] = raw.get(key, {}) | value if isinstance(value, dict) else value
    return parse_config(raw)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data": {"partition": {"kind": "iid"}}}, "data.partition must be natural"),
        ({"data": {"num_clients": 2}}, "data.num_clients must be 3"),
        ({"data": {"train_subset": 100}}, "data.train_subset counts rows of the sites' union"),
        ({"pruning": {"method": "prunefl"}, "aggregation": {"method": "mask_aware"}},
         "pruning method 'prunefl' reads clients' data or state outside their sites"),
        ({"pruning": {"method": "lottery", "personal": True, "schedule": {"kind": "iterative", "target": 0.5}},
          "aggregation": {"method": "mask_aware"}},
         "pruning method 'lottery' reads"),
        ({"kubeflow": {"sites": {"a": {"data_pvc": "a-data"}, "b": {}, "c": {}}}},
         "kubeflow.sites: b, c has no data_pvc while other sites do"),
    ],
)  # fmt: skip
def test_settings_that_would_read_a_site_elsewhere_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config("/data/h", **overrides)


def test_only_file_data_sets_can_be_kept_at_sites():
    raw = {"data": {"num_clients": 3, "partition": {"kind": "natural"}},
           "kubeflow": {"sites": {site: {} for site in SITES}}}  # fmt: skip
    with pytest.raises(
        ConfigError, match="data.dataset must be one of csv, npz, parquet, not mnist"
    ):
        parse_config(raw)


def test_each_place_reads_only_its_own_files(hospitals, tmp_path):
    """A site's pod needs only its folder, the server's pods only test.csv: each is given a
    folder holding nothing else, and the runtimes equal the whole data set's rows."""
    whole = Runtime.build(config(str(hospitals)))
    server = tmp_path / "server"
    server.mkdir()
    (server / "test.csv").write_bytes((hospitals / "test.csv").read_bytes())
    sites = {}
    for site in SITES:
        own = tmp_path / site
        own.mkdir()
        (own / "train.csv").write_bytes((hospitals / "clients" / site / "train.csv").read_bytes())
        sites[site] = {"path": str(own)}
    cfg = config(str(server), kubeflow={"sites": sites})
    federation = federate(cfg, [summarize(cfg, site) for site in SITES])
    assert federation.sites == SITES and federation.shape == whole.shape
    assert federation.rows == tuple(len(rows) for rows in whole.shards)
    split = tmp_path / "federation.json"
    split.write_text(federation.to_json())
    for k, site in enumerate(SITES):
        rt = pod_runtime(cfg, split, site=site)
        assert [len(rows) for rows in rt.shards] == [
            federation.rows[k] if j == k else 0 for j in range(3)
        ]
        assert torch.equal(rt.data.x_train, whole.data.x_train[torch.from_numpy(whole.shards[k])])
        assert len(rt.data.x_test) == 0
    at_server = pod_runtime(cfg, split)
    assert len(at_server.data.x_train) == 0 and at_server.shards is None
    assert torch.equal(at_server.data.x_test, whole.data.x_test)
    assert at_server.data_artifacts() == whole.data_artifacts()  # the served model's statistics


def test_a_site_with_a_folder_of_another_shape_is_named(hospitals, tmp_path):
    import pandas as pd

    odd = tmp_path / "odd"
    odd.mkdir()
    frame = pd.read_csv(hospitals / "clients" / "hospital-c" / "train.csv")
    frame.drop(columns=frame.columns[0]).to_csv(odd / "train.csv", index=False)
    cfg = config(str(hospitals), kubeflow={"sites": {"hospital-a": {}, "hospital-b": {},
                                                     "hospital-c": {"path": str(odd)}}})  # fmt: skip
    with pytest.raises(
        Exception, match=r"kubeflow.sites.hospital-c: its data has input shape \(29,\)"
    ):
        federate(cfg, [summarize(cfg, site) for site in SITES])


def test_from_s3_a_site_copies_only_its_prefix_and_the_server_only_its_test_set(
    hospitals, s3_server, s3_env, tmp_path, monkeypatch
):
    client = s3_server.client()
    for file in hospitals.rglob("*.csv"):
        client.fput_object("fedprune", f"placed/{file.relative_to(hospitals)}", str(file))
    cfg = config("s3://fedprune/placed", s3={"endpoint": s3_server.endpoint, "secure": False})

    def copied(cache: Path) -> set[str]:
        return {p.relative_to(cache / "s3").as_posix() for p in cache.rglob("*.csv")}

    monkeypatch.setenv("FEDPRUNE_DATA", str(tmp_path / "at-b"))
    summary = summarize(cfg, "hospital-b")
    assert copied(tmp_path / "at-b") == {"fedprune/placed/clients/hospital-b/train.csv"}
    assert summary.rows == len(Runtime.build(config(str(hospitals))).shards[1])
    monkeypatch.setenv("FEDPRUNE_DATA", str(tmp_path / "server"))
    load_view(cfg, view_of(cfg, None))
    assert copied(tmp_path / "server") == {"fedprune/placed/test.csv"}
