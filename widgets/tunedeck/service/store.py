"""SQLite store of runs, events and metrics.

One connection in WAL mode guarded by a lock: the service is the only writer, readers see committed
state. Events are numbered per run (1, 2, ...) inside the write transaction, so ``after=<sequence>``
reads are an index range scan whatever the history size. Metrics have a global id for the same
purpose. Schema changes are not migrated: a new schema version starts a new file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable

from tunedeck.types import RunStatus, TrainingEvent, TrainingRun, utcnow

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at);
CREATE TABLE IF NOT EXISTS events (
    run TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    time TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT,
    PRIMARY KEY (run, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL,
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    time TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics (run, id);
"""


class RunExistsError(Exception):
    pass


class Store:
    def __init__(self, path: Path | str):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- runs -------------------------------------------------------------------------------------
    def add_run(self, run: TrainingRun, event_type: str, message: str) -> TrainingEvent:
        """Store a new run together with its first event, atomically."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO runs (name, status, created_at, data) VALUES (?, ?, ?, ?)",
                    (run.name, run.status.value, run.created_at.isoformat(), json.dumps(run.to_dict())),
                )
            except sqlite3.IntegrityError:
                raise RunExistsError(run.name) from None
            return self._insert_event(run.name, event_type, message, {})

    def get_run(self, name: str) -> TrainingRun | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM runs WHERE name = ?", (name,)).fetchone()
        return TrainingRun.from_dict(json.loads(row[0])) if row else None

    def list_runs(self, limit: int | None = None, statuses: Iterable[str] | None = None) -> list[TrainingRun]:
        sql, args = "SELECT data FROM runs", []
        statuses = list(statuses or [])
        if statuses:
            sql += f" WHERE status IN ({','.join('?' * len(statuses))})"
            args += statuses
        sql += " ORDER BY created_at DESC, name DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [TrainingRun.from_dict(json.loads(r[0])) for r in rows]

    def update_run(
        self, name: str, *, event: tuple[str, str, dict[str, Any]] | None = None, **fields: Any
    ) -> tuple[TrainingRun, TrainingEvent | None]:
        """Change run fields and optionally append an event in the same transaction."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT data FROM runs WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise KeyError(name)
            data = json.loads(row[0])
            run = TrainingRun.from_dict({**data, **_jsonable(fields)})
            self._db.execute(
                "UPDATE runs SET status = ?, data = ? WHERE name = ?",
                (run.status.value, json.dumps(run.to_dict()), name),
            )
            ev = self._insert_event(name, *event) if event else None
            return run, ev

    def delete_run(self, name: str) -> bool:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cur = self._db.execute("DELETE FROM runs WHERE name = ?", (name,))
            self._db.execute("DELETE FROM events WHERE run = ?", (name,))
            self._db.execute("DELETE FROM metrics WHERE run = ?", (name,))
            return cur.rowcount > 0

    # -- events -----------------------------------------------------------------------------------
    def add_event(self, name: str, type: str, message: str, data: dict[str, Any] | None = None) -> TrainingEvent:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            return self._insert_event(name, type, message, data or {})

    def _insert_event(self, name: str, type: str, message: str, data: dict[str, Any]) -> TrainingEvent:
        (last,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE run = ?", (name,)).fetchone()
        ev = TrainingEvent(type=type, time=utcnow(), message=message, sequence=last + 1, data=data)
        self._db.execute(
            "INSERT INTO events (run, seq, type, time, message, data) VALUES (?, ?, ?, ?, ?, ?)",
            (name, ev.sequence, type, ev.time.isoformat(), message, json.dumps(data) if data else None),
        )
        return ev

    def events(self, name: str, after: int = 0, limit: int | None = None) -> list[TrainingEvent]:
        sql = "SELECT seq, type, time, message, data FROM events WHERE run = ? AND seq > ? ORDER BY seq"
        args: list[Any] = [name, after]
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [
            TrainingEvent.from_dict({"sequence": s, "type": t, "time": tm, "message": m, "data": json.loads(d) if d else {}})
            for s, t, tm, m, d in rows
        ]

    # -- metrics ----------------------------------------------------------------------------------
    def add_metrics(self, name: str, step: int, values: dict[str, float]) -> None:
        now = utcnow().isoformat()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO metrics (run, step, name, value, time) VALUES (?, ?, ?, ?, ?)",
                [(name, step, k, float(v), now) for k, v in values.items()],
            )

    def metrics(self, name: str, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, step, name, value, time FROM metrics WHERE run = ? AND id > ? ORDER BY id"
        args: list[Any] = [name, after]
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [{"id": i, "step": s, "name": n, "value": v, "time": t} for i, s, n, v, t in rows]


def _jsonable(fields: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in fields.items():
        if isinstance(v, RunStatus):
            v = v.value
        elif hasattr(v, "isoformat"):
            v = v.isoformat()
        out[k] = v
    return out
