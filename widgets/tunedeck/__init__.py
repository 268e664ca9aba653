"""tunedeck: fine-tune language models from a notebook.

    from tunedeck import foundation_model as fm
    run = fm.create(model="SmolLM2-135M-Instruct", train_data_path="train.jsonl", register_to="main.demo")
    fm.get_events(run, follow=True)

Code written for the reference client (databricks-genai 1.1.8) runs with ``databricks.model_training``
replaced by ``tunedeck`` in its imports: tunedeck.foundation_model, tunedeck.exceptions (also
tunedeck.api.exceptions) and tunedeck.types with the reference's submodules. docs/reference-compatibility.md
lists every name.

Importing tunedeck stays light (no torch, no transformers, no HTTP or widget library): the training
runs in a local service.
"""

from __future__ import annotations

from tunedeck import exceptions, foundation_model
from tunedeck import types as _types
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
    "__version__",
    "exceptions",
    "form",
    "foundation_model",
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


def _show_monitor(run) -> bool:
    """How a TrainingRun shows in a notebook: its live monitor (False where the widgets are missing)."""
    try:
        from tunedeck.ui import monitor as _monitor
    except ImportError:  # the widgets are optional for a bare API client
        return False
    from IPython.display import display

    display(_monitor(run))
    return True


_types._display = _show_monitor
