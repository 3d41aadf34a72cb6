"""The MLflow UI as a person sees it, checked in a real browser: four short runs of one
experiment differing in pruning, `mlflow ui` on a free loopback port, headless Chromium
rendering the experiment's runs table and its charts. The rendered page must show each run's
name and the metrics people compare; the screenshots land beside this file.

    make ui-screenshots     (needs Debian's chromium: apt-get install chromium)
    .venv/bin/python docs/ui/screenshots.py FOLDER   (keeps the runs in FOLDER, reuses them)
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from playwright.sync_api import Page, sync_playwright

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
RUNS = {
    "dense": {"placement": "server", "schedule": {"kind": "none"}},
    "magnitude-50": {
        "placement": "server",
        "schedule": {"kind": "oneshot", "target": 0.5, "at_round": 2},
    },
    "magnitude-90": {
        "placement": "server",
        "schedule": {"kind": "gradual", "target": 0.9, "start_round": 1, "end_round": 3},
    },
    "structured-70": {
        "method": "structured",
        "schedule": {"kind": "oneshot", "target": 0.7, "at_round": 2},
    },
}
LAUNCH = [
    "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
"""No background connections: this machine's closed network refuses them."""


def config(name: str, pruning: dict, folder: Path) -> Path:
    """A short MNIST run: 4 rounds, 10 clients, half of them a round."""
    cfg = yaml.safe_load((HERE.parents[1] / "configs/quickstart.yaml").read_text())
    cfg.update(experiment="ui-check", rounds=4, store=str(folder / "runs"))
    cfg["tracking"] = f"sqlite:///{folder / 'mlflow.db'}"
    cfg["data"]["num_clients"] = 10
    cfg["client"]["epochs"] = 1
    cfg["pruning"] = pruning
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def api(base: str, path: str, body: dict | None = None) -> dict:
    """MLflow's REST API: GET, or POST with a JSON `body`."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/{path}", data, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.load(reply)


def shoot(page: Page, url: str, png: str, *, search: str | None = None) -> None:
    """Open `url`, close the assistant panel, optionally filter the charts, screenshot."""
    page.goto(url)
    page.wait_for_timeout(5000)  # the UI polls, so the network never idles
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()
    if search:
        page.get_by_placeholder("Search metric charts").fill(search)
        page.wait_for_timeout(1500)
    page.screenshot(path=HERE / png)
    print(f"screenshot: docs/ui/{png}")


def check(page: Page, base: str) -> list[str]:
    """What a person must see: the runs told apart by name, each with its final model,
    accuracy and cumulative MB as charts, the tags to filter on and only the parameters that
    apply."""
    experiment = api(base, "experiments/get-by-name?experiment_name=ui-check")["experiment"]
    runs = api(base, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    home = f"{base}/#/experiments/{experiment['experiment_id']}"
    problems = []
    shoot(page, f"{home}/runs", "runs.png")
    names = page.locator("a").all_inner_texts()
    for prefix in ("dense-", "magnitude-server-50%", "magnitude-server-90%", "structured-70%"):
        if not any(n.startswith(prefix) for n in names):
            problems.append(f"runs table: no run named {prefix}…")
    if page.get_by_text("model", exact=True).count() < len(RUNS):
        problems.append("runs table: a run without its logged model in the Models column")
    for search, png, title in (
        ("accuracy", "charts-accuracy.png", "test_accuracy"),
        ("_total", "charts-mb.png", "mb_up_total"),
    ):
        shoot(page, f"{home}/runs?compareRunsMode=CHART", png, search=search)
        if not page.get_by_text(title, exact=True).count():
            problems.append(f"charts: no chart titled {title}")
    pruned = next(r for r in runs if r["info"]["run_name"].startswith("magnitude-server-90%"))
    shoot(page, f"{home}/runs/{pruned['info']['run_id']}", "run.png")
    text = page.inner_text("body")
    for shown in ("sparsity_target", "90%", "method", "magnitude-server-gradual"):
        if shown not in text:
            problems.append(f"run page: {shown!r} not shown")
    params = pruned["data"].get("params", [])
    if any(p["key"].startswith(("kubeflow.", "s3.")) for p in params):
        problems.append("run page: cluster settings among a local run's parameters")
    print(f"run page: {len(params)} parameters")
    return problems


def main() -> int:
    keep = Path(sys.argv[1]) if len(sys.argv) > 1 else None  # a folder: runs kept, reused
    with tempfile.TemporaryDirectory() as scratch:
        folder = keep or Path(scratch)
        if not (folder / "mlflow.db").exists():
            folder.mkdir(parents=True, exist_ok=True)
            for name, pruning in RUNS.items():
                path = config(name, pruning, folder)
                subprocess.run([str(BIN / "fedprune"), "run", str(path)], check=True)
        port = free_port()
        ui = subprocess.Popen(
            [str(BIN / "mlflow"), "ui", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(base + "/health")
            chromium = shutil.which("chromium") or sys.exit("no chromium: apt-get install chromium")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=LAUNCH)
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                problems = check(page, base)
                browser.close()
        finally:
            ui.terminate()
            ui.wait(timeout=30)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
