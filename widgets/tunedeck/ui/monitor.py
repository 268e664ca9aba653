"""The live run monitor: status, progress, ETA, loss chart, events, eval generations, Cancel; once the run
has completed, a results card (registered version and its load line, MLflow ids, checkpoints, eval
generations side by side) with a "Try it" box that asks the trained model.

Kernel and browser speak in deltas:

* synced traitlets hold only small state — ``summary`` (status, progress, ETA, registered model...),
  ``error`` — plus ``history``: the events (newest ``HISTORY_EVENTS``) and loss points known when the
  widget was made or the run ended. It is set at those two moments only, never on a poll tick;
* every poll sends only what is new as a custom message ``{"kind": "delta", "events", "metrics"}``;
* a view that (re)connects says which events and points it holds (``{"kind": "sync", "view",
  "first_seq", "last_seq", "first_metric_id", "last_metric_id"}``) and gets the rest once, addressed
  to it (``{"kind": "missing", "view", ...}``); views merge everything by sequence number / metric id,
  so order does not matter;
* the view asks to cancel with ``{"kind": "cancel"}`` (after its own confirmation);
* ``results`` (the results card, ``_results.results_card``) is set once, when the run is seen COMPLETED;
* "Open in MLflow": the view sends ``{"kind": "open-mlflow", "view"}`` and gets ``{"kind": "open",
  "view", "url"}`` back (the URL carries the token, so it is never kept in the widget's state);
* Try it: the view sends ``{"kind": "try", "prompt", "checkpoint", "max_new_tokens"}`` (or ``{"kind":
  "try-stop"}``); a kernel thread asks the service (``ServiceClient.generate``: the model runs in the
  service's helper process, never in this kernel) and streams the answer into the synced ``tryit``
  traitlet (``{"id", "state": running|done|stopped|error, "prompt", "checkpoint", "text", "note"}``).

A daemon thread polls the service about once a second and stops when the run ends or the widget
closes (see ``_poller``).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import anywidget
import traitlets

from tunedeck.client.deletions import on_run_deleted
from tunedeck.errors import InvalidInputError, RunNotFoundError, TunedeckError
from tunedeck.links import run_fragment
from tunedeck.types import TrainingRun
from tunedeck.ui import _snapshot, _static
from tunedeck.ui._poller import Poller
from tunedeck.ui._results import load_line, results_card
from tunedeck.ui._tracker import RunTracker

POLL_SECONDS = 1.0
DELETED_NOTE = "This run was deleted: its events, metrics and checkpoints are gone. Shown: what was last seen."
_LIVE: weakref.WeakSet[RunMonitor] = weakref.WeakSet()  # monitors of this process, told about deletions


def _run_deleted(name: str) -> None:
    for monitor in list(_LIVE):
        if monitor.run_name == name and monitor.comm is not None:
            monitor._deleted()


on_run_deleted(_run_deleted)
HISTORY_EVENTS = 1000  # the history traitlet's share; a view gets older ones by "sync"
HISTORY_POINTS = 5000
SNAPSHOT_EVENTS = 15
TRY_MAX_NEW_TOKENS = 128
TRY_UPDATE_SECONDS = 0.05  # the Try it answer is re-sent to the view at most this often while it streams


class RunMonitor(_snapshot.SnapshotDisplay, anywidget.AnyWidget):
    """A live view of one training run; ``close()`` stops its polling."""

    _esm = _static.esm("monitor.js")
    _css = _static.css("common.css", "monitor.css")

    run_name = traitlets.Unicode("").tag(sync=True)
    summary = traitlets.Dict().tag(sync=True)
    history = traitlets.Dict().tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    closable = traitlets.Bool(False).tag(sync=True)
    results = traitlets.Dict().tag(sync=True)
    tryit = traitlets.Dict().tag(sync=True)

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
        self._try_thread: threading.Thread | None = None
        self._try_stop = threading.Event()
        self._try_count = 0
        self.tracker = RunTracker(name, self._get_client)
        self.on_msg(self._on_view_message)
        _LIVE.add(self)
        self._first_poll()
        self._poller: Poller | None = None
        if self.tracker.terminal:
            self._ending = True
            self._set_results()
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

    def try_it(
        self, prompt: str, checkpoint: str | None = None, *, max_new_tokens: int = TRY_MAX_NEW_TOKENS,
        temperature: float = 0.0, wait: bool = True, timeout: float | None = None,
    ) -> str | None:
        """Ask the completed run's model (``checkpoint``: None or "registered" for the registered version,
        else a checkpoint's name); the answer streams into the widget's Try it box. With ``wait``, returns
        the answer (or raises the error the box shows). The model runs in the service, not in this kernel."""
        if self._try_thread is not None and self._try_thread.is_alive():
            raise TunedeckError("Try it is still answering the last prompt: wait for it, or stop it")
        self._try_stop.clear()
        self._try_count += 1
        job = self._try_count
        state = {"id": job, "state": "running", "prompt": prompt, "checkpoint": checkpoint or "registered", "text": "",
                 "note": "asking the service…"}
        self.tryit = state
        thread = threading.Thread(target=self._try, args=(job, state, max_new_tokens, temperature),
                                  name=f"tunedeck-try-it-{self.run_name}", daemon=True)
        self._try_thread = thread
        thread.start()
        if not wait:
            return None
        thread.join(timeout)
        final = self.tryit
        if final.get("state") == "error":
            raise TunedeckError(final.get("note") or "Try it failed")
        return str(final.get("text", ""))

    def stop_try_it(self) -> None:
        """Stop the answer being generated (the service stops at its next token)."""
        self._try_stop.set()

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
        except RunNotFoundError:
            self._deleted()
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

    def _deleted(self) -> None:
        """The run was deleted (here or, found when asking the service, elsewhere): say so, keep the
        last view, stop following."""
        self._gone = True
        if self._poller is not None:
            self._poller.stop()
        self.error = DELETED_NOTE
        self._refresh_snapshot()

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
        self._set_results()
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

    def _set_results(self) -> None:
        """The results card, once the run is seen COMPLETED (its checkpoints read from the service then)."""
        summary = self.tracker.summary()
        if summary.get("status") != "COMPLETED":
            return
        try:
            checkpoints = self._get_client().checkpoints(self.run_name)
        except (AttributeError, TunedeckError):  # a client without checkpoints, or the run just deleted
            checkpoints = []
        try:
            estimate = self._get_client().run_estimate(self.run_name)
        except (AttributeError, TunedeckError):  # a client without estimates, or the run just deleted
            estimate = None
        self.results = results_card(summary, checkpoints, self.tracker.generations(), estimate)

    def mlflow_url(self) -> str:
        """This run's page in MLflow's UI on the service (tunedeck.links)."""
        mlflow = self.results.get("mlflow") or {}
        summary = self.tracker.summary()
        fragment = run_fragment(mlflow.get("experiment_id") or summary.get("mlflow_experiment_id"),
                                mlflow.get("run_id") or summary.get("mlflow_run_id"))
        return self._get_client().mlflow_ui_url(fragment)

    # -- Try it -----------------------------------------------------------------------------------
    def _try(self, job: int, state: dict[str, Any], max_new_tokens: int, temperature: float) -> None:
        """The kernel thread of one Try it prompt: the service's events into the ``tryit`` traitlet."""
        state = dict(state)
        shown = 0.0

        def show(**changes: Any) -> None:
            nonlocal shown
            state.update(changes)
            if self._try_count == job and self.comm is not None:
                self.tryit = dict(state)
            shown = time.monotonic()

        events = None
        try:
            checkpoint = None if state["checkpoint"] == "registered" else state["checkpoint"]
            events = self._get_client().generate(self.run_name, state["prompt"], checkpoint, max_new_tokens=max_new_tokens,
                                                 temperature=temperature)
            for event in events:
                kind = event.get("event")
                if kind == "start":
                    show(note=f"asking {event.get('source') or state['checkpoint']}…", source=event.get("source"))
                elif kind == "loading":
                    show(note="loading the model…")
                elif kind == "loaded":
                    show(note="generating…")
                elif kind == "text":
                    state["text"] += str(event.get("text", ""))
                    if time.monotonic() - shown >= TRY_UPDATE_SECONDS:
                        show(note="generating…")
                elif kind == "done":
                    tokens, seconds = event.get("tokens"), event.get("seconds")
                    note = f"{tokens} token{'' if tokens == 1 else 's'} in {float(seconds or 0):.2f} s"
                    show(state="stopped" if event.get("stopped") else "done", text=str(event.get("text", state["text"])),
                         note=note + (" (stopped)" if event.get("stopped") else ""))
                    return
                elif kind == "error":
                    show(state="error", note=str(event.get("message") or "the service could not answer"))
                    return
                if self._try_stop.is_set():
                    show(state="stopped", note="stopped")
                    return
            show(state="error", note="the service's answer ended early")
        except InvalidInputError as exc:
            show(state="error", note="; ".join(f"{p.field}: {p.message}" for p in exc.problems) or str(exc))
        except Exception as exc:  # noqa: BLE001 - shown in the Try it box
            show(state="error", note=_snapshot.describe(exc))
        finally:
            if events is not None and hasattr(events, "close"):
                events.close()  # a stream left early: the service stops generating

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
        elif kind == "try":
            try:
                self.try_it(str(content.get("prompt") or ""), content.get("checkpoint") or None,
                            max_new_tokens=int(content.get("max_new_tokens") or TRY_MAX_NEW_TOKENS), wait=False)
            except (TunedeckError, ValueError) as exc:
                self.tryit = {**self.tryit, "note": str(exc)}
        elif kind == "try-stop":
            self.stop_try_it()
        elif kind == "open-mlflow":  # the URL carries the token: sent to the view that asked, never stored
            self.send({"kind": "open", "view": content.get("view"), "url": self.mlflow_url()})
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
        card = self.results
        if card.get("checkpoints"):
            names = [c["name"] + (" (latest)" if c["is_latest"] else "") for c in card["checkpoints"]]
            lines.append("  checkpoints: " + ", ".join(names))
        if card.get("mlflow", {}).get("run_id"):
            lines.append(f"  MLflow run {card['mlflow']['run_id']}")
        if card.get("estimate"):
            lines.append(f"  {card['estimate']['line']}")
        answer = self.tryit
        if answer.get("prompt") and answer.get("state") in ("done", "stopped"):
            lines.append(f"  Try it ({answer.get('checkpoint')}): {answer['prompt']!r} -> {answer.get('text', '')!r}")
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
        card = self.results
        if card:
            lines.append(self._results_html(card))
        gens = self.tracker.generations()
        if gens and not card:
            last = gens[-1]
            lines.append(f"<div>Eval generations at {esc(last['checkpoint'])}:</div>")
            lines.append(
                _snapshot.table(["prompt", "generation"], [(g.get("prompt"), g.get("generation")) for g in last["generations"]])
            )
        return f"<div class='tunedeck-snapshot' style='font-size:13px'>{''.join(lines)}</div>"

    def _results_html(self, card: dict[str, Any]) -> str:
        """The results card in the HTML snapshot: MLflow ids, checkpoints, generations side by side, the last answer."""
        esc = _snapshot.esc
        parts = ["<div><b>Results</b></div>"]
        mlflow = card.get("mlflow") or {}
        ids = [f"run {esc(mlflow['run_id'])}" if mlflow.get("run_id") else "",
               f"model version {esc(mlflow['model_version'])}" if mlflow.get("model_version") else ""]
        if any(ids):
            parts.append(f"<div>MLflow {' · '.join(i for i in ids if i)}</div>")
        if card.get("estimate"):
            parts.append(f"<div>{esc(card['estimate']['line'])}</div>")
        if card.get("checkpoints"):
            parts.append(_snapshot.table(
                ["checkpoint", "epoch", "step", "saved"],
                [(c["name"] + (" (latest)" if c["is_latest"] else ""), c["epoch"], c["batch"],
                  _snapshot.short_time(c["created_at"])) for c in card["checkpoints"]],
            ))
        table = card.get("generations") or {}
        if table.get("rows"):
            parts.append("<div>Eval generations by checkpoint:</div>")
            rows = [(r["prompt"], *(o if o is not None else "" for o in r["outputs"])) for r in table["rows"]]
            parts.append(_snapshot.table(["prompt", *table["checkpoints"]], rows))
        answer = self.tryit
        if answer.get("prompt") and answer.get("state") in ("done", "stopped"):
            parts.append(f"<div>Try it ({esc(answer.get('checkpoint'))}): {esc(answer['prompt'])} → "
                         f"<b>{esc(answer.get('text', ''))}</b></div>")
        return "".join(parts)


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


def monitor(run: TrainingRun | str, **options: Any) -> RunMonitor:
    """A live monitor of ``run`` (a TrainingRun or a run name), with its whole history so far."""
    return RunMonitor(run, **options)


__all__ = ["RunMonitor", "monitor"]
