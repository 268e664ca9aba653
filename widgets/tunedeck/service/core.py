"""The service core: runs, their events and metrics, and the queue that trains them.

Knows nothing of HTTP; the REST app (``tunedeck.service.app``) is one adapter over it and a second
protocol adapter can sit beside it.
"""

from __future__ import annotations

import builtins
import getpass
import json
import logging
import re
import secrets
import shutil
import signal
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TypeGuard

from tunedeck import config
from tunedeck.errors import InvalidInputError, Problem, RunNotFoundError
from tunedeck.inputs import catalog, params
from tunedeck.inputs.spec import RunSpec
from tunedeck.inputs.validate import Devices, RunRequest, build_spec, request_problems
from tunedeck.service.datacheck import DataChecker
from tunedeck.service.devices import Assignment, DevicePool, DeviceScheduler, discover
from tunedeck.service.run_query import RunPage, RunQuery, select
from tunedeck.service.store import RunExistsError, Store
from tunedeck.service.worker_process import WorkerExit, WorkerProcess
from tunedeck.types import Checkpoint, EventType, ModelInfo, RunStatus, TrainingEvent, TrainingRun, create_params, utcnow

log = logging.getLogger(__name__)

ACTIVE = (RunStatus.STARTING, RunStatus.RUNNING, RunStatus.TERMINATING)
WAITING = (RunStatus.PENDING, RunStatus.QUEUED)


