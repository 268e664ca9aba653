"""The objects the API returns: runs, events, statuses, models, checkpoints.

They cross the HTTP boundary as plain JSON (``to_dict`` / ``from_dict``) and render in a notebook as
tables whose every cell is escaped text. Their names, attributes and methods are those of the
reference client's ``databricks.model_training.types`` (databricks-genai 1.1.8), plus tunedeck's own;
the submodules ``run_status``, ``training_run``, ``training_constants``, ``train_config`` and
``common`` re-export them under the reference's module names.

This package imports no other part of tunedeck. What a run does through the API (``refresh()``,
``cancel()``, ``get_events()``, the lazily read ``events``) goes through ``_api``, which
tunedeck.foundation_model installs when it is imported; how a run shows in a notebook goes through
``_display``, which the tunedeck package installs (its live monitor, when the widgets are there).
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum, EnumMeta
from typing import Any, Generic, Protocol, TypeVar, Union

__all__ = [
    "Checkpoint",
    "CheckpointPath",
    "EventType",
    "LoRA",
    "ModelInfo",
    "PaginatedList",
    "RunStatus",
    "TrainConfig",
    "TrainingConstants",
    "TrainingEvent",
    "TrainingModelConstants",
    "TrainingRun",
    "TunedeckList",
]


class _StatusMeta(EnumMeta):
    """Gives RunStatus the reference's class property ``RunStatus.order``."""

    @property
    def order(cls) -> list[RunStatus]:
        """The statuses from latest to earliest in a run's life (the reference's order)."""
        return [
            RunStatus.FAILED,
            RunStatus.STOPPED,
            RunStatus.COMPLETED,
            RunStatus.TERMINATING,
            RunStatus.RUNNING,
            RunStatus.STARTING,
            RunStatus.QUEUED,
            RunStatus.PENDING,
            RunStatus.UNKNOWN,
        ]


class RunStatus(str, Enum, metaclass=_StatusMeta):
    """A run's status. Compares by lifecycle, as the reference's does:
    UNKNOWN < PENDING < QUEUED < STARTING < RUNNING < TERMINATING < COMPLETED < STOPPED < FAILED.

    Also a ``str`` (``RunStatus.RUNNING == "RUNNING"``), which the reference's is not.
    """

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    TERMINATING = "TERMINATING"
    COMPLETED = "COMPLETED"
    STOPPED = "STOPPED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"

    def _rank(self, other: object) -> tuple[int, int]:
        if not isinstance(other, RunStatus):
            raise TypeError(f"Cannot compare order of ``RunStatus`` and {type(other)}")
        order = type(self).order
        return order.index(self), order.index(other)

    def __lt__(self, other: object) -> bool:
        mine, theirs = self._rank(other)
        return mine > theirs

    def __gt__(self, other: object) -> bool:
        mine, theirs = self._rank(other)
        return mine < theirs

    def __le__(self, other: object) -> bool:
        mine, theirs = self._rank(other)
        return mine >= theirs

    def __ge__(self, other: object) -> bool:
        mine, theirs = self._rank(other)
        return mine <= theirs

    __hash__ = str.__hash__

    def before(self, other: RunStatus, inclusive: bool = False) -> bool:
        """True if this status usually comes before ``other`` (``RUNNING.before(COMPLETED)``)."""
        return (self < other) or (inclusive and self == other)

    def after(self, other: RunStatus, inclusive: bool = False) -> bool:
        """True if this status usually comes after ``other`` (``COMPLETED.after(RUNNING)``)."""
        return (self > other) or (inclusive and self == other)

    def is_terminal(self) -> bool:
        """COMPLETED, STOPPED or FAILED: the run will not change any more."""
        return self.after(RunStatus.COMPLETED, inclusive=True)

    @classmethod
    def from_string(cls, run_status: str | RunStatus) -> RunStatus:
        """'RUNNING', 'running' or 'Running' -> RunStatus.RUNNING; anything else -> UNKNOWN."""
        if isinstance(run_status, RunStatus):
            return run_status
        try:
            return cls[_camel_to_snake(run_status).upper()]
        except (TypeError, KeyError):
            return cls.UNKNOWN

    @classmethod
    def parse(cls, value: str) -> RunStatus:
        """The status stored under exactly this value, or UNKNOWN."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN

    @property
    def display_name(self) -> str:
        """'Running', 'Completed', ..."""
        return "".join(word.title() for word in self.value.split("_"))

    def __str__(self) -> str:
        return self.value


def _camel_to_snake(text: str) -> str:
    text = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", text)
    return re.sub("([a-z0-9])([A-Z])", r"\1_\2", text).lower()


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
# The reference's TrainingEvent.is_terminal_state() also accepts CANCELED, an event tunedeck never emits.
REFERENCE_TERMINAL_EVENTS = frozenset({*TERMINAL_EVENTS, "CANCELED"})

# The reference's run_progress bar: 10 cells.
PROGRESS = ["■" * i + "□" * (10 - i) for i in range(11)]


def _parse_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _time_str(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def seconds_to_str(seconds: float) -> str:
    """45 -> '45s', 300 -> '5min', 7200 -> '2hr', 3 days -> '3d' (the reference's formatted_eta)."""
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds / 60)}min"
    if seconds < 24 * 3600:
        return f"{int(seconds / 3600)}hr"
    return f"{int(seconds / 3600 / 24)}d"


