"""The Model Training API: ``from tunedeck import foundation_model as fm``.

The reference client's functions (databricks-genai 1.1.8, ``databricks.model_training.foundation_model``)
with its parameter names, order and defaults, on the local tunedeck service: code written for the
reference runs with only the import changed. docs/reference-compatibility.md lists each name and how
tunedeck differs. Every function that takes a run accepts a TrainingRun or a run name.
tunedeck's own, which the reference lacks: delete(), check_inputs(), iter_events(), create(adapter=...).
"""

from __future__ import annotations

import builtins
import getpass
import os
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tunedeck import types as _types
from tunedeck.errors import InvalidInputError, RunNotFoundError, TunedeckError
from tunedeck.exceptions import (
    DatabricksGenAIResponseError,
    DatabricksModelTrainingRequestError,
    InvalidInputs,
    RunNotFound,
    ValidationError,
)
from tunedeck.types import (
    CheckpointPath,
    EventType,
    LoRA,
    ModelInfo,
    PaginatedList,
    RunStatus,
    TrainingEvent,
    TrainingRun,
    TunedeckList,
)

if TYPE_CHECKING:
    from tunedeck.client.http import ServiceClient

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

RunRef = TrainingRun | str
POLL_SECONDS = 1.0
DEFAULT_LIMIT = 100  # list(): the reference's default page size


def get_client() -> ServiceClient:
    """The service's client (tunedeck.client.get_client), imported on first use: importing the API
    loads no HTTP library."""
    from tunedeck.client import get_client as service_client

    return service_client()


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
    experiment_path: str | None = "",
    task_type: str | None = "CHAT_COMPLETION",
    eval_data_path: str | None = None,
    eval_prompts: Sequence[str] | None = None,
    custom_weights_path: str | None = None,
    training_duration: str | None = None,
    learning_rate: str | float | None = None,
    context_length: int | None = None,
    validate_inputs: bool | None = True,
    data_prep_cluster_id: str | None = None,
    adapter: str | LoRA | dict | None = None,
    num_devices: int | None = None,
) -> TrainingRun:
    """Create a training run. With ``validate_inputs`` (the default) every path, the data format and
    every parameter are checked first, and an InvalidInputError lists each problem with its place
    (it is also the reference's ValidationError and MAPIException, status 400).

    ``experiment_path`` empty (the default): ``/Users/<you>/<run name>``. ``task_type`` None: CHAT_COMPLETION.

    ``adapter`` is tunedeck's own option (the reference has none): ``None`` fine-tunes every weight;
    ``"lora"`` trains LoRA adapters on a frozen base (far less memory: the way to 1B-70B models),
    ``"qlora"`` holds that base in 4 bits (CUDA), ``LoRA(rank=..., alpha=..., target_modules=...)`` sets
    the details. The registered model has the adapter merged in either way.

    ``num_devices`` (tunedeck's own too): the run trains in that many processes, one device each (DDP
    under torchrun; on CPU, one core each), with the same loss curve as one; None: the service's
    TUNEDECK_NUM_DEVICES, else 1.
    """
    params = _params(
        _model_path(model), _data_path(train_data_path), register_to,
        task_type=task_type or "CHAT_COMPLETION", eval_data_path=_data_path(eval_data_path),
        eval_prompts=builtins.list(eval_prompts) if isinstance(eval_prompts, (builtins.list, tuple)) else eval_prompts,
        custom_weights_path=_weights_path(custom_weights_path), training_duration=training_duration,
        learning_rate=learning_rate, context_length=context_length, experiment_path=experiment_path or None,
        data_prep_cluster_id=data_prep_cluster_id,
        adapter=_adapter(adapter), num_devices=num_devices,
    )
    params["validate_inputs"] = bool(validate_inputs)
    try:
        return get_client().create_run(params)
    except InvalidInputs:
        raise
    except InvalidInputError as refused:
        raise InvalidInputs(refused.problems) from None


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


def _unknown_run(err: RunNotFoundError) -> RunNotFound:
    """tunedeck's RunNotFoundError as one that is also the reference's DatabricksGenAIResponseError."""
    return err if isinstance(err, RunNotFound) else RunNotFound(str(err))