class RunService:
    def __init__(self, store: Store, *, max_concurrent: int = 1, worker_command: list[str] | None = None,
                 devices: DevicePool | None = None):
        """``devices``: what runs train on (default: found on this machine, service/devices.py; a bad
        TUNEDECK_DEVICES raises ValueError here, so the service does not start on a wrong guess)."""
        self.store = store
        self.max_concurrent = max_concurrent
        self.devices = DeviceScheduler(devices or discover(), max_concurrent)
        self._worker_command = worker_command
        self._workers: dict[str, WorkerProcess] = {}
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._cancelled: set[str] = set()  # runs a user cancelled (never resumed)
        self.data_checker = DataChecker()  # the form's data check (its tokenizer work runs in a helper process)
        self.scheduler_restarts = 0

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self._recover()
        self._start_scheduler()
        threading.Thread(target=self._supervise, name="tunedeck-supervisor", daemon=True).start()

    def _start_scheduler(self) -> None:
        self._thread = threading.Thread(target=self._schedule_loop, name="tunedeck-scheduler", daemon=True)
        self._thread.start()

    def _supervise(self, interval: float = 1.0) -> None:
        """Restart the scheduling loop if it ever stops (it should not: each launch is guarded)."""
        while not self._stopping:
            time.sleep(interval)
            if not self._stopping and not self.scheduler_alive():
                self.scheduler_restarts += 1
                log.error("the scheduler stopped; restarting it (restart %d)", self.scheduler_restarts)
                self._start_scheduler()

    def scheduler_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def has_work(self) -> bool:
        """A run is training or waiting for a slot."""
        with self._lock:
            if self._workers:
                return True
        return bool(self.store.list_runs(limit=1, statuses=[s.value for s in (*ACTIVE, *WAITING)]))

    def health(self) -> dict[str, Any]:
        with self._lock:
            workers = len(self._workers)
            devices = self.devices.status()
        return {"scheduler": "alive" if self.scheduler_alive() else "stopped",
                "scheduler_restarts": self.scheduler_restarts, "training": workers, "max_concurrent": self.max_concurrent,
                "devices": devices}

    def shutdown(self) -> None:
        """Stop scheduling and end running workers: the runs are marked STOPPED."""
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
            workers = list(self._workers.items())
        self.data_checker.close()
        for name, worker in workers:
            self._finish(name, RunStatus.STOPPED, EventType.STOPPED, "Stopped: the tunedeck service shut down")
            worker.kill()

    def _recover(self) -> None:
        """Runs that were active when the service last stopped: re-attach to a worker that still trains
        (its journal is applied from where the store stopped, so no event is lost or doubled); for a
        worker that died meanwhile, apply what it journaled, then resume the run or fail it."""
        for run in self.store.list_runs(statuses=[s.value for s in ACTIVE]):
            state = self.store.worker(run.name)
            if state.pid is None:
                self._finish(
                    run.name, RunStatus.FAILED, EventType.FAILED, "Failed: the tunedeck service stopped while this run was active"
                )
                continue
            worker = self._worker(run.name, Path(run.run_dir or config.runs_root() / run.name), state.journal_offset)
            worker.failure, worker.orphaned = state.failure, state.orphaned
            held = Assignment.from_json(state.devices)
            with self._lock:
                self._workers[run.name] = worker
                if held is not None:  # its pinning and CUDA_VISIBLE_DEVICES are its own: no other run gets them
                    self.devices.adopt(run.name, held)
            if worker.attach(state.pid, state.pid_start):
                self.store.add_event(run.name, EventType.STARTED.value,
                                     f"Service restarted: re-attached to the worker (pid {state.pid})", {"pid": state.pid})
                if run.status == RunStatus.TERMINATING:
                    worker.cancel()

    # -- the API ----------------------------------------------------------------------------------
    def validate(self, req: RunRequest) -> list[Problem]:
        _, problems = build_spec(req, "validation-check", check_data=True, devices=self._devices())
        return problems

    def _devices(self) -> Devices:
        pool = self.devices.pool
        return Devices(len(pool.ids), pool.describe(), pool.kind, pool.hide_gpus)

    def create(self, req: RunRequest) -> TrainingRun:
        req.created_by = req.created_by or getpass.getuser()
        name = self._new_name(req.model)
        spec = None
        if req.validate_inputs:
            spec, problems = build_spec(req, name, check_data=True, devices=self._devices())
            if problems:
                raise InvalidInputError(problems)  # nothing stored
        else:  # still the cheap checks: types, lengths, names, path syntax, num_devices (nothing is read)
            problems = request_problems(req, self._devices())
            named = {p.field for p in problems}
            problems += [Problem(f, "is required") for f in create_params.required() if not getattr(req, f) and f not in named]
            if problems:
                raise InvalidInputError(problems)
        run = TrainingRun(name=name, status=RunStatus.PENDING, created_at=utcnow(), details="Waiting to start",
                          run_dir=str(config.runs_root() / name), **_recorded(req, name))
        (config.runs_root() / name).mkdir(parents=True, exist_ok=True)
        (config.runs_root() / name / "request.json").write_text(json.dumps(req.to_dict(), indent=2, default=str))
        if spec is not None:
            pin_data_versions(spec, config.runs_root() / name)
        try:
            self.store.add_run(run, EventType.CREATED.value, f"Run {name} created")
        except RunExistsError:  # a 6-character collision: try once more with a fresh name
            return self.create(req)
        with self._lock:
            why = self._why_waiting(run)
            if why:
                run, _ = self.store.update_run(name, status=RunStatus.QUEUED, details=why,
                                               event=(EventType.QUEUED.value, why, {}))
            self._wake.notify_all()
        return run

    def _why_waiting(self, run: TrainingRun) -> str | None:
        """Why a new run cannot start at once (None: it can): the free slots and devices go to the
        waiting runs oldest first, and one that cannot have its devices holds up those after it."""
        slots, free = self.max_concurrent - len(self._workers), len(self.devices.free())
        waiting = self.store.list_runs(statuses=[s.value for s in WAITING])
        ahead = 0
        for other in sorted(waiting, key=lambda r: (r.created_at.timestamp() if r.created_at else 0.0, r.name)):
            processes = self._processes(other) or 1
            need = self.devices.need(processes)
            if other.name == run.name:
                if slots <= 0:
                    return "Queued: waiting for a free training slot"
                if need > free:
                    return f"Queued: {self.devices.waiting_reason(processes)}"
                return f"Queued: behind {ahead} earlier run{'s' if ahead > 1 else ''} waiting for devices" if ahead else None
            if slots > 0 and need <= free and not ahead:
                slots, free = slots - 1, free - need
            else:
                ahead += 1
        return None

    def _processes(self, run: TrainingRun) -> int | None:
        """The processes (devices) a waiting run asks for; None when its request cannot be read (its launch fails it)."""
        try:
            req = json.loads((Path(run.run_dir or config.runs_root() / run.name) / "request.json").read_text())
            value = req.get("num_devices") or config.num_devices()
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None

    def get(self, name: str) -> TrainingRun:
        run = self.store.get_run(name)
        if run is None:
            raise RunNotFoundError(f"no training run named {name!r}")
        return run

    def list(self, limit: int | None = None, statuses: list[str] | None = None) -> list[TrainingRun]:
        return self.store.list_runs(limit, statuses)

    def find(self, query: RunQuery) -> RunPage:
        """One page of the runs matching ``query``, newest first (service/run_query.py)."""
        return select(self.store.list_runs(statuses=query.statuses), query)

    def cancel(self, name: str) -> TrainingRun:
        run = self.get(name)
        if run.status.is_terminal():
            return run
        with self._lock:
            worker = self._workers.get(name)
            if worker is None:  # still waiting: nothing to stop
                return self._finish(name, RunStatus.STOPPED, EventType.STOPPED, "Stopped by user before it started")
            self._cancelled.add(name)
            run, _ = self.store.update_run(
                name, status=RunStatus.TERMINATING, details="Stopping",
                event=(EventType.CANCEL_REQUESTED.value, "Cancel requested: stopping the worker", {}),
            )
        worker.cancel()
        return run

    def delete(self, name: str) -> None:
        run = self.get(name)
        if not run.status.is_terminal():
            self.cancel(name)
            with self._lock:
                worker = self._workers.get(name)
            if worker and not worker.wait(timeout=10):
                worker.kill()
        self.store.delete_run(name)
        shutil.rmtree(config.runs_root() / name, ignore_errors=True)

    # (below, builtins.list: the method list() above shadows the builtin in this class's scope)
    def events(self, name: str, after: int = 0, limit: int | None = None) -> builtins.list[TrainingEvent]:
        self.get(name)
        return self.store.events(name, after, limit)

    def metrics(self, name: str, after: int = 0, limit: int | None = None) -> builtins.list[dict[str, Any]]:
        self.get(name)
        return self.store.metrics(name, after, limit)

    def checkpoints(self, name: str) -> builtins.list[Checkpoint]:
        run = self.get(name)
        folder = Path(run.run_dir or config.runs_root() / name) / "checkpoints"
        latest_file = folder / "latest-sharded-rank0.symlink"
        latest = latest_file.read_text().strip() if latest_file.is_file() else None
        found = []
        for meta_file in sorted(folder.glob("*/checkpoint.json")):
            meta = json.loads(meta_file.read_text())
            found.append(
                Checkpoint(
                    name=meta_file.parent.name,
                    path=str(meta_file.parent),
                    epoch=int(meta.get("epoch", 0)),
                    batch=int(meta.get("batch", 0)),
                    created_at=datetime.fromisoformat(meta["created_at"]) if meta.get("created_at") else None,
                    is_latest=meta_file.parent.name == latest,
                )
            )
        return sorted(found, key=lambda c: c.batch)

    def models(self) -> builtins.list[ModelInfo]:
        return catalog.list_models()

    def data_check(self, path: str, task_type: str, model: str | None, context_length: int | None) -> dict[str, Any]:
        return self.data_checker.check(path, task_type, model, context_length)

    # -- scheduling -------------------------------------------------------------------------------
    def _schedule_loop(self) -> None:
        while True:
            try:
                with self._lock:
                    while not self._stopping and not self._next_waiting():
                        self._wake.wait(timeout=5)
                    if self._stopping:
                        return
                    run = self._next_waiting()
                    if run is not None:
                        self._launch_or_fail(run)
            except Exception:  # e.g. the store is briefly unreadable: keep scheduling
                log.exception("scheduling failed; trying again")
                time.sleep(1)

    def _launch_or_fail(self, run: TrainingRun) -> None:
        """Any failure to launch one run fails that run with the reason; the loop goes on."""
        try:
            self._launch(run)
        except Exception as exc:
            log.exception("could not launch %s", run.name)
            self._workers.pop(run.name, None)
            self.devices.release(run.name)
            reason = f"could not start the run: {type(exc).__name__}: {exc}"
            self._finish(run.name, RunStatus.FAILED, EventType.FAILED, f"Failed: {reason}", {"reason": reason})

    def _next_waiting(self) -> TrainingRun | None:
        """The oldest waiting run when a slot and its devices are free; while its devices are not, it
        says so (its details and a QUEUED event, once per reason) and every later run waits too."""
        if len(self._workers) >= self.max_concurrent:
            return None
        waiting = self.store.list_runs(statuses=[s.value for s in WAITING])
        if not waiting:
            return None
        run = min(waiting, key=lambda r: r.created_at.timestamp() if r.created_at else 0.0)
        processes = self._processes(run)
        if processes is None or processes > len(self.devices.pool.ids) or self.devices.fits_now(processes):
            return run  # (asking more devices than there are: its launch fails it, saying so)
        why = f"Queued: {self.devices.waiting_reason(processes)}"
        if run.details != why:
            self.store.update_run(run.name, status=RunStatus.QUEUED, details=why,
                                  event=(EventType.QUEUED.value, why, {"devices": self.devices.need(processes)}))
        return None

    def _launch(self, run: TrainingRun) -> None:
        req = RunRequest.from_dict(json.loads((Path(run.run_dir or config.runs_root() / run.name) / "request.json").read_text()))
        spec, problems = build_spec(req, run.name, check_data=False, devices=self._devices())
        if problems or spec is None:
            reason = "; ".join(str(p) for p in problems)
            self._finish(
                run.name,
                RunStatus.FAILED,
                EventType.FAILED,
                f"Failed: {reason}",
                {"reason": reason, "problems": [p.to_dict() for p in problems]},
            )
            return
        pin_data_versions(spec, Path(spec.run_dir))
        state = self.store.worker(run.name)
        if state.attempts:  # an autoresume: the worker finds the latest checkpoint and goes on from it
            spec.resume_from = "latest"
            spec.resume_mlflow_run_id = run.mlflow_run_id
        devices = self.devices.take(run.name, spec.num_devices)
        if devices is None:  # not expected: _next_waiting saw them free under the same lock
            self._wake.wait(timeout=1)
            return
        run_dir = Path(spec.run_dir)
        spec.save(run_dir / "spec.json")
        worker = self._worker(run.name, run_dir, state.journal_offset, processes=spec.num_devices, devices=devices)
        try:
            worker.start()
        except OSError as exc:
            self.devices.release(run.name)
            self._finish(run.name, RunStatus.FAILED, EventType.FAILED, f"Failed: could not start the worker: {exc}")
            return
        self._workers[run.name] = worker
        self.store.set_worker(run.name, pid=worker.pid, pid_start=worker.pid_start, failure=None, orphaned=0,
                              devices=devices.to_json())
        self.store.update_run(
            run.name, status=RunStatus.STARTING, started_at=run.started_at or utcnow(), details="Starting",
            event=(EventType.STARTED.value, f"Worker started (pid {worker.pid}) on {devices.describe()}",
                   {"pid": worker.pid, "devices": list(devices.ids), "device_kind": devices.kind}),
        )

    def _worker(self, name: str, run_dir: Path, journal_offset: int, processes: int = 1,
                devices: Assignment | None = None) -> WorkerProcess:
        return WorkerProcess(
            run_dir,
            on_report=lambda msg, offset: self._on_report(name, msg, offset),
            on_exit=lambda ex: self._on_exit(name, ex),
            command=None if self._worker_command is None else [*self._worker_command, str(run_dir)],
            journal_offset=journal_offset,
            processes=processes,
            devices=devices,
        )

    def _on_report(self, name: str, msg: dict[str, Any], journal_offset: int | None = None) -> None:
        """Apply one journal line; the store records ``journal_offset`` in the same transaction."""
        kind = msg.get("kind")
        if kind == "metrics":
            self.store.add_metrics(name, int(msg.get("step", 0)), msg.get("values") or {}, journal_offset=journal_offset)
            return
        if kind == "run":
            run_fields = {k: v for k, v in (msg.get("fields") or {}).items() if k in _WORKER_FIELDS}
            self.store.update_run(name, journal_offset=journal_offset, **run_fields)
            return
        if kind == "event":
            etype, message, data = str(msg.get("type")), str(msg.get("message", "")), msg.get("data") or {}
            fields: dict[str, Any] = {"details": message}
            run = self.store.get_run(name)
            if run and run.status == RunStatus.STARTING:
                fields["status"] = RunStatus.RUNNING
            if etype == EventType.TRAIN_UPDATED.value and "progress" in data:
                fields["progress"] = data["progress"]
            if run and run.status == RunStatus.TERMINATING:
                fields.pop("details")
            if etype == EventType.TRAIN_RESUMED.value and isinstance(data.get("step"), int):
                self.store.delete_metrics_after(name, data["step"])  # those steps are trained again
            self.store.update_run(name, event=(etype, message, data), journal_offset=journal_offset, **fields)
            return
        worker_fields: dict[str, Any] = {"journal_offset": journal_offset} if journal_offset is not None else {}
        if kind == "failure" and self.store.worker(name).failure is None:  # the first rank's to fail
            worker_fields["failure"] = str(msg.get("reason") or "")
        elif kind == "orphaned":
            worker_fields["orphaned"] = 1
        if worker_fields:
            self.store.set_worker(name, **worker_fields)

    def _on_exit(self, name: str, ex: WorkerExit) -> None:
        with self._lock:
            self._workers.pop(name, None)
            self.devices.release(name)
            self._wake.notify_all()
            cancelled = ex.cancelled or name in self._cancelled
            self._cancelled.discard(name)
        run = self.store.get_run(name)
        if run is None or run.status.is_terminal():
            return
        if (cancelled or run.status == RunStatus.TERMINATING) and not (ex.returncode == 0 and run.registered_model_version):
            self._finish(name, RunStatus.STOPPED, EventType.STOPPED, "Stopped by user", {"returncode": ex.returncode})
        elif ex.returncode in (None, EXIT_STOPPED) or ex.orphaned or (ex.returncode < 0 and not ex.failure):
            self._resume_or_fail(run, ex)
        elif ex.returncode == 0:
            msg = "Completed" + (" (the cancel came after the model was registered)" if cancelled else "")
            if run.registered_model_version:
                msg += f": registered {run.registered_model_name} version {run.registered_model_version}"
            self._finish(
                name,
                RunStatus.COMPLETED,
                EventType.COMPLETED,
                msg,
                {"registered_model_name": run.registered_model_name, "registered_model_version": run.registered_model_version},
                progress=100.0,
            )
        else:
            reason = ex.failure or _describe_exit(ex.returncode, ex.log_tail)
            self._finish(
                name, RunStatus.FAILED, EventType.FAILED, f"Failed: {reason}", {"reason": reason, "returncode": ex.returncode}
            )

    def _resume_or_fail(self, run: TrainingRun, ex: WorkerExit) -> None:
        """The worker died without finishing (killed, crashed, lost its service): resume the run from
        its latest checkpoint, up to TUNEDECK_AUTORESUME times, else fail it with the reason."""
        if ex.orphaned:
            why = "its worker stopped: no tunedeck service owned it"
        elif ex.returncode is None:
            why = "its worker died while the tunedeck service was down"
        else:
            why = _describe_exit(ex.returncode, ex.log_tail)
        state = self.store.worker(run.name)
        limit = config.autoresume()
        if self._stopping or state.attempts >= limit:
            tried = f" (after {state.attempts} resume(s))" if state.attempts else ""
            self._finish(
                run.name,
                RunStatus.FAILED,
                EventType.FAILED,
                f"Failed: {why}{tried}",
                {"reason": why, "returncode": ex.returncode},
            )
            return
        attempt = state.attempts + 1
        self.store.set_worker(run.name, attempts=attempt, pid=None, pid_start=None)
        message = f"{why[0].upper()}{why[1:]}; resuming from the latest checkpoint (attempt {attempt} of {limit})"
        self.store.update_run(run.name, status=RunStatus.PENDING, details=message,
                              event=(EventType.QUEUED.value, message, {"reason": why, "attempt": attempt, "autoresume": True}))
        with self._lock:
            self._wake.notify_all()

    def _finish(
        self, name: str, status: RunStatus, etype: EventType, message: str, data: dict | None = None, **fields
    ) -> TrainingRun:
        run, _ = self.store.update_run(
            name, status=status, completed_at=utcnow(), details=message, estimated_end_time=None,
            event=(etype.value, message, data or {}), **fields,
        )
        return run

    def _new_name(self, model: str) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", str(model).rstrip("/").split("/")[-1].lower()).strip("-")[:40] or "run"
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        return f"{slug}-{''.join(secrets.choice(alphabet) for _ in range(6))}"