# -- what the API and the notebook install ----------------------------------------------------------
RunRef = Union["TrainingRun", str]


class RunAPI(Protocol):
    """The part of tunedeck.foundation_model a TrainingRun's methods call."""

    def get(self, training_run: RunRef) -> TrainingRun: ...

    def cancel(self, runs: Any = None, experiment_id: str | None = None) -> int: ...

    def get_events(self, training_run: RunRef, follow: bool = False) -> TunedeckList[TrainingEvent]: ...


_api: RunAPI | None = None  # installed by tunedeck.foundation_model when it is imported
_display: Callable[[Any], bool] | None = None  # installed by tunedeck: shows a run's monitor; False if it cannot


def _require_api() -> RunAPI:
    if _api is None:  # only if tunedeck.types was loaded without the tunedeck package (it never is)
        raise RuntimeError("tunedeck.foundation_model is not loaded: `from tunedeck import foundation_model` first")
    return _api


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
    def from_dict(cls, d: dict[str, Any]) -> LoRA:
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

    def is_terminal_state(self) -> bool:
        """The reference's name: True for the run's last event (COMPLETED, FAILED, STOPPED)."""
        return self.type in REFERENCE_TERMINAL_EVENTS

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "time": _time_str(self.time),
            "message": self.message,
            "sequence": self.sequence,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingEvent:
        time = _parse_time(d["time"])
        if time is None:
            raise ValueError("an event has a time")
        return cls(d["type"], time, d.get("message", ""), d.get("sequence", 0), d.get("data") or {})

    def _row(self) -> dict[str, Any]:
        # the reference's to_pandas() columns (type, time, message), then tunedeck's
        return {"type": self.type, "time": self.time, "message": self.message, "sequence": self.sequence}


@dataclass
class TrainConfig:
    """What a run was created with, under the reference's TrainConfig names (``run.submitted_config``).

    Read from the run record: where the run filled in a default (learning rate, context length,
    duration), it shows the value the run uses.
    """

    model: str
    train_data_path: str
    save_folder: str | None = None
    task_type: str | None = "INSTRUCTION_FINETUNE"
    eval_data_path: str | None = None
    eval_prompts: list[str] | None = None
    custom_weights_path: str | None = None
    training_duration: str | None = None
    training_durations: list[str] | None = None
    experiment_tracker: dict[str, Any] | None = None
    learning_rate: float | None = None
    learning_rates: list[float] | None = None
    context_length: int | None = None
    data_prep_config: dict[str, Any] | None = None
    disable_credentials_check: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return "\n".join(f"{k}: {v}" for k, v in self.to_dict().items() if v is not None)