def get(training_run: RunRef) -> TrainingRun:
    """The run as the service sees it now. An unknown name raises RunNotFoundError (also the
    reference's DatabricksGenAIResponseError)."""
    try:
        return get_client().get_run(_name(training_run))
    except RunNotFoundError as err:
        raise _unknown_run(err) from None


# -- list -------------------------------------------------------------------------------------------
_DATETIME_FORMATS = (  # the reference's parse_datetime(): local time
    "%Y-%m-%d", "%m-%d-%Y", "%H:%M:%S.%f", "%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%m-%d-%Y %H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S", "%m-%d-%Y %H:%M:%S",
)


def _moment(value: str | datetime, name: str) -> datetime:
    """``before`` / ``after`` as an aware datetime: a naive one (or a string) is local time, as in the reference."""
    if isinstance(value, datetime):
        return value.astimezone()
    if isinstance(value, str):
        for fmt in _DATETIME_FORMATS:
            try:
                return datetime.strptime(value, fmt).astimezone()
            except ValueError:
                pass
        try:  # tunedeck also reads ISO 8601 ('2026-01-02T12:00:00+00:00')
            return datetime.fromisoformat(value).astimezone()
        except ValueError:
            pass
    raise ValidationError(
        f"{name}: invalid datetime format {value!r}. Examples: '2023-01-13', '01-12-2023 05:32:23.34', "
        "'2023-12-30 05:34:23'"
    )


def _check_limit(limit: int | None) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValidationError(f"limit: must be a whole number of at least 1, or None for every run; found {limit!r}")
    return limit


def list(
    training_runs: Sequence[RunRef] | None = None,
    experiment_id: str | None = None,
    *,
    statuses: Sequence[str | RunStatus] | None = None,
    user_emails: Sequence[str] | None = None,
    before: str | datetime | None = None,
    after: str | datetime | None = None,
    include_details: bool = True,
    limit: int | None = DEFAULT_LIMIT,
) -> PaginatedList[TrainingRun]:
    """Runs, newest first, at most ``limit`` (None: all); ``.has_next_page`` and ``.next_page()`` for
    more, ``.to_pandas()`` for a DataFrame.

    Filters, all optional and combined: ``training_runs`` (names or runs), ``experiment_id`` (MLflow),
    ``statuses``, ``user_emails`` (tunedeck records the creator's user name there), ``before`` (created
    before) and ``after`` (created at or after: a datetime, or a string such as '2024-01-31' or
    '2024-01-31 13:00:00', local time). ``include_details`` is accepted; tunedeck's runs always carry
    every detail.
    """
    del include_details  # every run record is complete
    query: dict[str, Any] = dict(
        names=sorted({_name(r) for r in training_runs}) if training_runs else None,
        statuses=sorted({RunStatus.from_string(s).value for s in statuses}) if statuses else None,
        created_by=sorted({str(e) for e in user_emails}) if user_emails else None,
        experiment_ids=[str(experiment_id)] if experiment_id else None,
        created_before=_moment(before, "before") if before else None,
        created_after=_moment(after, "after") if after else None,
    )

    def page(cursor: str | None, size: int | None) -> PaginatedList[TrainingRun]:
        try:
            found = get_client().list_page(**query, cursor=cursor, limit=size)
        except InvalidInputError as refused:  # a cursor the service does not know
            raise ValidationError(str(refused)) from None
        return PaginatedList(
            found.runs, cursor=found.cursor, has_next_page=found.has_next_page,
            fetch=lambda next_cursor, next_size: page(next_cursor, _check_limit(next_size) or size),
        )

    return page(None, _check_limit(limit))


