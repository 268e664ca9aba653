"""Which runs a list asks for, and one page of them: the filters of the reference's ``list()`` and of
the official client's ``getFinetunesPaginated``, applied in the service for both protocols (REST
``GET /api/runs`` and GraphQL), so a client pages through runs without reading them all."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from tunedeck.errors import InvalidInputError, Problem
from tunedeck.types import TrainingRun

_EARLIEST = datetime.min.replace(tzinfo=timezone.utc)
BOUNDS = ("lt", "lte", "gt", "gte")  # on created_at: before = lt, after = gte


@dataclass
class RunQuery:
    """Every filter is optional; the filters given must all match."""

    names: Sequence[str] | None = None
    statuses: Sequence[str] | None = None
    created_by: Sequence[str] | None = None  # the reference's user_emails: tunedeck records the user name
    experiment_ids: Sequence[str] | None = None  # MLflow experiment ids
    created: dict[str, datetime] = field(default_factory=dict)  # BOUNDS -> an aware datetime
    cursor: str | None = None  # from the previous page: the runs after it
    limit: int | None = None


@dataclass
class RunPage:
    runs: list[TrainingRun]
    cursor: str | None  # pass as RunQuery.cursor for the next page (None: no more)
    has_next_page: bool


def order(run: TrainingRun) -> tuple[datetime, str]:
    """The list order, newest first: created_at, then name, descending (the store's ORDER BY)."""
    return (run.created_at or _EARLIEST, run.name)


def cursor_of(run: TrainingRun) -> str:
    created, name = order(run)
    return json.dumps([created.isoformat(), name])


def parse_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, name = json.loads(cursor)
        at = datetime.fromisoformat(str(created))
        return (at if at.tzinfo else at.astimezone(), str(name))
    except (ValueError, TypeError):
        problem = Problem("cursor", f"{cursor[:80]!r} is not a cursor from a list page of this service")
        raise InvalidInputError([problem]) from None


def select(runs: Sequence[TrainingRun], query: RunQuery) -> RunPage:
    """One page of ``runs`` (the service's, any order) that match ``query``, newest first."""
    in_experiment = _experiment_matcher(runs, query.experiment_ids) if query.experiment_ids else None
    names = set(query.names) if query.names is not None else None
    statuses = set(query.statuses) if query.statuses else None
    users = set(query.created_by) if query.created_by else None
    last = parse_cursor(query.cursor) if query.cursor else None
    found = sorted(
        (r for r in runs
         if (names is None or r.name in names)
         and (statuses is None or r.status.value in statuses)
         and (users is None or r.created_by in users)
         and (in_experiment is None or in_experiment(r))
         and _within(r.created_at, query.created)
         and (last is None or order(r) < last)),
        key=order, reverse=True,
    )
    more = query.limit is not None and len(found) > query.limit
    shown = found[:query.limit] if query.limit is not None else found
    return RunPage(shown, cursor_of(shown[-1]) if more else None, more)


def _within(at: datetime | None, bounds: dict[str, datetime]) -> bool:
    if not bounds:
        return True
    if at is None:
        return False
    checks = {"lt": at.__lt__, "lte": at.__le__, "gt": at.__gt__, "gte": at.__ge__}
    return all(checks[op](bound) for op, bound in bounds.items())


def _experiment_matcher(runs: Sequence[TrainingRun], experiment_ids: Sequence[str]) -> Callable[[TrainingRun], bool]:
    """Runs in the MLflow experiments ``experiment_ids``. A run learns its experiment id when it starts
    tracking; one not yet started belongs to one when its experiment_path is that experiment's."""
    ids = set(experiment_ids)
    paths = {r.experiment_path for r in runs if r.mlflow_experiment_id in ids and r.experiment_path}
    return lambda r: r.mlflow_experiment_id in ids or (not r.mlflow_experiment_id and r.experiment_path in paths)


__all__ = ["BOUNDS", "RunPage", "RunQuery", "cursor_of", "order", "parse_cursor", "select"]