@dataclass
class TrainingRun:
    """A training run and every parameter it was created with.

    Also answers to the reference's names: ``experiment_id``, ``run_id`` (MLflow), ``save_folder``,
    ``submitted_experiment_path``, ``submitted_config``, ``events``, ``run_progress``,
    ``formatted_eta``, ``formatted_events``, ``refresh()``, ``cancel()``, ``get_events()``.
    """

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
    num_devices: int | None = None  # tunedeck option: processes of the run (None: the service's default)
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

    # -- the reference's names ----------------------------------------------------------------------
    @property
    def experiment_id(self) -> str | None:
        """The MLflow experiment id (set once the run has started tracking)."""
        return self.mlflow_experiment_id

    @experiment_id.setter
    def experiment_id(self, value: str | None) -> None:
        self.mlflow_experiment_id = value

    @property
    def run_id(self) -> str | None:
        """The MLflow run id (set once the run has started tracking)."""
        return self.mlflow_run_id

    @run_id.setter
    def run_id(self, value: str | None) -> None:
        self.mlflow_run_id = value

    @property
    def submitted_experiment_path(self) -> str | None:
        return self.experiment_path

    @submitted_experiment_path.setter
    def submitted_experiment_path(self, value: str | None) -> None:
        self.experiment_path = value

    @property
    def save_folder(self) -> str | None:
        """The folder the run saves into: its checkpoints are ``<save_folder>/checkpoints/ep#-ba#``."""
        return self.__dict__.get("_save_folder", self.run_dir)

    @save_folder.setter
    def save_folder(self, value: str | None) -> None:
        self.__dict__["_save_folder"] = value

    @property
    def submitted_config(self) -> TrainConfig:
        return TrainConfig(
            model=self.model,
            train_data_path=self.train_data_path,
            save_folder=self.save_folder,
            task_type=self.task_type,
            eval_data_path=self.eval_data_path,
            eval_prompts=self.eval_prompts,
            custom_weights_path=self.custom_weights_path,
            training_duration=self.training_duration,
            experiment_tracker={"mlflow": {"experiment_path": self.experiment_path,
                                           "model_registry_path": self.register_to}},
            learning_rate=self.learning_rate,
            context_length=self.context_length,
            data_prep_config={"clusterId": self.data_prep_cluster_id} if self.data_prep_cluster_id else None,
            disable_credentials_check=not self.validate_inputs,
        )

    @property
    def events(self) -> TunedeckList[TrainingEvent]:
        """The run's events, read from the service on first use (then kept: ``refresh()`` for newer)."""
        cached = self.__dict__.get("_events")
        if cached is None:
            cached = self.__dict__["_events"] = _require_api().get_events(self.name)
        return cached

    @events.setter
    def events(self, value: Iterable[TrainingEvent] | None) -> None:
        self.__dict__["_events"] = None if value is None else TunedeckList(value)

    @property
    def formatted_eta(self) -> str | None:
        """Time left, as '12min', while the run is active and has an estimate."""
        if self.status.is_terminal() or self.estimated_end_time is None:
            return None
        left = (self.estimated_end_time - utcnow()).total_seconds()
        return seconds_to_str(left) if left > 0 else None

    @property
    def run_progress(self) -> str:
        """'RUNNING ■■■■□□□□□□(40%)' while running, else the status."""
        if self.status == RunStatus.RUNNING:
            percent = self._percent()
            if percent is not None:
                return f"{RunStatus.RUNNING} {PROGRESS[percent // 10]}({percent}%)"
        return f"{self.status}"

    def _percent(self) -> int | None:
        if self.progress is not None:  # tunedeck knows the steps done; the reference estimates from the ETA
            return max(0, min(int(self.progress), 100))
        if self.started_at is not None and self.estimated_end_time is not None:
            total = (self.estimated_end_time - self.started_at).total_seconds()
            elapsed = (utcnow() - self.started_at).total_seconds()
            return max(0, min(int(elapsed / total * 100), 100)) if total > 0 else 100
        return None

    @property
    def formatted_events(self) -> str:
        return "<br>".join(f"<nobr>{html.escape(e.type)} {html.escape(str(e.time))}</nobr>" for e in self.events)

    @property
    def _get_mlflow_path_html_with_link(self) -> str:
        """The reference's 'MLflow Run' column: <experiment path>/<run name>, once the run is tracked."""
        if not self.mlflow_run_id or not self.experiment_path:
            return ""
        return f"{self.experiment_path}/{self.name}"

    # -- the API, through the hook tunedeck.foundation_model installs ------------------------------
    def refresh(self) -> TrainingRun:
        """The run as the service sees it now (a new object; this one is unchanged)."""
        return _require_api().get(self)

    def cancel(self) -> int:
        """Cancel the run: 1 if it was still active, 0 if it had already ended."""
        return _require_api().cancel(self)

    def get_events(self) -> TunedeckList[TrainingEvent]:
        """The run's events, oldest first."""
        return _require_api().get_events(self)

    # -- serialization and display ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["status"] = self.status.value
        for key in self._TIMES:
            d[key] = _time_str(getattr(self, key))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingRun:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        kwargs["status"] = RunStatus.parse(d.get("status", "UNKNOWN"))
        for key in cls._TIMES:
            kwargs[key] = _parse_time(d.get(key))
        return cls(**kwargs)

    def _row(self) -> dict[str, Any]:
        # the reference's to_pandas() columns first (an empty value is ''), then tunedeck's
        reference = {
            "name": self.name,
            "run_progress": self.run_progress,
            "_get_mlflow_path_html_with_link": self._get_mlflow_path_html_with_link,
            "model": self.model,
            "learning_rate": self.learning_rate,
            "training_duration": self.training_duration,
            "train_data_path": self.train_data_path,
            "register_to": self.register_to,
        }
        return {
            **{k: v if v else "" for k, v in reference.items()},
            "status": self.status.value,
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
        if _display is not None and _display(self):
            return
        from IPython.display import display

        display({"text/html": self._repr_html_(), "text/plain": repr(self)}, raw=True)


@dataclass
class ModelInfo:
    """A model this service can train (the reference's TrainingModelConstants, and more)."""

    name: str
    max_context_length: int
    source: str
    path: str
    default_learning_rate: float | None = None
    parameters: int | None = None

    @property
    def display_name(self) -> str:
        """The name shown for the model; tunedeck's models are shown by the name create() takes."""
        return self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def _row(self) -> dict[str, Any]:
        # the reference's to_pandas() columns (display_name, name, max_context_length), then tunedeck's
        return {"display_name": self.display_name, **self.to_dict()}


TrainingModelConstants = ModelInfo  # the reference's name


@dataclass
class TrainingConstants:
    """The reference's container of model constants: ``models``."""

    models: list[ModelInfo]


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
    def from_dict(cls, d: dict[str, Any]) -> Checkpoint:
        return cls(d["name"], d["path"], d["epoch"], d["batch"], _parse_time(d.get("created_at")), d.get("is_latest", False))

    def _row(self) -> dict[str, Any]:
        return self.to_dict()


class CheckpointPath(str):
    """A checkpoint's path, as the reference's get_checkpoints() returns (a ``str``), that also carries
    the checkpoint's details: ``.checkpoint`` and its fields ``name``, ``path``, ``epoch``, ``batch``,
    ``created_at``, ``is_latest``."""

    checkpoint: Checkpoint

    def __new__(cls, checkpoint: Checkpoint) -> CheckpointPath:
        self = super().__new__(cls, checkpoint.path)
        self.checkpoint = checkpoint
        return self

    def __getattr__(self, name: str) -> Any:
        if name in ("name", "path", "epoch", "batch", "created_at", "is_latest"):
            return getattr(self.checkpoint, name)
        raise AttributeError(name)

    def __reduce__(self):  # pickles (and copies) as the plain path
        return (str, (str(self),))

    def _row(self) -> dict[str, Any]:
        return self.checkpoint.to_dict()


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
    """A list of API objects that converts with ``to_pandas()`` and shows as a table in a notebook.

    The reference's ObjectList with list behaviour: ``.data`` is the list itself, and ``to_pandas()``
    has the reference's columns first, then tunedeck's.
    """

    def __init__(self, items: Iterable[T] = ()):
        super().__init__(items)

    @property
    def data(self) -> TunedeckList[T]:
        return self

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


class PaginatedList(TunedeckList[T]):
    """One page of a listing (the reference's PaginatedObjectList): ``has_next_page``, ``cursor``,
    ``next_page(limit=None)`` for the page after it (StopIteration when there is none)."""

    has_next_page: bool = False
    cursor: str | None = None

    def __init__(self, items: Iterable[T] = (), *, cursor: str | None = None, has_next_page: bool = False,
                 fetch: Callable[[str, int | None], PaginatedList[T]] | None = None):
        super().__init__(items)
        self.cursor = cursor
        self.has_next_page = has_next_page
        self._fetch = fetch

    def next_page(self, limit: int | None = None) -> PaginatedList[T]:
        if not self.has_next_page or self._fetch is None or self.cursor is None:
            raise StopIteration("No next page")
        return self._fetch(self.cursor, limit)
