"""Lists are filtered and paged by the service (GET /api/runs; service/run_query.py), for the Python
API's list() and the official client's getFinetunesPaginated alike: the filters combine, the cursor
walks every run exactly once, and a bad cursor or date is a 4xx naming it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from tunedeck.service.app import create_app
from tunedeck.service.core import RunService
from tunedeck.service.store import Store
from tunedeck.types import RunStatus, TrainingRun, utcnow

TOKEN = "test-token"
T0 = utcnow().replace(microsecond=0) - timedelta(days=1)


@pytest.fixture
def api(home):
    """A real store holding 7 runs created a minute apart: r0 oldest, r6 newest."""
    home.mkdir(parents=True)
    service = RunService(Store(home / "tunedeck.db"))
    for i in range(7):
        service.store.add_run(TrainingRun(
            name=f"r{i}", status=RunStatus.COMPLETED if i % 2 else RunStatus.FAILED, model="m", train_data_path="/d",
            register_to="main.demo", created_by="ada" if i < 4 else "bob", created_at=T0 + timedelta(minutes=i),
            experiment_path="/Users/ada/e1" if i in (1, 2) else "/Users/x/other",
            mlflow_experiment_id="11" if i == 1 else None,
        ), "CREATED", "created")
    client = TestClient(create_app(service, TOKEN, home))
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    yield client
    service.store.close()


def names(client, **params) -> list[str]:
    resp = client.get("/api/runs", params=params)
    assert resp.status_code == 200, resp.text
    return [r["name"] for r in resp.json()["runs"]]


def test_filters_combine(api):
    assert names(api) == [f"r{i}" for i in range(6, -1, -1)]
    assert names(api, status="COMPLETED") == ["r5", "r3", "r1"]
    assert names(api, created_by="ada", status="COMPLETED") == ["r3", "r1"]
    assert names(api, name=["r2", "r5", "nope"]) == ["r5", "r2"]
    at = (T0 + timedelta(minutes=3)).isoformat()
    assert names(api, created_before=at) == ["r2", "r1", "r0"]  # before: strictly earlier
    assert names(api, created_after=at) == ["r6", "r5", "r4", "r3"]  # after: at or later
    # a run not yet tracking belongs to the experiment its experiment_path names (r2: same path as r1)
    assert names(api, experiment_id="11") == ["r2", "r1"]


def test_the_cursor_walks_every_matching_run_once(api):
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, "created_by": "ada", **({"cursor": cursor} if cursor else {})}
        body = api.get("/api/runs", params=params).json()
        seen += [r["name"] for r in body["runs"]]
        pages += 1
        if not body["has_next_page"]:
            assert body["cursor"] is None
            break
        cursor = body["cursor"]
    assert (seen, pages) == (["r3", "r2", "r1", "r0"], 2)


def test_bad_cursor_and_date_are_refused_naming_them(api):
    resp = api.get("/api/runs", params={"cursor": "not-a-cursor"})
    assert resp.status_code in (400, 422) and "cursor" in resp.text
    resp = api.get("/api/runs", params={"created_after": "next tuesday"})
    assert resp.status_code == 422 and "created_after" in resp.text