EXIT_STOPPED = 143  # the worker's exit code after SIGTERM (training/worker.py)
_WORKER_FIELDS = {
    "adapter",
    "mlflow_experiment_id",
    "mlflow_run_id",
    "registered_model_name",
    "registered_model_version",
    "estimated_end_time",
    "progress",
    "learning_rate",
    "context_length",
    "training_duration",
}  # the values the run uses, defaults filled in


def _describe_exit(code: int, tail: str) -> str:
    if code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = f"signal {-code}"
        what = f"the training worker was killed by {sig}" + (" (out of memory?)" if sig == "SIGKILL" else "")
    else:
        what = f"the training worker exited with code {code}"
    last = tail.strip().splitlines()[-1] if tail.strip() else ""
    return f"{what}; last log line: {last}" if last else what


DATA_VERSIONS = "data_versions.json"


def pin_data_versions(spec: RunSpec, run_dir: Path) -> None:
    """The Delta table versions a run trains on (inputs/tables.py), fixed when they are first resolved
    (at create() when it checks the inputs, else at the first launch) and kept for every later launch,
    so rows written to a table while the run waits in the queue, or before an autoresume, never change
    what it reads. Kept in RUN_DIR/data_versions.json."""
    path = run_dir / DATA_VERSIONS
    pinned: dict[str, int | None] = json.loads(path.read_text()) if path.exists() else {}
    for key, source in (("train_data", spec.train_data), ("eval_data", spec.eval_data)):
        if source is None or source.kind != "delta":
            continue
        if key in pinned:
            source.version = pinned[key]
        else:
            pinned[key] = source.version
    if pinned:
        path.write_text(json.dumps(pinned))


