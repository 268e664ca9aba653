"""The Model Training API: ``from tunedeck import foundation_model as fm``.

Same names, parameters and defaults as the reference client, running on the local tunedeck service.
Every function that takes a run accepts a TrainingRun or a run name.
"""

from __future__ import annotations

import builtins
import getpass
import os
import sys
import time
from typing import Iterator, Sequence, Union

from tunedeck.client import get_client
from tunedeck.types import Checkpoint, EventType, LoRA, ModelInfo, TrainingEvent, TrainingRun, TunedeckList

__all__ = [
    "LoRA",
    "cancel",
    "check_inputs",
    "create",
    "delete",
    "get",
    "get_checkpoints",
    "get_events",
    "get_models",
    "iter_events",
    "list",
]

RunRef = Union[TrainingRun, str]
POLL_SECONDS = 1.0


def _name(run: RunRef) -> str:
    return run.name if isinstance(run, TrainingRun) else str(run)


def _params(model, train_data_path, register_to, **optional) -> dict:
    params = {"model": model, "train_data_path": train_data_path, "register_to": register_to}
    params.update({k: v for k, v in optional.items() if v is not None})
    params.setdefault("created_by", getpass.getuser())
    return params


def create(
    model: str,
    train_data_path: str,
    register_to: str,
    *,
    task_type: str = "CHAT_COMPLETION",
    eval_data_path: str | None = None,
    eval_prompts: Sequence[str] | None = None,
    custom_weights_path: str | None = None,
    training_duration: str | None = None,
    learning_rate: str | float | None = None,
    context_length: int | None = None,
    experiment_path: str | None = None,
    data_prep_cluster_id: str | None = None,
    validate_inputs: bool = True,
    adapter: str | LoRA | dict | None = None,
) -> TrainingRun:
    """Create a training run. With ``validate_inputs`` (the default) every path, the data format and
    every parameter are checked first, and an InvalidInputError lists each problem with its place.

    ``adapter`` is tunedeck's own option (the reference has none): ``None`` fine-tunes every weight;
    ``"lora"`` trains LoRA adapters on a frozen base (far less memory: the way to 1B-70B models),
    ``"qlora"`` holds that base in 4 bits (CUDA), ``LoRA(rank=..., alpha=..., target_modules=...)`` sets
    the details. The registered model has the adapter merged in either way.
    """
    params = _params(
        _model_path(model), _data_path(train_data_path), register_to,
        task_type=task_type, eval_data_path=_data_path(eval_data_path),
        eval_prompts=builtins.list(eval_prompts) if isinstance(eval_prompts, (builtins.list, tuple)) else eval_prompts,
        custom_weights_path=_weights_path(custom_weights_path), training_duration=training_duration,
        learning_rate=learning_rate, context_length=context_length, experiment_path=experiment_path,
        data_prep_cluster_id=data_prep_cluster_id,
        adapter=_adapter(adapter),
    )
    params["validate_inputs"] = validate_inputs
    return get_client().create_run(params)


def _adapter(adapter: str | LoRA | dict | None) -> str | dict | None:
    """What goes over the wire: a name or a dict (the service checks both)."""
    return adapter.to_dict() if isinstance(adapter, LoRA) else adapter


def check_inputs(model: str, train_data_path: str, register_to: str, **optional):
    """The problems create() would report for these parameters, without creating a run."""
    if "adapter" in optional:
        optional["adapter"] = _adapter(optional["adapter"])
    if "eval_data_path" in optional:
        optional["eval_data_path"] = _data_path(optional["eval_data_path"])
    if "custom_weights_path" in optional:
        optional["custom_weights_path"] = _weights_path(optional["custom_weights_path"])
    return get_client().validate(_params(_model_path(model), _data_path(train_data_path), register_to, **optional))


# The service resolves paths on its own, in its own working directory, and refuses relative local
# paths; so a relative path is made absolute here, against the caller's working directory.
def _is_local_relative(path) -> bool:
    return isinstance(path, str) and bool(path.strip()) and not path.strip().startswith(("/", "dbfs:", "file:"))


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path.strip()))


def _data_path(path):
    """A relative data path -> absolute, unless it is a Hugging Face dataset id or a table name not found here."""
    from tunedeck.inputs.paths import is_dataset_id

    if not _is_local_relative(path):
        return path
    if os.path.exists(os.path.expanduser(path.strip())) or not is_dataset_id(path):
        return _absolute(path)
    return path


