"""The objects the API returns: runs, events, statuses, models, checkpoints.

They cross the HTTP boundary as plain JSON (``to_dict`` / ``from_dict``) and render in a notebook as
tables whose every cell is escaped text.
"""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Generic, Iterable, TypeVar

__all__ = [
    "Checkpoint",
    "LoRA",
    "EventType",
    "ModelInfo",
    "RunStatus",
    "TrainingEvent",
    "TrainingRun",
    "TunedeckList",
]


class RunStatus(str, Enum):
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    TERMINATING = "TERMINATING"
    COMPLETED = "COMPLETED"
    STOPPED = "STOPPED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"

    def is_terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.STOPPED, RunStatus.FAILED)

    @classmethod
    def parse(cls, value: str) -> "RunStatus":
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN

    def __str__(self) -> str:
        return self.value


class EventType(str, Enum):
    CREATED = "CREATED"
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    DATA_VALIDATED = "DATA_VALIDATED"
    MODEL_INITIALIZED = "MODEL_INITIALIZED"
    TRAIN_UPDATED = "TRAIN_UPDATED"
    TRAIN_RESUMED = "TRAIN_RESUMED"
    EVAL_COMPLETED = "EVAL_COMPLETED"
    EVAL_GENERATIONS = "EVAL_GENERATIONS"
    CHECKPOINT_SAVED = "CHECKPOINT_SAVED"
    TRAIN_FINISHED = "TRAIN_FINISHED"
    MODEL_REGISTERED = "MODEL_REGISTERED"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"

    def __str__(self) -> str:
        return self.value


TERMINAL_EVENTS = frozenset({EventType.COMPLETED.value, EventType.FAILED.value, EventType.STOPPED.value})


