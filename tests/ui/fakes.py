"""An in-memory stand-in for ServiceClient, so the widgets' logic is tested without a service."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from tunedeck.errors import InvalidInputError, Problem, RunNotFoundError
from tunedeck.types import ModelInfo, RunStatus, TrainingEvent, TrainingRun

T0 = datetime(2026, 1, 2, 12, 0, 0, tzinfo=timezone.utc)
TINY = ModelInfo("tiny-chat", 1024, "models-folder", "/models/tiny-chat", 1e-3, 147_776)
BIG = ModelInfo("big-chat", 8192, "models-folder", "/models/big-chat", 5e-5, 134_000_000)


class FakeClient:
    """Runs, events and metrics held in dicts; records every read with its cursor."""

    def __init__(self) -> None:
        self.runs: dict[str, TrainingRun] = {}
        self.event_log: dict[str, list[TrainingEvent]] = {}
        self.metric_log: dict[str, list[dict[str, Any]]] = {}
        self.calls: list[tuple] = []
        self.create_error: Exception | None = None
        self.created: list[dict[str, Any]] = []
        self.data_check_result: dict[str, Any] = {"ok": True, "rows": 3}
        self._metric_id = 0

    # -- building state ---------------------------------------------------------------------------
    def add_run(self, name: str, status: RunStatus = RunStatus.RUNNING, **fields: Any) -> TrainingRun:
        run = TrainingRun(name=name, status=status, model="tiny-chat", train_data_path="/d/train.jsonl",
                          register_to="main.demo", created_at=T0, started_at=T0, **fields)
        self.runs[name] = run
        self.event_log.setdefault(name, [])
        self.metric_log.setdefault(name, [])
        self.emit(name, "CREATED", f"Run {name} created")
        return run

    def emit(self, run_name: str, type: str, message: str = "", **data: Any) -> TrainingEvent:
        log = self.event_log[run_name]
        event = TrainingEvent(type, T0 + timedelta(seconds=len(log)), message or type, len(log) + 1, data)
        log.append(event)
        return event

    def point(self, name: str, step: int, metric: str, value: float) -> None:
        self._metric_id += 1
        self.metric_log[name].append({"id": self._metric_id, "step": step, "name": metric, "value": value, "time": T0.isoformat()})

    def train_step(self, name: str, step: int, total: int, loss: float) -> None:
        self.emit(name, "TRAIN_UPDATED", f"[ba {step}/{total}] loss {loss:.4f}", step=step, total_steps=total,
                  epoch=1, progress=100.0 * step / total, loss=loss, lr=1e-3, tokens_per_second=1000.0, eta_seconds=10.0)
        self.point(name, step, "train/loss", loss)
        self.point(name, step, "train/lr", 1e-3)

    def set_status(self, name: str, status: RunStatus, **fields: Any) -> None:
        run = self.runs[name]
        for key, value in fields.items():
            setattr(run, key, value)
        run.status = status

    # -- the ServiceClient surface the widgets use ------------------------------------------------
    def get_run(self, name: str) -> TrainingRun:
        self.calls.append(("get_run", name))
        if name not in self.runs:
            raise RunNotFoundError(f"no training run named {name!r}")
        return TrainingRun.from_dict(self.runs[name].to_dict())

    def events(self, name: str, after: int = 0, limit: int | None = None) -> list[TrainingEvent]:
        self.calls.append(("events", name, after))
        if name not in self.runs:
            raise RunNotFoundError(name)
        return [e for e in self.event_log[name] if e.sequence > after]

    def metrics(self, name: str, after: int = 0) -> list[dict[str, Any]]:
        self.calls.append(("metrics", name, after))
        return [m for m in self.metric_log[name] if m["id"] > after]

    def list_runs(self, limit: int | None = None, statuses: list[str] | None = None) -> list[TrainingRun]:
        self.calls.append(("list_runs",))
        return sorted(self.runs.values(), key=lambda r: r.created_at, reverse=True)

    def cancel_run(self, name: str) -> TrainingRun:
        self.calls.append(("cancel_run", name))
        self.set_status(name, RunStatus.STOPPED)
        self.emit(name, "STOPPED", "Stopped by user")
        return self.runs[name]

    def delete_run(self, name: str) -> None:
        self.calls.append(("delete_run", name))
        self.runs.pop(name, None)

    def models(self) -> list[ModelInfo]:
        return [TINY, BIG]

    def data_check(self, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("data_check", params))
        return self.data_check_result

    def create_run(self, params: dict[str, Any]) -> TrainingRun:
        self.created.append(params)
        if self.create_error is not None:
            raise self.create_error
        run = self.add_run(f"tiny-chat-{len(self.created):06d}", RunStatus.PENDING)
        return run

    def validate(self, params: dict[str, Any]) -> list[Problem]:
        return []

    #: GET /api/health as a service on 2 CPU cores answers it (tests/ui/test_form_devices.py holds the real
    #: service's answer to this shape)
    health_result: dict[str, Any] = {
        "status": "ok", "scheduler": "alive", "training": 0, "max_concurrent": 1,
        "devices": {"kind": "cpu", "total": 2, "free": 2, "source": "CPU affinity", "held": {},
                    "described": "2 CPU cores (0-1; CPU affinity)", "default_num_devices": 1},
    }

    def health(self) -> dict[str, Any]:
        self.calls.append(("health",))
        return self.health_result

    # -- the estimate (service/estimate.py): canned answers, recorded per run as the service does --
    estimate_result: dict[str, Any] = {
        "ok": True, "seconds": 90.0, "tokens_per_epoch": 1200, "total_steps": 40, "tokens_per_second": 500.0,
        "peak_memory_bytes": 2**30, "message": "~1,200 tokens/epoch, 40 steps, ~1m 30s on this machine "
        "(measured 500 tok/s, probe took 1.2 s), peak ~1.0 GiB",
    }

    def estimate(self, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("estimate", params))
        return dict(self.estimate_result)

    def record_estimate(self, name: str, estimate: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("record_estimate", name))
        self.recorded_estimates = {**getattr(self, "recorded_estimates", {}), name: estimate}
        return self.run_estimate(name)

    def run_estimate(self, name: str) -> dict[str, Any]:
        if name not in self.runs:
            raise RunNotFoundError(name)
        estimate = getattr(self, "recorded_estimates", {}).get(name)
        run = self.runs[name]
        actual = ({"seconds": run.duration_seconds, "tokens_per_second": 450.0}
                  if run.status is RunStatus.COMPLETED and run.duration_seconds is not None else None)
        return {"estimate": estimate, "actual": actual}


def invalid(*problems: tuple) -> InvalidInputError:
    return InvalidInputError([Problem(*p) for p in problems])
