"""`fedprune submit | schedule` against a local HTTP server that records what the real
kfp.Client sends (the KFP v2beta1 REST API), on 127.0.0.1."""

import argparse
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from fedprune.cli import main, parser
from pipelines import submit as kf

ROOT = Path(__file__).resolve().parents[1]


class FakeKfp(BaseHTTPRequestHandler):
    """Answers like the KFP API server, just enough for the calls fedprune makes."""

    requests: list[dict] = []
    fail_with: int | None = None
    health: dict = {}

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        self.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "body": body,
                "authorization": self.headers.get("Authorization"),
            }
        )
        path = self.path.split("?")[0]
        if path == "/apis/v2beta1/healthz":
            return self._reply(200, self.health)
        if self.fail_with and self.command == "POST":
            return self._reply(self.fail_with, {"error": "quota exceeded", "code": 8})
        if path == "/apis/v2beta1/experiments" and self.command == "GET":
            return self._reply(200, {"experiments": []})
        if path == "/apis/v2beta1/experiments":
            return self._reply(
                200, {"experiment_id": "exp-1", "display_name": body["display_name"]}
            )
        if path == "/apis/v2beta1/runs":
            return self._reply(200, {"run_id": "run-42", "display_name": body["display_name"]})
        if path == "/apis/v2beta1/recurringruns" and self.command == "POST":
            return self._reply(200, {"recurring_run_id": "rr-7", **body})
        if path == "/apis/v2beta1/recurringruns":
            item = {
                "recurring_run_id": "rr-7",
                "display_name": "nightly",
                "status": "ENABLED",
                "trigger": {"cron_schedule": {"cron": "0 0 2 * * *"}},
            }
            return self._reply(200, {"recurringRuns": [item], "total_size": 1})
        if path.endswith(":disable") or self.command == "DELETE":
            return self._reply(200, {})
        return self._reply(404, {"error": f"no route {path}"})

    do_GET = do_POST = do_DELETE = _handle

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


HEALTHY = {"commit_sha": "4f1c2a9", "tag_name": "2.14.3", "multi_user": False}


@pytest.fixture(autouse=True)
def no_pod_token(monkeypatch, tmp_path):
    """As on a laptop: no projected ServiceAccount token, whatever machine the tests run on."""
    monkeypatch.delenv(kf.SA_TOKEN_ENV, raising=False)
    monkeypatch.setattr(kf, "SA_TOKEN_PATH", str(tmp_path / "no-token"))


@pytest.fixture
def kfp_host():
    FakeKfp.requests = []
    FakeKfp.fail_with = None
    FakeKfp.health = dict(HEALTHY)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKfp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


GPU_KUBEFLOW = {"image": "registry.example.com/fedprune:0.1.0", "aggregator": {"device": "gpu"}}


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "exp.yaml"
    cluster = {"store": "s3://fedprune/runs", "s3": {"endpoint": "minio:9000"}}
    raw = {"experiment": "nightly-mnist", "rounds": 2, **cluster, "tracking": "http://mlflow:5000"}
    raw["kubeflow"] = GPU_KUBEFLOW
    path.write_text(yaml.safe_dump(raw))
    return path


def posted(path: str) -> list[dict]:
    return [r for r in FakeKfp.requests if r["method"] == "POST" and r["path"].startswith(path)]


