"""The runs browser: every run with its status and final losses, refreshed live; sort, filter, open a
monitor, cancel, delete.

The list is small (one row per run), so it travels as a synced traitlet and is sent only when a row
changed; the view computes running durations itself. Final train and eval losses come from each run's
metrics, read incrementally (a finished run is read once more after it ends, then never again). Sorting
and filtering happen in the view (they work while the kernel is busy); their settings are synced
traitlets so the snapshot lists the same rows in the same order. Actions come from the view as custom
messages ``{"kind": "open" | "cancel" | "delete", "name"}`` (the view asks for confirmation first), or
``{"kind": "compare", "names"}`` for the runs ticked in the view (their comparison opens below the table),
and the answer comes back in the ``notice`` traitlet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anywidget
import ipywidgets as w
import traitlets

from tunedeck.client.deletions import run_deleted
from tunedeck.errors import TunedeckError
from tunedeck.types import TrainingRun
from tunedeck.ui import _snapshot, _static
from tunedeck.ui._poller import Poller
from tunedeck.ui.compare import RunComparison
from tunedeck.ui.monitor import RunMonitor

POLL_SECONDS = 2.0
MAX_COMPARED = 20  # runs in one comparison (its chart has a colour for each)
TRAIN_LOSS = "train/loss"
EVAL_LOSS = "eval/loss"
#: The status filter's choices (the view offers the same): a group or one status.
STATUS_FILTERS = {
    "all": None,
    "active": {"PENDING", "QUEUED", "STARTING", "RUNNING", "TERMINATING"},
    "COMPLETED": {"COMPLETED"},
    "FAILED": {"FAILED"},
    "STOPPED": {"STOPPED"},
}
ENDED = {"COMPLETED", "FAILED", "STOPPED"}
SORT_KEYS = ("created", "name", "status", "duration", "train_loss", "eval_loss", "model")
TEXT_FIELDS = ("name", "model", "task_type", "registered_model", "status")


@dataclass
class _Losses:
    """What was read of one run's metrics: the cursor and the latest value of each loss."""

    after: int = 0
    train: float | None = None
    eval: float | None = None
    final: bool = False  # read after the run ended: nothing more will come


def run_row(run: TrainingRun, losses: _Losses | None = None) -> dict[str, Any]:
    """One run as the table shows it (times as ISO text; the view formats them)."""
    iso = lambda t: t.isoformat() if t else None  # noqa: E731
    return {
        "name": run.name,
        "status": run.status.value,
        "model": run.model,
        "task_type": run.task_type,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "completed_at": iso(run.completed_at),
        "progress": run.progress,
        "details": run.details,
        "registered_model": f"{run.registered_model_name} v{run.registered_model_version}"
        if run.registered_model_version
        else "",
        "train_loss": losses.train if losses else None,
        "eval_loss": losses.eval if losses else None,
    }


def _seconds(row: dict[str, Any], now: datetime | None = None) -> float | None:
    if not row.get("started_at"):
        return None
    start = datetime.fromisoformat(row["started_at"])
    end = datetime.fromisoformat(row["completed_at"]) if row.get("completed_at") else (now or datetime.now(start.tzinfo))
    return (end - start).total_seconds()


def _sort_value(row: dict[str, Any], key: str, now: datetime | None) -> Any:
    if key == "created":
        return row.get("created_at")
    if key == "duration":
        return _seconds(row, now)
    value = row.get("name" if key == "name" else key)
    return value.lower() if isinstance(value, str) else value


def visible_rows(rows: list[dict[str, Any]], sort: str = "created", descending: bool = True, status: str = "all",
                 text: str = "", now: datetime | None = None) -> list[dict[str, Any]]:
    """The rows the view shows: those matching the status filter and containing ``text`` (any case) in
    name, model, task, registered model or status, sorted by ``sort``; runs without a value (no loss
    yet, not started) go last whichever the direction. The view (js/runs.js, ``visibleRows``) does the same."""
    wanted = STATUS_FILTERS.get(status)
    needle = text.strip().lower()
    kept = [
        r for r in rows
        if (wanted is None or r.get("status") in wanted)
        and (not needle or any(needle in str(r.get(f) or "").lower() for f in TEXT_FIELDS))
    ]
    key = sort if sort in SORT_KEYS else "created"
    valued = [r for r in kept if _sort_value(r, key, now) is not None]
    missing = [r for r in kept if _sort_value(r, key, now) is None]
    valued.sort(key=lambda r: (_sort_value(r, key, now), r["name"]), reverse=descending)
    return valued + missing


