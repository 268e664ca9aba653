"""The runs browser: every run with its status, refreshed live; open a monitor, cancel, delete.

The list is small (one row per run), so it travels as a synced traitlet and is sent only when a row
changed; the view computes running durations itself. Actions come from the view as custom messages
``{"kind": "open" | "cancel" | "delete", "name"}`` (the view asks for confirmation first) and the
answer comes back in the ``notice`` traitlet.
"""

from __future__ import annotations

from typing import Any

import anywidget
import ipywidgets as w
import traitlets

from tunedeck.errors import TunedeckError
from tunedeck.types import TrainingRun
from tunedeck.ui import _snapshot, _static
from tunedeck.ui._poller import Poller
from tunedeck.ui.monitor import RunMonitor

POLL_SECONDS = 2.0


def run_row(run: TrainingRun) -> dict[str, Any]:
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
    }


class RunsTable(anywidget.AnyWidget):
    """The table itself; ``RunsBrowser`` adds the monitors it opens."""

    _esm = _static.esm("runs.js")
    _css = _static.css("common.css", "runs.css")

    rows: traitlets.List[Any] = traitlets.List().tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    notice = traitlets.Unicode("").tag(sync=True)
    open_names: traitlets.List[Any] = traitlets.List().tag(sync=True)


class RunsBrowser(_snapshot.SnapshotDisplay, w.VBox):
    """All runs, newest first, with live refresh; ``close()`` stops refreshing."""

    def __init__(self, *, client: Any = None, poll_seconds: float = POLL_SECONDS):
        self._client = client
        self.table = RunsTable()
        self.monitors = w.VBox()
        self.monitors.add_class("td-runs-monitors")
        super().__init__(children=[self.table, self.monitors])
        self.add_class("td-runs-browser")
        self.table.on_msg(self._on_view_message)
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
        self._act("delete_run", name, "deleted")

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
        rows = [run_row(r) for r in self._get_client().list_runs()]
        if rows != self.table.rows:
            self.table.rows = rows
        if self.table.error:
            self.table.error = ""
        return True

    def _poll_failed(self, exc: Exception) -> None:
        self.table.error = f"{exc} — retrying"

    def _act(self, method: str, name: str, done: str) -> None:
        try:
            getattr(self._get_client(), method)(name)
            self.table.notice = f"{done} {name}"
        except TunedeckError as exc:
            self.table.notice = f"could not {method.split('_')[0]} {name}: {exc}"
        self.refresh()

    def _on_view_message(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        name = str(content.get("name") or "")
        kind = content.get("kind")
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
    def _snapshot_text(self) -> str:
        lines = [f"tunedeck runs ({len(self.table.rows)})"]
        lines += [f"  {r['name']:<32} {r['status']:<11} {r['model']}  {r['registered_model']}" for r in self.table.rows]
        return "\n".join(lines)

    def _snapshot_html(self) -> str:
        rows = [
            (r["name"], r["status"], r["model"], r["task_type"], _snapshot.short_time(r["created_at"]), r["registered_model"])
            for r in self.table.rows
        ]
        return (
            f"<div class='tunedeck-snapshot' style='font-size:13px'><b>tunedeck runs ({len(rows)})</b>"
            + _snapshot.table(["name", "status", "model", "task", "created", "registered model"], rows)
            + "</div>"
        )


def runs(**options: Any) -> RunsBrowser:
    """Every run with its status; open a monitor, cancel or delete from the list."""
    return RunsBrowser(**options)