def test_submit_uploads_pipeline_and_starts_run(kfp_host, config, capsys):
    assert main(["submit", str(config), "--host", kfp_host]) == 0
    (experiment,) = posted("/apis/v2beta1/experiments")
    assert experiment["body"]["display_name"] == "nightly-mnist"
    (run,) = posted("/apis/v2beta1/runs")
    assert run["body"]["experiment_id"] == "exp-1"
    assert run["body"]["service_account"] == "fedprune-pipeline"  # the chart's account
    spec = run["body"]["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "fedprune-nightly-mnist"
    assert "comp-fl-round-2" in spec["components"]  # the compiled, unrolled pipeline travelled
    platform = run["body"]["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]
    assert "exec-aggregate" in platform["deploymentSpec"]["executors"]  # GPU settings travelled
    out = capsys.readouterr().out
    assert "run-42" in out and f"{kfp_host}/#/runs/details/run-42" in out


def test_schedule_creates_recurring_run(kfp_host, config, capsys):
    args = ["schedule", str(config), "--host", kfp_host, "--cron", "0 0 2 * * *"]
    assert main([*args, "--max-concurrency", "2"]) == 0
    (recurring,) = posted("/apis/v2beta1/recurringruns")
    body = recurring["body"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"
    assert body["max_concurrency"] == "2" or body["max_concurrency"] == 2
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert (
        body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "fedprune-nightly-mnist"
    )
    assert "rr-7" in capsys.readouterr().out


def test_schedule_catches_up_only_when_asked(kfp_host, config):
    args = ["schedule", str(config), "--host", kfp_host, "--cron", "0 0 2 * * *"]
    assert main([*args, "--catch-up"]) == 0
    assert main(args) == 0  # the default
    first, second = posted("/apis/v2beta1/recurringruns")
    assert first["body"]["no_catchup"] is False
    assert second["body"]["no_catchup"] is True


def test_old_backend_is_refused_before_any_upload(kfp_host, config, capsys):
    FakeKfp.health["tag_name"] = "2.3.0"
    assert main(["submit", str(config), "--host", kfp_host]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert f"Kubeflow Pipelines at {kfp_host} is version 2.3.0" in out
    assert "needs 2.14.0 or newer" in out
    assert [r["method"] for r in FakeKfp.requests] == ["GET"]  # healthz only
    assert kf.MIN_KFP_BACKEND == (2, 14, 0)


@pytest.mark.parametrize("tag", ["dev", "latest", "unknown", "4f1c2a9", None])
def test_unversioned_backend_warns_and_proceeds(kfp_host, config, caplog, tag):
    if tag is None:
        del FakeKfp.health["tag_name"]
    else:
        FakeKfp.health["tag_name"] = tag
    with caplog.at_level(logging.WARNING, logger="pipelines.submit"):
        assert main(["submit", str(config), "--host", kfp_host]) == 0
    assert f"reports version {tag!r}, not a release number" in caplog.text
    assert posted("/apis/v2beta1/runs")


def test_version_of_reads_release_tags():
    assert kf.version_of("2.14.3") == (2, 14, 3)
    assert kf.version_of("v2.15") == (2, 15, 0)
    assert kf.version_of("2.14.0-rc.1") == (2, 14, 0)
    assert kf.version_of("dev") is None and kf.version_of(None) is None


def test_multi_user_backend_needs_a_namespace(kfp_host, config, capsys):
    FakeKfp.health["multi_user"] = True
    assert main(["submit", str(config), "--host", kfp_host]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "is multi-user: pass --namespace, your profile namespace" in out
    assert not posted("/apis/v2beta1/runs")
    namespace = ["--namespace", "kubeflow-user-example-com"]
    assert main(["submit", str(config), "--host", kfp_host, *namespace]) == 0
    (experiment,) = posted("/apis/v2beta1/experiments")
    assert experiment["body"]["namespace"] == "kubeflow-user-example-com"


def test_pod_token_is_sent_as_bearer(kfp_host, config, monkeypatch, tmp_path):
    token = tmp_path / "token"
    token.write_text("eyJhbGciOi.pod-token\n")
    monkeypatch.setenv(kf.SA_TOKEN_ENV, str(token))
    assert main(["submit", str(config), "--host", kfp_host]) == 0
    (run,) = posted("/apis/v2beta1/runs")
    assert run["authorization"] == "Bearer eyJhbGciOi.pod-token"
    assert FakeKfp.requests[0]["authorization"] == "Bearer eyJhbGciOi.pod-token"  # healthz


def test_default_pod_token_path_is_used(kfp_host, config, monkeypatch, tmp_path):
    token = tmp_path / "default-token"
    token.write_text("default-token")
    monkeypatch.setattr(kf, "SA_TOKEN_PATH", str(token))
    assert main(["submit", str(config), "--host", kfp_host]) == 0
    (run,) = posted("/apis/v2beta1/runs")
    assert run["authorization"] == "Bearer default-token"


def test_no_token_outside_a_pod(kfp_host, config):
    assert main(["submit", str(config), "--host", kfp_host]) == 0
    assert {r["authorization"] for r in FakeKfp.requests} == {None}


def test_schedule_list_pause_delete(kfp_host, capsys):
    assert main(["schedule", "list", "--host", kfp_host]) == 0
    assert "rr-7" in capsys.readouterr().out
    assert main(["schedule", "pause", "rr-7", "--host", kfp_host]) == 0
    assert posted("/apis/v2beta1/recurringruns/rr-7:disable")
    assert main(["schedule", "delete", "rr-7", "--host", kfp_host]) == 0
    assert [r for r in FakeKfp.requests if r["method"] == "DELETE"][0]["path"] == (
        "/apis/v2beta1/recurringruns/rr-7"
    )


def test_bad_cron_is_refused_before_any_request(kfp_host, config, capsys):
    assert main(["schedule", str(config), "--host", kfp_host, "--cron", "0 2 * * *"]) == 2
    assert "6, seconds first" in capsys.readouterr().out
    assert FakeKfp.requests == []


def test_http_error_is_a_clear_message(kfp_host, config, capsys):
    FakeKfp.fail_with = 500
    assert main(["submit", str(config), "--host", kfp_host]) == 2
    out = capsys.readouterr().out
    assert "answered 500" in out and "quota exceeded" in out
    assert "Traceback" not in out


def test_unreachable_host_is_a_clear_message(config, capsys):
    assert main(["submit", str(config), "--host", "http://127.0.0.1:9"]) == 2
    out = capsys.readouterr().out
    assert "cannot reach Kubeflow Pipelines at http://127.0.0.1:9" in out


def test_local_store_and_sqlite_are_refused_before_any_request(kfp_host, tmp_path, capsys):
    local = tmp_path / "local.yaml"
    local.write_text(
        yaml.safe_dump({"experiment": "laptop", "rounds": 2, "kubeflow": GPU_KUBEFLOW})
    )
    assert main(["submit", str(local), "--host", kfp_host]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "store 'fedprune-runs' is a folder on this machine" in out
    assert "tracking 'sqlite:///fedprune-runs/mlflow.db' is a file on this machine" in out
    cron = ["--cron", "0 0 2 * * *"]
    assert main(["schedule", str(local), "--host", kfp_host, *cron]) == 2
    assert FakeKfp.requests == []
    # compile only warns: the YAML may be meant for a cluster config merged in later
    assert main(["compile", str(local), "-o", str(tmp_path / "p.yaml")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "warning: store 'fedprune-runs'" in out
    assert "the aggregate pods request 1 nvidia.com/gpu each" in out


def test_host_without_scheme_and_missing_output_folder_are_one_line_errors(
    config, tmp_path, capsys
):
    with pytest.raises(SystemExit) as exited:
        main(["submit", str(config), "--host", "nosuchhost"])
    assert exited.value.code == 2
    assert "'nosuchhost' is not an http:// or https:// URL" in capsys.readouterr().err
    assert main(["compile", str(config), "-o", str(tmp_path / "no" / "p.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().out


def test_every_option_has_help_and_there_is_a_version(capsys):
    def walk(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from ((f"{name} {where}", a) for where, a in walk(sub))
            elif not isinstance(action, argparse._HelpAction):
                yield action.dest, action

    missing = [where for where, action in walk(parser()) if not action.help]
    assert missing == []
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("fedprune ")


def test_submit_continue_runs_the_segment_after_the_last_published_round(
    kfp_host, make_config, mnist_small
):
    from fedprune.engine import local as engine
    from tests.conftest import failing_at_round

    cfg = make_config(rounds=4, kubeflow={**GPU_KUBEFLOW, "rounds_per_run": 2})
    with failing_at_round(3), pytest.raises(RuntimeError, match="injected"):
        engine.run_experiment(cfg, data=mnist_small)  # leaves rounds 1-2 published
    (run_id,) = [p.name for p in (Path(cfg.store) / cfg.experiment).iterdir() if p.is_dir()]

    first = kf.submit(cfg, kfp_host)
    later = kf.submit(cfg, kfp_host, continue_run=run_id)
    assert (first.rounds, later.rounds) == ((1, 2), (3, 4))
    one, two = (r["body"] for r in posted("/apis/v2beta1/runs"))
    assert "continue_run" not in (one["runtime_config"] or {}).get("parameters", {})
    assert two["runtime_config"]["parameters"]["continue_run"] == run_id
    specs = [body["pipeline_spec"]["pipeline_spec"] for body in (one, two)]
    assert [s["pipelineInfo"]["name"] for s in specs] == [
        "fedprune-test-rounds-1-2",
        "fedprune-test-rounds-3-4",
    ]
    assert ["finalise" in s["root"]["dag"]["tasks"] for s in specs] == [False, True]
    with pytest.raises(kf.UserError, match="cannot resume run 0+: .*config.yaml does not exist"):
        kf.submit(cfg, kfp_host, continue_run="0" * 32)
    assert len(posted("/apis/v2beta1/runs")) == 2, "refused before anything was sent"


def test_a_schedule_longer_than_one_run_is_refused(kfp_host, config):
    raw = yaml.safe_load(config.read_text())
    raw["kubeflow"] = {**GPU_KUBEFLOW, "rounds_per_run": 1}
    config.write_text(yaml.safe_dump(raw))
    args = ["schedule", str(config), "--host", kfp_host, "--cron", "0 0 2 * * *"]
    assert main(args) == 2
    assert posted("/apis/v2beta1/recurringruns") == []
