"""What the kernel knows about one run, read from the service a little at a time.

``RunTracker.poll()`` asks only for what is new (events with sequence > the last seen, metric points
with id > the last seen) and returns that as a ``Delta``; the monitor forwards the delta to the
browser. The tracker keeps the whole history so a view that (re)connects can be sent what it lacks.
No widget code here: the incremental logic is tested without Jupyter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tunedeck.types import EventType, RunStatus, TrainingEvent, TrainingRun

#: Metric names sent to the browser: the loss chart's and the small panels' (learning rate, tok/s);
#: the rest (grad norm...) stays in the kernel.
CHART_METRICS = ("train/loss", "eval/loss", "train/lr", "train/tokens_per_second")

#: The summary's numbers and the metric each one is read from (the latest point of it, by id): the one
#: source of every number the monitor shows — header, legend, panels, snapshot (js/monitor.js reads the
#: same points with the same rule, currentNumbers).
NUMBERS = {"loss": "train/loss", "eval_loss": "eval/loss", "lr": "train/lr", "tokens_per_second": "train/tokens_per_second"}

#: Events whose message (the run's ``details``) restates those numbers from another moment: the monitor's
#: status line leaves them out, so it never disagrees with the header.
_NUMBER_EVENTS = (EventType.TRAIN_UPDATED.value, EventType.TRAIN_FINISHED.value, EventType.EVAL_COMPLETED.value)

WAITING = (RunStatus.PENDING, RunStatus.QUEUED)
QUEUE_SECONDS = 5.0  # how often a waiting run re-reads the queue (one list of waiting runs)


def event_json(event: TrainingEvent) -> dict[str, Any]:
    """An event as the browser gets it: plain JSON, text left as text."""
    return {
        "seq": event.sequence,
        "type": str(event.type),
        "time": event.time.isoformat() if event.time else None,
        "message": event.message or "",
        "data": event.data or {},
    }


def metric_json(point: dict[str, Any]) -> dict[str, Any]:
    return {"id": point["id"], "step": point["step"], "name": point["name"], "value": point["value"]}


@dataclass
class Delta:
    """What one poll found: new events and chart points, and whether the run itself changed."""

    events: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    run_changed: bool = False

    def __bool__(self) -> bool:
        return bool(self.events or self.metrics or self.run_changed)


class RunTracker:
    """The run, its events and its loss points, with ``after=`` cursors into the service."""

    def __init__(self, name: str, client_factory: Callable[[], Any]):
        self.name = name
        self._client_factory = client_factory
        self.run: TrainingRun | None = None
        self.events: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.last_seq = 0
        self.last_metric_id = 0
        self.latest: dict[str, dict[str, Any]] = {}  # the newest point of each metric name
        self.queue_ahead: int | None = None  # waiting runs created before this one (while it waits)
        self.queue_seconds = QUEUE_SECONDS
        self._queue_read_at: float | None = None
        self.lock = threading.RLock()  # guards the state: poll thread vs. the kernel's message handler
        self._polling = threading.Lock()  # one poll at a time, so an older answer never lands last

    # -- reading ----------------------------------------------------------------------------------
    def poll(self) -> Delta:
        """Fetch what changed since the last poll. Run first, then events: a terminal status is
        written together with its terminal event, so the events read after it include that event."""
        with self._polling:
            return self._poll()

    def _poll(self) -> Delta:
        client = self._client_factory()
        run = client.get_run(self.name)
        events = client.events(self.name, after=self.last_seq)
        try:
            points = client.metrics(self.name, after=self.last_metric_id)
        except AttributeError:  # a client without metrics: the chart falls back to events
            points = []
        queue_ahead = self._queue_ahead(client, run)
        with self.lock:
            delta = Delta(run_changed=self.run is None or run.to_dict() != self.run.to_dict() or queue_ahead != self.queue_ahead)
            self.run = run
            self.queue_ahead = queue_ahead
            for event in events:
                if event.sequence > self.last_seq:
                    self.events.append(event_json(event))
                    self.last_seq = event.sequence
                    delta.events.append(self.events[-1])
            for point in points:
                if point["id"] > self.last_metric_id:
                    self.last_metric_id = point["id"]
                    self.latest[point["name"]] = metric_json(point)
                    if point["name"] in CHART_METRICS:
                        self.metrics.append(metric_json(point))
                        delta.metrics.append(self.metrics[-1])
            return delta

    def _queue_ahead(self, client: Any, run: TrainingRun) -> int | None:
        """How many waiting runs the service will start before this one (it starts the oldest first), read
        only while this run waits and at most every ``queue_seconds``; None when not waiting or unknown."""
        if run.status not in WAITING:
            self._queue_read_at = None
            return None
        now = time.monotonic()
        if self._queue_read_at is not None and now - self._queue_read_at < self.queue_seconds:
            return self.queue_ahead
        self._queue_read_at = now
        try:
            waiting = client.list_runs(statuses=[s.value for s in WAITING])
        except Exception:  # noqa: BLE001 - the queue place is a nicety: never fail a poll for it
            return None
        order = lambda r: (r.created_at is None, r.created_at.timestamp() if r.created_at else 0.0, r.name)  # noqa: E731
        return sum(1 for r in waiting if r.name != run.name and r.status in WAITING and order(r) < order(run))

    @property
    def terminal(self) -> bool:
        return self.run is not None and self.run.status.is_terminal()

    def missing(self, events: tuple[int, int], metrics: tuple[int, int]) -> tuple[list[dict], list[dict]]:
        """What a view lacks, given the (first, last) event sequence and metric id it holds
        contiguously ((0, 0) for nothing): everything outside those ranges."""
        with self.lock:
            return _outside(self.events, "seq", *events), _outside(self.metrics, "id", *metrics)

    # -- derived ----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The small, often-changing state the view shows at the top (synced as one traitlet)."""
        with self.lock:
            run = self.run
            out: dict[str, Any] = {"name": self.name, "event_count": len(self.events), "last_seq": self.last_seq}
            if run is None:
                return out
            out.update(
                status=run.status.value,
                terminal=run.status.is_terminal(),
                model=run.model,
                task_type=run.task_type,
                details=run.details,
                training_duration=run.training_duration,
                created_at=_iso(run.created_at),
                started_at=_iso(run.started_at),
                completed_at=_iso(run.completed_at),
                progress=run.progress,
                experiment_path=run.experiment_path,
                mlflow_experiment_id=run.mlflow_experiment_id,
                mlflow_run_id=run.mlflow_run_id,
                registered_model_name=run.registered_model_name,
                registered_model_version=run.registered_model_version,
                eta_at=_iso(run.estimated_end_time),
            )
            if out["details"] and self._restates_numbers(out["details"]):
                out["details"] = None
            if run.status in WAITING and self.queue_ahead is not None:
                out["queue_ahead"] = self.queue_ahead
            latest = self._latest(EventType.TRAIN_UPDATED.value)
            if latest:
                data = latest["data"]
                for key in ("step", "total_steps", "epoch", "loss", "lr", "tokens_per_second"):
                    if data.get(key) is not None:
                        out[key] = data[key]
                if out.get("progress") is None and data.get("progress") is not None:
                    out["progress"] = data["progress"]
                if not out["eta_at"] and data.get("eta_seconds") is not None and latest["time"] and not run.status.is_terminal():
                    out["eta_at"] = _iso(datetime.fromisoformat(latest["time"]) + timedelta(seconds=float(data["eta_seconds"])))
            evaluated = self._latest(EventType.EVAL_COMPLETED.value)
            if evaluated and evaluated["data"].get("eval_loss") is not None:
                out["eval_loss"] = evaluated["data"]["eval_loss"]
            self._numbers_from_points(out)
            failed = self._latest(EventType.FAILED.value)
            if failed:
                out["failure"] = failed["data"].get("reason") or failed["message"]
            registered = self._latest(EventType.MODEL_REGISTERED.value)
            if registered and not out.get("registered_model_version"):
                out["registered_model_name"] = registered["data"].get("name") or out.get("registered_model_name")
                out["registered_model_version"] = registered["data"].get("version")
            if run.status.is_terminal():
                out["eta_at"] = None
                if run.status.value == "COMPLETED":
                    out["progress"] = 100.0
            return out

    def generations(self) -> list[dict[str, Any]]:
        """Eval generations per checkpoint, oldest first (for text snapshots)."""
        with self.lock:
            return [
                {
                    "checkpoint": e["data"].get("checkpoint"),
                    "step": e["data"].get("step"),
                    "generations": e["data"].get("generations") or [],
                }
                for e in self.events
                if e["type"] == EventType.EVAL_GENERATIONS.value
            ]

    def _numbers_from_points(self, out: dict[str, Any]) -> None:
        """Loss, eval loss, learning rate, tok/s and the step from the latest metric points (the events
        only where there is no point): events come every ~0.5 s, points every step."""
        for key, name in NUMBERS.items():
            if name in self.latest:
                out[key] = self.latest[name]["value"]
        train = self.latest.get("train/loss")
        if train is None:
            return
        step = out.get("step")
        if out.get("epoch") is not None and step:
            out["epoch"] = round(float(out["epoch"]) * train["step"] / step, 4)
        out["step"] = train["step"]
        if out.get("total_steps") and out.get("status") != RunStatus.COMPLETED.value:
            out["progress"] = min(100.0, 100.0 * train["step"] / out["total_steps"])

    def _restates_numbers(self, details: str) -> bool:
        for event in reversed(self.events[-50:]):
            if event["message"] == details:
                return event["type"] in _NUMBER_EVENTS
        return False

    def _latest(self, event_type: str) -> dict[str, Any] | None:
        for event in reversed(self.events):
            if event["type"] == event_type:
                return event
        return None


def _outside(items: list[dict[str, Any]], key: str, first: int, last: int) -> list[dict[str, Any]]:
    if last <= 0:
        return list(items)
    return [item for item in items if item[key] < first or item[key] > last]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