def _model_path(model):
    """A relative model folder that exists here -> absolute; anything else is a model name."""
    if _is_local_relative(model) and os.path.isfile(os.path.join(os.path.expanduser(model.strip()), "config.json")):
        return _absolute(model)
    return model


def _weights_path(path):
    return _absolute(path) if _is_local_relative(path) else path


def get(run: RunRef) -> TrainingRun:
    """The run as the service sees it now."""
    return get_client().get_run(_name(run))


def list(*, statuses: Sequence[str] | None = None, limit: int | None = None) -> TunedeckList[TrainingRun]:
    """Runs, newest first; ``.to_pandas()`` for a DataFrame."""
    status_names = [str(getattr(s, "value", s)) for s in statuses] if statuses else None
    return TunedeckList(get_client().list_runs(limit=limit, statuses=status_names))


def cancel(runs: RunRef | Sequence[RunRef]) -> int:
    """Cancel one run or several; returns how many were still active."""
    refs = runs if isinstance(runs, (builtins.list, tuple)) else [runs]
    client = get_client()
    cancelled = 0
    for ref in refs:
        before = client.get_run(_name(ref))
        if not before.status.is_terminal():
            client.cancel_run(before.name)
            cancelled += 1
    return cancelled


def delete(runs: RunRef | Sequence[RunRef]) -> int:
    """Delete runs with their events, metrics and checkpoints; registered models stay registered."""
    refs = runs if isinstance(runs, (builtins.list, tuple)) else [runs]
    for ref in refs:
        get_client().delete_run(_name(ref))
    return len(refs)


def get_models() -> TunedeckList[ModelInfo]:
    """Models this machine can train, with their maximum context length."""
    return TunedeckList(get_client().models())


def get_checkpoints(run: RunRef) -> TunedeckList[Checkpoint]:
    """Checkpoints of a run; pass one's path (or the latest-sharded-rank0.symlink) as custom_weights_path."""
    return TunedeckList(get_client().checkpoints(_name(run)))


def iter_events(run: RunRef, after: int = 0, poll_seconds: float = POLL_SECONDS) -> Iterator[TrainingEvent]:
    """Yield the run's events as they happen, ending after the terminal one (COMPLETED, FAILED, STOPPED)."""
    client, name = get_client(), _name(run)
    while True:
        batch = client.events(name, after=after)
        for event in batch:
            yield event
            if event.is_terminal:
                return
        if batch:
            after = batch[-1].sequence
        else:
            time.sleep(poll_seconds)


def get_events(run: RunRef, follow: bool = False) -> TunedeckList[TrainingEvent]:
    """The run's events, oldest first.

    With ``follow=True``, wait until the run ends while printing each new event under a progress bar
    (a terminal bar in a shell, a widget bar in a notebook), then return them all.
    """
    if not follow:
        return TunedeckList(get_client().events(_name(run)))
    if "ipykernel" in sys.modules:
        from tqdm.auto import tqdm  # a widget bar in a notebook

        show_bar, lines_to = True, sys.stdout
    else:
        from tqdm import tqdm

        show_bar = sys.stderr.isatty()  # in a log or a pipe: plain lines, progress every 10 s
        lines_to = sys.stderr if show_bar else sys.stdout

    events: TunedeckList[TrainingEvent] = TunedeckList()
    last_line = 0.0
    with tqdm(total=100, unit="%", desc=_name(run), file=sys.stderr, disable=not show_bar,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}") as bar:
        for event in iter_events(run):
            events.append(event)
            progress = event.data.get("progress")
            if isinstance(progress, (int, float)):
                bar.update(max(0.0, min(100.0, float(progress)) - bar.n))
            if event.type == EventType.COMPLETED.value:
                bar.update(100 - bar.n)
            if event.type != EventType.TRAIN_UPDATED.value:
                tqdm.write(_line(event), file=lines_to)
            elif show_bar:
                bar.set_postfix_str(_short(event), refresh=True)
            elif time.monotonic() - last_line >= 10 or progress == 100:
                last_line = time.monotonic()
                print(_line(event), flush=True)
    return events


def _line(event: TrainingEvent) -> str:
    return f"{event.time.astimezone():%H:%M:%S}  {event.type:<18} {event.message}"


def _short(event: TrainingEvent) -> str:
    d = event.data
    parts = []
    if "loss" in d:
        parts.append(f"loss {d['loss']:.4f}")
    if d.get("eta_seconds") is not None:
        parts.append(f"ETA {int(d['eta_seconds']) // 60}m {int(d['eta_seconds']) % 60:02d}s")
    return ", ".join(parts)
