"""The REST adapter over the real core and store, in-process through FastAPI's test client."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tunedeck.service.app import create_app
from tunedeck.service.core import RunService
from tunedeck.service.store import Store

TOKEN = "test-token"


@pytest.fixture
def api(home):
    home.mkdir(parents=True)
    service = RunService(Store(home / "tunedeck.db"))
    client = TestClient(create_app(service, TOKEN, home))
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    yield client, service
    service.store.close()


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/health"), ("GET", "/api/runs"), ("POST", "/api/runs"), ("GET", "/api/runs/x/events"),
    ("GET", "/api/models"), ("DELETE", "/api/runs/x"), ("GET", "/openapi.json"), ("GET", "/docs"),
])
def test_every_endpoint_needs_the_token(api, method, path):
    client, _ = api
    assert client.request(method, path, headers={"Authorization": ""}).status_code == 401
    assert client.request(method, path, headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_openapi_docs_describe_the_runs_api(api):
    client, _ = api
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/runs", "/api/runs/{name}", "/api/runs/{name}/events", "/api/runs/{name}/cancel"} <= set(paths)


def test_rejected_create_lists_problems_and_stores_nothing(api, tmp_path):
    client, service = api
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "response": "r"}\nnot json\n')
    resp = client.post("/api/runs", json={
        "model": "no-such-model", "train_data_path": str(bad), "register_to": "main",
        "task_type": "INSTRUCTION_FINETUNE", "training_duration": "ten epochs", "learning_rate": "fast",
    })
    assert resp.status_code == 422
    problems = resp.json()["detail"]["problems"]
    fields = {p["field"] for p in problems}
    assert {"model", "register_to", "training_duration", "learning_rate", "train_data_path"} <= fields
    data_problem = next(p for p in problems if p["field"] == "train_data_path")
    assert data_problem["file"] == str(bad) and data_problem["line"] == 2
    assert client.get("/api/runs").json()["runs"] == []
    assert not (service.store.list_runs())


def test_unknown_run_is_404(api):
    client, _ = api
    assert client.get("/api/runs/nope").status_code == 404
    assert client.get("/api/runs/nope/events").status_code == 404


def test_unknown_parameter_is_rejected(api):
    client, _ = api
    resp = client.post("/api/runs", json={"model": "m", "train_data_path": "d", "register_to": "a.b", "epochs": 3})
    assert resp.status_code == 422
