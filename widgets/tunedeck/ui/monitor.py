"""The live run monitor: status, progress, ETA, loss chart, events, eval generations, Cancel.

Kernel and browser speak in deltas:

* synced traitlets hold only small state — ``summary`` (status, progress, ETA, registered model...),
  ``error`` — plus ``history``: the events (newest ``HISTORY_EVENTS``) and loss points known when the
  widget was made or the run ended. It is set at those two moments only, never on a poll tick;
* every poll sends only what is new as a custom message ``{"kind": "delta", "events", "metrics"}``;
* a view that (re)connects says which events and points it holds (``{"kind": "sync", "view",
  "first_seq", "last_seq", "first_metric_id", "last_metric_id"}``) and gets the rest once, addressed
  to it (``{"kind": "missing", "view", ...}``); views merge everything by sequence number / metric id,
  so order does not matter;
* the view asks to cancel with ``{"kind": "cancel"}`` (after its own confirmation).

A daemon thread polls the service about once a second and stops when the run ends or the widget
closes (see ``_poller``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import anywidget
import traitlets

from tunedeck.errors import RunNotFoundError, TunedeckError
from tunedeck.types import TrainingRun
from tunedeck.ui import _snapshot, _static
from tunedeck.ui._poller import Poller
from tunedeck.ui._tracker import RunTracker

POLL_SECONDS = 1.0
HISTORY_EVENTS = 1000  # the history traitlet's share; a view gets older ones by "sync"
HISTORY_POINTS = 5000
SNAPSHOT_EVENTS = 15


class RunMonitor(_snapshot.SnapshotDisplay, anywidget.AnyWidget):
    """A live view of one training run; ``close()`` stops its polling."""

    _esm = _static.esm("monitor.js")
    _css = _static.css("common.css", "monitor.css")

    run_name = traitlets.Unicode("").tag(sync=True)
    summary = traitlets.Dict().tag(sync=True)
    history = traitlets.Dict().tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    closable = traitlets.Bool(False).tag(sync=True)

    def __init__(
        self,
        run: TrainingRun | str,
        *,
        client: Any = None,
        poll_seconds: float = POLL_SECONDS,
        closable: bool = False,
        on_close_request: Callable[[RunMonitor], None] | None = None,
    ):
        name = run.name if isinstance(run, TrainingRun) else str(run)
        super().__init__(run_name=name, closable=closable)
        self._client = client
        self._on_close_request = on_close_request
        self._terminal_callbacks: list[Callable[[RunMonitor], None]] = []
        self._gone = False
        self._ending = False  # set (under the tracker's lock) by the one call of _end()
        self._ended = threading.Event()  # set once the end has been fully handled
        self.tracker = RunTracker(name, self._get_client)
        self.on_msg(self._on_view_message)
        self._first_poll()
        self._poller: Poller | None = None
        if self.tracker.terminal:
            self._ending = True
            self._ended.set()
        elif not self._gone:
            self._poller = Poller(self, poll_seconds, name=f"tunedeck-monitor-{name}").start()

    # -- public -----------------------------------------------------------------------------------
    @property
    def run(self) -> TrainingRun | None:
        """The run as last read from the service."""
        return self.tracker.run

    @property
    def polling(self) -> bool:
        return self._poller is not None and self._poller.running

    def cancel(self) -> None:
        """Ask the service to stop the run (what the Cancel button does after confirmation)."""
        try:
            self._get_client().cancel_run(self.run_name)
            self.error = ""
        except TunedeckError as exc:
            self.error = f"Could not cancel: {exc}"
        self._poll_quietly()

    def wait(self, timeout: float | None = None, poll_seconds: float = POLL_SECONDS) -> TrainingRun | None:
        """Block until the run ends (or ``timeout`` seconds pass); returns the run as last seen."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        # Wait for the end to be *handled* (final history and snapshot sent), not just seen.
        while not self._ended.wait(poll_seconds) and not self._gone and self.comm is not None:
            if deadline is not None and time.monotonic() > deadline:
                break
            if not self.polling:
                self._poll_quietly()
        return self.run

    def on_terminal(self, callback: Callable[[RunMonitor], None]) -> None:
        """Call ``callback(monitor)`` once when the run reaches COMPLETED, STOPPED or FAILED."""
        with self.tracker.lock:
            if not self._ending:
                self._terminal_callbacks.append(callback)
                return
        callback(self)

    def close(self) -> None:
        """Stop polling and close the widget (its views disappear)."""
        poller = getattr(self, "_poller", None)  # absent if __init__ failed
        if poller is not None:
            poller.stop()
        super().close()

    # -- polling ----------------------------------------------------------------------------------
    def _get_client(self) -> Any:
        if self._client is None:
            from tunedeck.client import get_client

            return get_client()
        return self._client

    def _first_poll(self) -> None:
        """Read the whole history now, so the widget shows it on its first render."""
        try:
            self.tracker.poll()
        except RunNotFoundError as exc:
            self._gone = True
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - shown in the widget; the poller retries
            self.error = _snapshot.describe(exc)
        self.summary = self.tracker.summary()
        self._set_history()

    def _poll(self) -> bool:
        """One tick of the poll thread: forward what is new; False once the run has ended."""
        if self.comm is None:  # closed
            return False
        try:
            delta = self.tracker.poll()
        except RunNotFoundError as exc:
            self._gone = True
            self.error = f"{exc} (deleted?)"
            return False
        if self.error:
            self.error = ""
        if delta.events or delta.metrics:
            self.send({"kind": "delta", "events": delta.events, "metrics": delta.metrics})
        if delta:
            self.summary = self.tracker.summary()
        if self.tracker.terminal:
            self._end()
            return False
        return True

    def _poll_failed(self, exc: Exception) -> None:
        self.error = _snapshot.describe(exc) + " — retrying"

    def _poll_quietly(self) -> None:
        try:
            self._poll()
        except Exception as exc:  # noqa: BLE001
            self._poll_failed(exc)

    def _end(self) -> None:
        """Once, when the run ends: a final history for re-rendered views and a final snapshot."""
        with self.tracker.lock:
            if self._ending:
                return
            self._ending = True
            callbacks, self._terminal_callbacks = self._terminal_callbacks, []
        self._set_history()
        self._refresh_snapshot()
        for callback in callbacks:
            try:
                callback(self)
            except Exception:  # noqa: BLE001 - a broken callback must not stop the monitor
                pass
        self._ended.set()

    def _set_history(self) -> None:
        with self.tracker.lock:
            self.history = {
                "events": self.tracker.events[-HISTORY_EVENTS:],
                "metrics": self.tracker.metrics[-HISTORY_POINTS:],
                "event_count": len(self.tracker.events),
            }

    # -- messages from views ----------------------------------------------------------------------
    def _on_view_message(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        kind = content.get("kind")
        if kind == "sync":
            # Deltas may cross this reply in either order: views merge by sequence number / id.
            number = lambda key: int(content.get(key) or 0)  # noqa: E731
            events, metrics = self.tracker.missing(
                (number("first_seq"), number("last_seq")), (number("first_metric_id"), number("last_metric_id"))
            )
            self.send({"kind": "missing", "view": content.get("view"), "events": events, "metrics": metrics})
        elif kind == "cancel":
            self.cancel()
        elif kind == "close" and self._on_close_request is not None:
            self._on_close_request(self)

    # -- snapshots --------------------------------------------------------------------------------
    def _snapshot_text(self) -> str:
        s = self.summary
        parts = [f"tunedeck run {self.run_name}: {s.get('status', 'UNKNOWN')}"]
        if queue_text(s):
            parts.append(queue_text(s))
        if s.get("progress") is not None:
            parts.append(f"{float(s['progress']):.0f}%")
        if s.get("loss") is not None:
            parts.append(f"loss {format_number(s['loss'])}")
        if s.get("registered_model_version"):
            parts.append(f"registered {s.get('registered_model_name')} version {s['registered_model_version']}")
        lines = [" · ".join(parts)]
        if s.get("registered_model_version"):
            code = load_line(s.get("registered_model_name") or "", s["registered_model_version"])
            lines.append("  " + code.replace("\n", "; "))
        for event in self.tracker.events[-SNAPSHOT_EVENTS:]:
            lines.append(f"  {_snapshot.short_time(event['time'])}  {event['type']:<18} {event['message']}")
        if self.error:
            lines.append(f"  ! {self.error}")
        return "\n".join(lines)

    def _snapshot_html(self) -> str:
        esc = _snapshot.esc
        s = self.summary
        head = f"<b>{esc(self.run_name)}</b> {_snapshot.badge(s.get('status'))}"
        facts = []
        if queue_text(s):
            facts.append(queue_text(s))
        if s.get("progress") is not None:
            facts.append(f"{float(s['progress']):.0f}%")
        if s.get("loss") is not None:
            facts.append(f"loss {format_number(s['loss'])}")
        if s.get("eval_loss") is not None:
            facts.append(f"eval loss {format_number(s['eval_loss'])}")
        if s.get("details"):
            facts.append(str(s["details"]))
        lines = [f"<div>{head} {esc(' · '.join(facts))}</div>"]
        if s.get("experiment_path"):
            lines.append(f"<div>MLflow experiment {esc(s['experiment_path'])}</div>")
        if s.get("registered_model_version"):
            lines.append(
                f"<div>Registered model {esc(s.get('registered_model_name'))} version {esc(s['registered_model_version'])}</div>"
            )
            code = load_line(s.get("registered_model_name") or "", s["registered_model_version"])
            lines.append(f"<pre style='margin:2px 0'>{esc(code)}</pre>")
        if self.error:
            lines.append(f"<div style='color:#b91c1c'>{esc(self.error)}</div>")
        events = self.tracker.events[-SNAPSHOT_EVENTS:][::-1]
        count = len(self.tracker.events)
        lines.append(f"<div>Events (newest {len(events)} of {count}):</div>")
        lines.append(
            _snapshot.table(
                ["time", "type", "message"], [(_snapshot.short_time(e["time"]), e["type"], e["message"]) for e in events]
            )
        )
        gens = self.tracker.generations()
        if gens:
            last = gens[-1]
            lines.append(f"<div>Eval generations at {esc(last['checkpoint'])}:</div>")
            lines.append(
                _snapshot.table(["prompt", "generation"], [(g.get("prompt"), g.get("generation")) for g in last["generations"]])
            )
        return f"<div class='tunedeck-snapshot' style='font-size:13px'>{''.join(lines)}</div>"


def format_number(value: Any, digits: int = 4) -> str:
    """A number as the view writes it (js/common.js fmtNumber): 4 significant digits, exponents outside
    [1e-3, 1e6) — so the snapshot and the live view print the same loss the same way."""
    v = float(value)
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
        mantissa, exp = f"{v:.2e}".split("e")
        return f"{mantissa}e{int(exp):+d}"
    text = repr(float(f"{v:.{digits}g}"))
    return text[:-2] if text.endswith(".0") else text


def queue_text(s: dict[str, Any]) -> str:
    """Where a waiting run stands, as the view says it (js/monitor.js queueText)."""
    ahead = s.get("queue_ahead")
    if s.get("status") not in ("PENDING", "QUEUED") or not isinstance(ahead, int):
        return ""
    if ahead <= 0:
        return "next in the queue"
    return f"{ahead} run{'' if ahead == 1 else 's'} ahead in the queue"


def load_line(name: str, version: Any) -> str:
    """The Python that loads a registered model version (tunedeck.registry.load_model)."""
    v = str(version) if str(version).isdigit() else json.dumps(str(version))
    return f"import tunedeck.registry\nmodel, tokenizer = tunedeck.registry.load_model({json.dumps(str(name))}, {v})"


def monitor(run: TrainingRun | str, **options: Any) -> RunMonitor:
    """A live monitor of ``run`` (a TrainingRun or a run name), with its whole history so far."""
    return RunMonitor(run, **options)


__all__ = ["RunMonitor", "monitor"]