class RunsTable(anywidget.AnyWidget):
    """The table itself; ``RunsBrowser`` adds the monitors it opens."""

    _esm = _static.esm("runs.js")
    _css = _static.css("common.css", "runs.css")

    rows: traitlets.List[Any] = traitlets.List().tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    notice = traitlets.Unicode("").tag(sync=True)
    open_names: traitlets.List[Any] = traitlets.List().tag(sync=True)
    # the view's sort and filter (set by the view; the snapshot follows them)
    sort = traitlets.Unicode("created").tag(sync=True)
    descending = traitlets.Bool(True).tag(sync=True)
    status_filter = traitlets.Unicode("all").tag(sync=True)
    text_filter = traitlets.Unicode("").tag(sync=True)


class RunsBrowser(_snapshot.SnapshotDisplay, w.VBox):
    """All runs, newest first, with live refresh; ``close()`` stops refreshing."""

    def __init__(self, *, client: Any = None, poll_seconds: float = POLL_SECONDS):
        self._client = client
        self._losses: dict[str, _Losses] = {}
        self._snapshot_key: Any = None
        self.table = RunsTable()
        self.monitors = w.VBox()
        self.monitors.add_class("td-runs-monitors")
        super().__init__(children=[self.table, self.monitors])
        self.add_class("td-runs-browser")
        self.table.on_msg(self._on_view_message)
        self.table.observe(self._on_view_state, names=["sort", "descending", "status_filter", "text_filter"])
        self.refresh()
        self._poller = Poller(self, poll_seconds, name="tunedeck-runs").start()

    # -- public -----------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the list now (the poll thread does this every couple of seconds)."""
        try:
            self._poll()
        except Exception as exc:  # noqa: BLE001
            self._poll_failed(exc)

    def open_monitor(self, name: str) -> RunMonitor:
        """Show the monitor of run ``name`` below the table (once)."""
        for child in self.monitors.children:
            if isinstance(child, RunMonitor) and child.run_name == name:
                return child
        monitor = RunMonitor(name, client=self._client, closable=True, on_close_request=self._close_monitor)
        self.monitors.children = (monitor, *self.monitors.children)
        self._sync_open()
        return monitor

    def cancel(self, name: str) -> None:
        self._act("cancel_run", name, "cancel requested for")

    def delete(self, name: str) -> None:
        for child in self.monitors.children:
            if isinstance(child, RunMonitor) and child.run_name == name:
                self._close_monitor(child)
        if self._act("delete_run", name, "deleted"):
            run_deleted(name)  # monitors of it elsewhere in this notebook say so

    def close(self) -> None:
        """Stop refreshing and close the monitors opened here."""
        if hasattr(self, "_poller"):  # absent if __init__ failed
            self._poller.stop()
        for child in self.monitors.children:
            child.close()
        self.table.close()
        super().close()

    # -- internals --------------------------------------------------------------------------------
    def _get_client(self) -> Any:
        if self._client is None:
            from tunedeck.client import get_client

            return get_client()
        return self._client

    def _poll(self) -> bool:
        if self.table.comm is None:
            return False
        client = self._get_client()
        runs = client.list_runs()
        rows = [run_row(r, self._read_losses(client, r)) for r in runs]
        self._losses = {r.name: self._losses[r.name] for r in runs if r.name in self._losses}
        if rows != self.table.rows:
            self.table.rows = rows
        if self.table.error:
            self.table.error = ""
        self._maybe_refresh_snapshot()
        return True

    def _read_losses(self, client: Any, run: TrainingRun) -> _Losses:
        """The run's latest train and eval loss, reading only metric points not read before."""
        seen = self._losses.setdefault(run.name, _Losses())
        if seen.final:
            return seen
        ended = run.status.is_terminal()
        try:
            points = client.metrics(run.name, after=seen.after)
        except TunedeckError:  # deleted meanwhile, or metrics not there yet: the next poll tries again
            return seen
        for point in points:
            seen.after = max(seen.after, int(point.get("id") or 0))
            if point.get("name") == TRAIN_LOSS:
                seen.train = point.get("value")
            elif point.get("name") == EVAL_LOSS:
                seen.eval = point.get("value")
        seen.final = ended
        return seen

    def visible_rows(self) -> list[dict[str, Any]]:
        """The rows as the view shows them now (its sort and filter)."""
        t = self.table
        return visible_rows(t.rows, t.sort, t.descending, t.status_filter, t.text_filter)

    def _on_view_state(self, _change: Any) -> None:
        self._maybe_refresh_snapshot()

    def _maybe_refresh_snapshot(self) -> None:
        """Replace the saved snapshot when what it shows changed: a run came or went, changed status or
        filter, or ended with its final losses. Not on every progress tick or loss of a running run, so a
        saved notebook does not turn dirty every couple of seconds while a run trains."""
        t = self.table
        shown = [
            (r["name"], r["status"], r["registered_model"], *((r["train_loss"], r["eval_loss"]) if r["status"] in ENDED else ()))
            for r in t.rows
        ]
        key = (shown, t.sort, t.descending, t.status_filter, t.text_filter)
        if key != self._snapshot_key:
            self._snapshot_key = key
            self._refresh_snapshot()

    def _poll_failed(self, exc: Exception) -> None:
        self.table.error = f"{exc} — retrying"

    def _act(self, method: str, name: str, done: str) -> bool:
        try:
            getattr(self._get_client(), method)(name)
            self.table.notice = f"{done} {name}"
            return True
        except TunedeckError as exc:
            self.table.notice = f"could not {method.split('_')[0]} {name}: {exc}"
            return False
        finally:
            self.refresh()

    def compare(self, names: list[str]) -> RunComparison | None:
        """Show the comparison of runs ``names`` below the table (replacing an earlier one)."""
        names = list(dict.fromkeys(str(n) for n in names if n))
        if len(names) < 2:
            self.table.notice = "select at least two runs to compare"
            return None
        for child in self.monitors.children:
            if isinstance(child, RunComparison):
                self.monitors.children = tuple(c for c in self.monitors.children if c is not child)
                child.close()
        comparison = RunComparison(names, client=self._client)
        self.monitors.children = (comparison, *self.monitors.children)
        self.table.notice = f"comparing {len(names)} runs"
        return comparison

    def _on_view_message(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        kind = content.get("kind")
        if kind == "compare":
            self.compare([str(n) for n in content.get("names") or []][:MAX_COMPARED])
            return
        name = str(content.get("name") or "")
        if not name:
            return
        if kind == "open":
            self.open_monitor(name)
        elif kind == "cancel":
            self.cancel(name)
        elif kind == "delete":
            self.delete(name)

    def _close_monitor(self, monitor: RunMonitor) -> None:
        self.monitors.children = tuple(c for c in self.monitors.children if c is not monitor)
        monitor.close()
        self._sync_open()

    def _sync_open(self) -> None:
        self.table.open_names = [c.run_name for c in self.monitors.children if isinstance(c, RunMonitor)]

    # -- snapshots --------------------------------------------------------------------------------
    def _filter_note(self) -> str:
        t = self.table
        parts = [f"status: {t.status_filter}"] if t.status_filter != "all" else []
        if t.text_filter.strip():
            parts.append(f"text: {t.text_filter.strip()!r}")
        return f" — filtered ({', '.join(parts)})" if parts else ""

    def _snapshot_text(self) -> str:
        rows = self.visible_rows()
        lines = [f"tunedeck runs ({len(rows)} of {len(self.table.rows)}){self._filter_note()}"]
        lines += [
            f"  {r['name']:<32} {r['status']:<11} {_snapshot.short_time(r['created_at']):<19}  train {_loss(r['train_loss']):<8}"
            f" eval {_loss(r['eval_loss']):<8} {r['model']}  {r['registered_model']}"
            for r in rows
        ]
        return "\n".join(lines)

    def _snapshot_html(self) -> str:
        rows = [
            (r["name"], r["status"], _snapshot.short_time(r["created_at"]), _loss(r["train_loss"]), _loss(r["eval_loss"]),
             r["model"], r["task_type"], r["registered_model"])
            for r in self.visible_rows()
        ]
        return (
            f"<div class='tunedeck-snapshot' style='font-size:13px'><b>tunedeck runs ({len(rows)} of {len(self.table.rows)})</b>"
            f"{_snapshot.esc(self._filter_note())}"
            + _snapshot.table(["name", "status", "created", "train loss", "eval loss", "model", "task", "registered model"], rows)
            + "</div>"
        )


def _loss(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def runs(**options: Any) -> RunsBrowser:
    """Every run with its status; open a monitor, cancel or delete from the list."""
    return RunsBrowser(**options)
