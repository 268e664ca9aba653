"""SQLite store of runs, events and metrics.

One connection in WAL mode guarded by a lock: the service is the only writer, readers see committed
state. Events are numbered per run (1, 2, ...) inside the write transaction, so ``after=<sequence>``
reads are an index range scan whatever the history size. Metrics have a global id for the same
purpose.

The schema is versioned (``PRAGMA user_version``) and migrated in place when a newer tunedeck opens
an older file; a file written by a newer tunedeck is refused rather than misread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

# Each migration takes the schema from version i + 1 to i + 2 (version 1 is SCHEMA above).
MIGRATIONS = [
    # 2: the worker of each run, so a restarted service can re-attach to it or resume the run, and how
    # far the run's journal (RUN_DIR/journal.jsonl) has been applied, so no report is lost or doubled.
    """
    CREATE TABLE IF NOT EXISTS workers (
        run TEXT PRIMARY KEY,
        pid INTEGER,
        pid_start INTEGER,
        journal_offset INTEGER NOT NULL DEFAULT 0,
        failure TEXT,
        orphaned INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0
    );
    """,
    # 3: the devices each run's worker holds (service/devices.py's Assignment as JSON), so a restarted
    # service that re-attaches to the worker gives them to no other run.
    "ALTER TABLE workers ADD COLUMN devices TEXT",
]
SCHEMA_VERSION = 1 + len(MIGRATIONS)
_WORKER_COLUMNS = ("pid", "pid_start", "journal_offset", "failure", "orphaned", "attempts", "devices")


class SchemaTooNewError(Exception):
    pass


@dataclass
class WorkerState:
    """What the service knows of a run's worker process and its journal."""

    pid: int | None = None
    pid_start: int | None = None  # the process's start time (clock ticks since boot): a reused pid differs
    journal_offset: int = 0  # bytes of the journal already applied to this store
    failure: str | None = None  # the worker's own reason for failing, from its journal
    orphaned: bool = False  # the worker stopped itself because no service owned it
    attempts: int = 0  # autoresumes so far
    devices: str | None = None  # the devices the worker holds (JSON, service/devices.py's Assignment)


class RunExistsError(Exception):
    pass


class Store:
    def __init__(self, path: Path | str):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._migrate(path)

    def _migrate(self, path: Path | str) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise SchemaTooNewError(
                    f"{path} has schema version {version}, written by a newer tunedeck (this one reads up to "
                    f"{SCHEMA_VERSION}): upgrade tunedeck, or point TUNEDECK_HOME at another folder"
                )
            if version == 0:  # a new file, or one from before versioning (its tables are SCHEMA's)
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                version = 1
            for migration in MIGRATIONS[version - 1:]:
                self._db.execute(migration)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

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
                    (run.name, run.status.value, (run.created_at or utcnow()).isoformat(), json.dumps(run.to_dict())),
                )
            except sqlite3.IntegrityError:
                raise RunExistsError(run.name) from None
            return self._insert_event(run.name, event_type, message, {})

    def get_run(self, name: str) -> TrainingRun | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM runs WHERE name = ?", (name,)).fetchone()
        return TrainingRun.from_dict(json.loads(row[0])) if row else None

    def list_runs(self, limit: int | None = None, statuses: Iterable[str] | None = None) -> list[TrainingRun]:
        sql = "SELECT data FROM runs"
        args: list[Any] = []
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
        self, name: str, *, event: tuple[str, str, dict[str, Any]] | None = None, journal_offset: int | None = None,
        **fields: Any,
    ) -> tuple[TrainingRun, TrainingEvent | None]:
        """Change run fields and optionally append an event (and advance the journal) in one transaction."""
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
            if journal_offset is not None:
                self._set_worker(name, {"journal_offset": journal_offset})
            return run, ev

    def delete_run(self, name: str) -> bool:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cur = self._db.execute("DELETE FROM runs WHERE name = ?", (name,))
            self._db.execute("DELETE FROM events WHERE run = ?", (name,))
            self._db.execute("DELETE FROM metrics WHERE run = ?", (name,))
            self._db.execute("DELETE FROM workers WHERE run = ?", (name,))
            return cur.rowcount > 0

    # -- workers ----------------------------------------------------------------------------------
    def worker(self, name: str) -> WorkerState:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(_WORKER_COLUMNS)} FROM workers WHERE run = ?", (name,)).fetchone()
        if row is None:
            return WorkerState()
        state = WorkerState(**dict(zip(_WORKER_COLUMNS, row, strict=True)))
        state.orphaned = bool(state.orphaned)
        return state

    def set_worker(self, name: str, **fields: Any) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._set_worker(name, fields)

    def _set_worker(self, name: str, fields: dict[str, Any]) -> None:
        unknown = set(fields) - set(_WORKER_COLUMNS)
        if unknown:
            raise ValueError(f"unknown worker fields {sorted(unknown)}")
        self._db.execute("INSERT OR IGNORE INTO workers (run) VALUES (?)", (name,))
        if fields:
            columns = ", ".join(f"{k} = ?" for k in fields)
            self._db.execute(f"UPDATE workers SET {columns} WHERE run = ?", (*fields.values(), name))

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
    def add_metrics(self, name: str, step: int, values: dict[str, float], journal_offset: int | None = None) -> None:
        now = utcnow().isoformat()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO metrics (run, step, name, value, time) VALUES (?, ?, ?, ?, ?)",
                [(name, step, k, float(v), now) for k, v in values.items() if v is not None],
            )
            if journal_offset is not None:
                self._set_worker(name, {"journal_offset": journal_offset})

    def delete_metrics_after(self, name: str, step: int) -> int:
        """Forget the metrics of steps after ``step``: a resumed run trains them again."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            return self._db.execute("DELETE FROM metrics WHERE run = ? AND step > ?", (name, step)).rowcount

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