def _parse_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _time_str(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class LoRA:
    """Train low-rank adapters (PEFT LoRA) on a frozen base model instead of every weight.

    A tunedeck option the reference does not have: ``create(..., adapter="lora")`` for these defaults,
    ``adapter="qlora"`` for a 4-bit base (CUDA with bitsandbytes), or ``adapter=LoRA(rank=32, ...)``.
    LoRA needs about a third of the memory of full fine-tuning at 7B and trains faster per token; the
    registered model has the adapter merged in, so it loads like any fine-tuned model.

    rank: the adapters' rank r. alpha: scaling numerator (alpha / r scales the update); None = 2 * rank.
    target_modules: names of the linear layers to adapt; None = every linear layer but the output head
    (adapting all of them is what lets LoRA match full fine-tuning: the demo's facts are learned 4/4 this
    way and 0/4 with attention only), "attention" = the attention projections only (q, k, v, o in
    Llama-style models: fewer adapter weights, a little faster).
    quantize_base: None, or "4bit" to hold the frozen base in 4-bit NF4 (QLoRA; CUDA + bitsandbytes only).
    dropout: 0 by default: a dropout above 0 makes PEFT keep a copy of every adapted layer's input
    (measured on SmolLM2 at 1,024-token steps: +0.6 GiB and -25% tok/s for dropout 0.05).
    """

    rank: int = 16
    alpha: float | None = None
    dropout: float = 0.0
    target_modules: tuple[str, ...] | str | None = None
    quantize_base: str | None = None

    def to_dict(self) -> dict[str, Any]:
        modules = self.target_modules
        return {
            "type": "lora",
            "rank": self.rank,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "target_modules": list(modules) if isinstance(modules, (list, tuple)) else modules,
            "quantize_base": self.quantize_base,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoRA":
        modules = d.get("target_modules")
        return cls(
            rank=d.get("rank", 16),
            alpha=d.get("alpha"),
            dropout=d.get("dropout", 0.0),
            target_modules=tuple(modules) if isinstance(modules, (list, tuple)) else modules,
            quantize_base=d.get("quantize_base"),
        )


@dataclass
class TrainingEvent:
    """One step in a run's life. ``sequence`` counts from 1 within a run; read on with ``after=``."""

    type: str
    time: datetime
    message: str
    sequence: int = 0
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "time": _time_str(self.time),
            "message": self.message,
            "sequence": self.sequence,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainingEvent":
        return cls(d["type"], _parse_time(d["time"]), d.get("message", ""), d.get("sequence", 0), d.get("data") or {})

    def _row(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "time": self.time, "type": self.type, "message": self.message}


@dataclass
class TrainingRun:
    """A training run and every parameter it was created with."""

    name: str
    status: RunStatus
    model: str
    train_data_path: str
    register_to: str
    task_type: str = "CHAT_COMPLETION"
    eval_data_path: str | None = None
    eval_prompts: list[str] | None = None
    custom_weights_path: str | None = None
    training_duration: str | None = None
    learning_rate: float | None = None
    context_length: int | None = None
    experiment_path: str | None = None
    data_prep_cluster_id: str | None = None
    validate_inputs: bool = True
    adapter: dict[str, Any] | None = None  # tunedeck option: LoRA(...).to_dict(); None = full fine-tuning
    created_by: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    estimated_end_time: datetime | None = None
    details: str | None = None
    progress: float | None = None
    mlflow_experiment_id: str | None = None
    mlflow_run_id: str | None = None
    registered_model_name: str | None = None
    registered_model_version: int | None = None
    run_dir: str | None = None

    _TIMES = ("created_at", "started_at", "completed_at", "estimated_end_time")

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.completed_at or utcnow()
        return (end - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["status"] = self.status.value
        for key in self._TIMES:
            d[key] = _time_str(getattr(self, key))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainingRun":
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        kwargs["status"] = RunStatus.parse(d.get("status", "UNKNOWN"))
        for key in cls._TIMES:
            kwargs[key] = _parse_time(d.get(key))
        return cls(**kwargs)

    def refresh(self) -> "TrainingRun":
        """The run as the service sees it now."""
        from tunedeck import foundation_model

        return foundation_model.get(self.name)

    def _row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "model": self.model,
            "task_type": self.task_type,
            "created_at": self.created_at,
            "duration_s": None if self.duration_seconds is None else round(self.duration_seconds, 1),
            "registered_model": (
                f"{self.registered_model_name} v{self.registered_model_version}"
                if self.registered_model_version
                else None
            ),
        }

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>{html.escape(_cell(v))}</td></tr>"
            for k, v in self.to_dict().items()
            if v not in (None, [], "")
        )
        return f"<table class='tunedeck-run'>{rows}</table>"

    def _ipython_display_(self) -> None:
        """In a notebook a run shows its live monitor, or a table where widgets are unavailable."""
        from IPython.display import display

        try:
            from tunedeck.ui import monitor
        except ImportError:  # the widgets are optional for a bare API client
            display({"text/html": self._repr_html_(), "text/plain": repr(self)}, raw=True)
            return
        display(monitor(self))


@dataclass
class ModelInfo:
    """A model this service can train."""

    name: str
    max_context_length: int
    source: str
    path: str
    default_learning_rate: float | None = None
    parameters: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelInfo":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def _row(self) -> dict[str, Any]:
        return self.to_dict()


@dataclass
class Checkpoint:
    """A saved snapshot of a run, usable as ``custom_weights_path``."""

    name: str
    path: str
    epoch: int
    batch: int
    created_at: datetime | None = None
    is_latest: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["created_at"] = _time_str(self.created_at)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Checkpoint":
        return cls(d["name"], d["path"], d["epoch"], d["batch"], _parse_time(d.get("created_at")), d.get("is_latest", False))

    def _row(self) -> dict[str, Any]:
        return self.to_dict()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


T = TypeVar("T")


class TunedeckList(list, Generic[T]):
    """A list of API objects that converts with ``to_pandas()`` and shows as a table in a notebook."""

    def __init__(self, items: Iterable[T] = ()):
        super().__init__(items)

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame([item._row() for item in self])

    def _repr_html_(self) -> str:
        rows = [item._row() for item in self]
        if not rows:
            return "<p><em>(empty)</em></p>"
        head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(_cell(v))}</td>" for v in r.values()) + "</tr>"
            for r in rows
        )
        return f"<table class='tunedeck-table'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