# -- cancel, delete ---------------------------------------------------------------------------------
def cancel(
    runs: RunRef | Sequence[RunRef] | None = None,
    experiment_id: str | None = None,
) -> int:
    """Cancel a run, several runs, or every active run of an MLflow experiment; returns how many were
    still active (runs not found or already ended are counted out, as the reference does).

    Raises DatabricksModelTrainingRequestError when given neither or both, or when the service fails
    (its error chained as the cause).
    """
    if not (runs or experiment_id):
        raise DatabricksModelTrainingRequestError("Must provide training run(s) or MLflow experiment ID to cancel")
    if runs and experiment_id:
        raise DatabricksModelTrainingRequestError(
            "Cannot provide both training run(s) and MLflow experiment ID to cancel. Please specify one or the other.")
    client = get_client()
    asked: builtins.list[str] = []
    cancelled: builtins.list[str] = []
    try:
        if experiment_id:
            in_experiment = client.list_page(experiment_ids=[str(experiment_id)]).runs
            targets = [r.name for r in in_experiment if not r.status.is_terminal()]
        else:
            refs = [runs] if isinstance(runs, (str, TrainingRun)) else builtins.list(runs)  # type: ignore[arg-type]
            targets = asked = [_name(r) for r in refs]
        for name in targets:
            try:
                now = client.get_run(name)
            except RunNotFoundError:
                continue
            if not now.status.is_terminal():
                client.cancel_run(now.name)
                cancelled.append(now.name)
    except TunedeckError as err:
        what = f"training run(s) {runs}" if runs else f"MLflow experiment ID {experiment_id}"
        raise DatabricksModelTrainingRequestError(f"Failed to cancel {what}: {err}") from err
    if not cancelled:
        print("No active runs found to cancel.")
    else:
        missing = len(asked) - len(cancelled)
        rest = f" {missing} run(s) were not found or already terminated." if missing > 0 else ""
        print(f"Canceled {', '.join(cancelled)} successfully.{rest}")
    return len(cancelled)


def delete(runs: RunRef | Sequence[RunRef]) -> int:
    """Delete runs with their events, metrics and checkpoints; registered models stay registered."""
    refs: Sequence[RunRef] = runs if isinstance(runs, (builtins.list, tuple)) else [runs]  # type: ignore[list-item]
    from tunedeck.client.deletions import run_deleted

    for ref in refs:
        get_client().delete_run(_name(ref))
        run_deleted(_name(ref))  # open monitors of it say so
    return len(refs)


def get_models() -> TunedeckList[ModelInfo]:
    """Models this machine can train, with their maximum context length."""
    return TunedeckList(get_client().models())


def get_checkpoints(training_run: RunRef) -> TunedeckList[CheckpointPath]:
    """The paths of the run's checkpoints (``ep{E}-ba{B}`` folders), oldest first: pass one as
    ``custom_weights_path``. Each is a ``str`` that also has the checkpoint's ``name``, ``epoch``,
    ``batch``, ``created_at``, ``is_latest``; ``.to_pandas()`` tabulates them."""
    if training_run is None:
        raise DatabricksGenAIResponseError("Must provide training run object to retrieve checkpoints")
    try:
        found = get_client().checkpoints(_name(training_run))
    except RunNotFoundError as err:
        raise _unknown_run(err) from None
    except TunedeckError as err:
        raise DatabricksGenAIResponseError(f"Checkpoints could not be retrieved for {_name(training_run)}: {err}") from err
    paths: TunedeckList[CheckpointPath] = TunedeckList(CheckpointPath(c) for c in found)
    if not paths:
        print("No checkpoints created yet for this run. Please try again later.")
    return paths


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


def get_events(training_run: RunRef, follow: bool = False) -> TunedeckList[TrainingEvent]:
    """The run's events, oldest first.

    With ``follow=True``, wait until the run ends while printing each new event under a progress bar
    (a terminal bar in a shell, a widget bar in a notebook), then return them all.
    """
    try:
        if not follow:
            return TunedeckList(get_client().events(_name(training_run)))
        return _follow(training_run)
    except RunNotFoundError as err:
        raise _unknown_run(err) from None


def _follow(run: RunRef) -> TunedeckList[TrainingEvent]:
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


# TrainingRun.refresh() / cancel() / get_events() / events call this module through tunedeck.types._api,
# so that tunedeck.types imports nothing of the API.
_types._api = sys.modules[__name__]