def _recorded(req: RunRequest, name: str) -> dict[str, Any]:
    """The run record's copy of every create() parameter (TrainingRun has a field for each:
    tests/api/test_create_params.py), normalized: numbers as numbers, prompts as a list, the task in
    capitals, the default experiment path filled in. Values the worker settles (defaults of duration,
    learning rate, context length) are recorded when it starts."""
    return {
        **req.to_dict(),
        "task_type": (req.task_type or params.DEFAULT_TASK_TYPE).upper(),
        "eval_prompts": [req.eval_prompts] if isinstance(req.eval_prompts, str) else req.eval_prompts,
        "learning_rate": float(req.learning_rate) if _is_number(req.learning_rate) else None,
        "context_length": int(req.context_length) if _is_int(req.context_length) else None,
        "experiment_path": req.experiment_path or f"/Users/{req.created_by}/{name}",
        "adapter": _adapter_or_none(req.adapter),
    }


def _is_number(v: Any) -> TypeGuard[str | float]:
    try:
        float(v)
        return v is not None and v != ""
    except (TypeError, ValueError):
        return False


def _is_int(v: Any) -> TypeGuard[str | int]:
    try:
        int(str(v).replace("_", ""))
        return v is not None
    except (TypeError, ValueError):
        return False


def _adapter_or_none(value: Any) -> dict | None:
    """The resolved adapter settings for the run record (a bad value is reported when the run starts)."""
    try:
        return params.parse_adapter(value)
    except ValueError:
        return None
