"""MLflow's UI and REST API through the service: MLflow's real server, on the store the runs log to.

One real ``python -m tunedeck.service`` trains a tiny model; then MLflow's own client reads that run
over REST through the service's port, a browser opens the run's page in MLflow's UI, and killing the
service (``kill -9``) takes MLflow's server with it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import requests

from benchmarks._service import ServiceProcess, wait_for
from tests.browser.lab import CHROMIUM, CHROMIUM_ARGS
from tests.helpers import ISOLATED_ENV, PAIRS, write_jsonl
from tunedeck.service.mlflow_ui import installed

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not installed(), reason="MLflow's server is not installed (pip install 'tunedeck[mlflow-ui]')")]

STEPS = 30


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A service that has trained and registered one tiny run: (service, run record)."""
    from tunedeck.training.tiny import build_tiny_model

    tmp = tmp_path_factory.mktemp("mlflow-ui")
    home = tmp / "home"
    saved = {k: os.environ.get(k) for k in (*ISOLATED_ENV, "TUNEDECK_HOME", "HF_HUB_OFFLINE")}
    for var in ISOLATED_ENV:
        os.environ.pop(var, None)
    os.environ.update(TUNEDECK_HOME=str(home), HF_HUB_OFFLINE="1")
    build_tiny_model(home / "models" / "tiny", [t for p in PAIRS for t in p])
    data = write_jsonl(tmp / "train.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    service = ServiceProcess(home)
    try:
        name = service.api("POST", "/api/runs", json={
            "model": "tiny", "train_data_path": str(data), "register_to": "main.mlflowui.tiny",
            "task_type": "INSTRUCTION_FINETUNE", "training_duration": f"{STEPS}ba", "learning_rate": 3e-3})["name"]
        run = service.wait_status(name, {"COMPLETED", "FAILED", "STOPPED"}, timeout=300)
        assert run["status"] == "COMPLETED", run
        yield service, run
    finally:
        service.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_mlflow_client_reads_the_run_through_the_service(trained, monkeypatch, tmp_path):
    """MLflow's own client, pointed at the service's /mlflow as its tracking host, sees the run's params,
    its loss history (every step, falling) and the registered version, and downloads its artifacts;
    the token is required."""
    from mlflow import MlflowClient

    service, run = trained
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", service.token)
    client = MlflowClient(tracking_uri=service.url + "/mlflow", registry_uri=service.url + "/mlflow")
    mlflow_run = client.get_run(run["mlflow_run_id"])
    assert mlflow_run.data.params["register_to"] == "main.mlflowui.tiny"
    history = sorted(client.get_metric_history(run["mlflow_run_id"], "train/loss"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(1, STEPS + 1)) and history[-1].value < history[0].value / 2
    version = client.get_model_version("main.mlflowui.tiny", str(run["registered_model_version"]))
    assert version.run_id == run["mlflow_run_id"]
    config = client.download_artifacts(run["mlflow_run_id"], "model/config.json", str(tmp_path))
    assert Path(config).read_text().strip().startswith("{")


def test_the_services_root_answers_mlflow_as_a_databricks_workspace(trained):
    """/api/2.0/mlflow/ on the root (the official client's DATABRICKS_HOST): the run's artifact URI in
    the reference's dbfs:/databricks/mlflow-tracking form, its checkpoints listed as artifacts under
    <run name>/checkpoints from the run's folder, next to what MLflow logged (the model)."""
    service, run = trained
    headers = {"Authorization": f"Bearer {service.token}"}
    exp, run_id, name = run["mlflow_experiment_id"], run["mlflow_run_id"], run["name"]
    root = f"dbfs:/databricks/mlflow-tracking/{exp}/{run_id}/artifacts"
    api = service.url + "/api/2.0/mlflow"
    got = requests.get(f"{api}/runs/get", params={"run_id": run_id}, headers=headers, timeout=60).json()
    assert got["run"]["info"]["artifact_uri"] == root
    mlflow_own = requests.get(f"{service.url}/mlflow/api/2.0/mlflow/runs/get", params={"run_id": run_id},
                              headers=headers, timeout=60).json()
    assert mlflow_own["run"]["info"]["artifact_uri"].startswith("file://")  # MLflow's server, unchanged

    def listing(path: str | None) -> list[dict]:
        params = {"run_id": run_id, **({"path": path} if path is not None else {})}
        answer = requests.get(f"{api}/artifacts/list", params=params, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["root_uri"] == root
        return answer.json().get("files", [])

    top = {f["path"]: f["is_dir"] for f in listing(None)}
    assert top["model"] is True and top[name] is True  # MLflow's artifacts, and the run's checkpoints
    assert listing(name) == [{"path": f"{name}/checkpoints", "is_dir": True}]
    folder = service.home / "runs" / name / "checkpoints"
    expected = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    listed = listing(f"{name}/checkpoints")
    assert [f["path"].rsplit("/", 1)[1] for f in listed] == expected and "latest-sharded-rank0.symlink" in expected
    checkpoint = next(f["path"] for f in listed if f["is_dir"])
    inside = {f["path"].rsplit("/", 1)[1]: f for f in listing(checkpoint)}
    local = folder / checkpoint.rsplit("/", 1)[1]
    assert set(inside) == {p.name for p in local.iterdir() if not p.name.startswith(".")}
    assert inside["config.json"]["file_size"] == (local / "config.json").stat().st_size
    assert listing(f"{name}/checkpoints/no-such-checkpoint") == []
    escape = requests.get(f"{api}/artifacts/list", params={"run_id": run_id, "path": f"{name}/checkpoints/../../.."},
                          headers=headers, timeout=60)
    assert escape.status_code == 400

    no_token = requests.get(f"{service.url}/api/2.0/mlflow/runs/get", params={"run_id": run["mlflow_run_id"]}, timeout=30)
    assert no_token.status_code == 401
    assert requests.get(f"{service.url}/mlflow/", timeout=30).status_code == 401


def test_the_ui_shows_the_runs_loss_in_a_browser(trained):
    """Opened once with ?token= (then a cookie), MLflow's UI shows the run with its train/loss metric."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from tunedeck.client.http import ServiceClient
    from tunedeck.links import run_fragment

    service, run = trained
    # what tunedeck.mlflow_url(run) and the monitor's "Open in MLflow" open
    url = ServiceClient(service.url, service.token).mlflow_ui_url(run_fragment(run["mlflow_experiment_id"], run["mlflow_run_id"]))
    assert url == f"{service.url}/mlflow/?token={service.token}#/experiments/{run['mlflow_experiment_id']}/runs/{run['mlflow_run_id']}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, timeout=120_000)
            page.get_by_text("train/loss").first.wait_for(timeout=120_000)  # the run page's metrics table
            assert run["name"] in page.content() or run["mlflow_run_id"] in page.url
            cookies = {c["name"]: c for c in page.context.cookies()}
            assert cookies["tunedeck_token"]["httpOnly"] and cookies["tunedeck_token"]["sameSite"] == "Strict"
        finally:
            browser.close()


def mlflow_servers(home: Path) -> list[int]:
    """Live processes of MLflow's server for this state dir (their command lines name its store)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if str(home) in cmd and "mlflow" in cmd and state != "Z":
                pids.append(int(entry.name))
    return pids


def test_killing_the_service_takes_mlflows_server_with_it(tmp_path, monkeypatch):
    for var in ISOLATED_ENV:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    service = ServiceProcess(home)
    try:
        answer = requests.get(f"{service.url}/mlflow/health", headers={"Authorization": f"Bearer {service.token}"}, timeout=300)
        assert answer.status_code == 200 and answer.text.strip() == "OK"
        assert mlflow_servers(home)  # the server (and its wrapper) run
        service.kill9()
        wait_for(lambda: not mlflow_servers(home), timeout=60)  # gone on their own: no owner, no process
    finally:
        service.stop()
        for pid in mlflow_servers(home):
            os.kill(pid, signal.SIGKILL)
