"""The API tests' service: the widgets' in-memory FakeClient, with checkpoints and the service's own list filtering."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from tests.ui.fakes import T0, FakeClient

from tunedeck.client.http import RunsPage
from tunedeck.errors import RunNotFoundError
from tunedeck.service.run_query import RunQuery, select
from tunedeck.types import Checkpoint, RunStatus, TrainingRun


class ApiFake(FakeClient):
    def __init__(self) -> None:
        super().__init__()
        self.checkpoint_log: dict[str, list[Checkpoint]] = {}

    def add(self, name: str, minutes: int, status: RunStatus = RunStatus.RUNNING, **fields: Any) -> TrainingRun:
        """A run created ``minutes`` after T0."""
        run = self.add_run(name, status)
        self.set_status(name, status, created_at=T0 + timedelta(minutes=minutes), **fields)
        return run

    def list_runs(self, limit: int | None = None, statuses: list[str] | None = None) -> list[TrainingRun]:
        self.calls.append(("list_runs", limit, statuses))
        runs = sorted(self.runs.values(), key=lambda r: (r.created_at, r.name), reverse=True)
        runs = [TrainingRun.from_dict(r.to_dict()) for r in runs if not statuses or r.status.value in statuses]
        return runs[:limit] if limit else runs

    def list_page(self, *, created_before=None, created_after=None, **query: Any) -> RunsPage:
        """The service's own filtering (service/run_query.py) over the fake's runs."""
        self.calls.append(("list_page", query))
        created = {op: at for op, at in (("lt", created_before), ("gte", created_after)) if at}
        page = select(self.list_runs(), RunQuery(created=created, **query))
        return RunsPage(page.runs, page.cursor, page.has_next_page)

    def checkpoints(self, name: str) -> list[Checkpoint]:
        self.calls.append(("checkpoints", name))
        if name not in self.runs:
            raise RunNotFoundError(f"no training run named {name!r}")
        return list(self.checkpoint_log.get(name, []))


@pytest.fixture
def fake(home, monkeypatch) -> ApiFake:
    import tunedeck.client
    import tunedeck.foundation_model

    client = ApiFake()
    monkeypatch.setattr(tunedeck.client, "get_client", lambda: client)
    monkeypatch.setattr(tunedeck.foundation_model, "get_client", lambda: client)
    return client
