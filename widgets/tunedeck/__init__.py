"""tunedeck: fine-tune language models from a notebook.

    from tunedeck import foundation_model as fm
    run = fm.create(model="SmolLM2-135M-Instruct", train_data_path="train.jsonl", register_to="main.demo")
    fm.get_events(run, follow=True)

Importing tunedeck stays light (no torch, no transformers): the training runs in a local service.
"""

from __future__ import annotations

from tunedeck import foundation_model
from tunedeck.errors import (
    AuthenticationError,
    InvalidInputError,
    Problem,
    RunNotFoundError,
    ServiceError,
    ServiceUnavailableError,
    TunedeckError,
)
from tunedeck.types import Checkpoint, EventType, ModelInfo, RunStatus, TrainingEvent, TrainingRun

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "Checkpoint",
    "EventType",
    "InvalidInputError",
    "ModelInfo",
    "Problem",
    "RunNotFoundError",
    "RunStatus",
    "ServiceError",
    "ServiceUnavailableError",
    "TrainingEvent",
    "TrainingRun",
    "TunedeckError",
    "foundation_model",
    "form",
    "monitor",
    "runs",
]


def form(**defaults):
    """A form for a new training run; Start calls create() and shows the run's monitor."""
    from tunedeck.ui import form as _form

    return _form(**defaults)


def monitor(run):
    """A live view of a run (a TrainingRun or its name): status, progress, loss chart, events, cancel."""
    from tunedeck.ui import monitor as _monitor

    return _monitor(run)


def runs():
    """Every run with its status; open, cancel or delete from the list."""
    from tunedeck.ui import runs as _runs

    return _runs()
