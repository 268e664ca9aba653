"""The form's validation as one function of its whole state: ``validate(state, models, reports)``.

Nothing here remembers anything. The form reads its fields into a ``FormState`` and calls
``validate`` after every change; what comes back (the problems by field, worded with the form's
labels and grouped by file, one-click fixes, the create() parameters that are valid, the data-check
summaries still true) is all the form shows. Answers of the service (create()'s InvalidInputError,
Check data) are ``Report``s that carry the state they were computed for: one is shown only while
every field its problem depends on (``DEPENDS``) still has the value it had, so switching Task, Model
or a path can never leave an old answer on screen.

Reads the file system only to resolve a typed model (a local folder's config.json, read as JSON, or a
Hugging Face id in the local cache): no torch, no transformers, no service.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunedeck.errors import Problem
from tunedeck.inputs import catalog
from tunedeck.inputs import params as checks
from tunedeck.inputs.paths import hf_hub_cache, is_folder, snapshot_dir
from tunedeck.inputs.validate import Devices, check_num_devices
from tunedeck.types import LoRA, ModelInfo, create_params

TASKS = (
    ("Chat completion", "CHAT_COMPLETION"),
    ("Instruction", "INSTRUCTION_FINETUNE"),
    ("Continued pretraining", "CONTINUED_PRETRAIN"),
)
TASK_LABELS = {value: label for label, value in TASKS}
UNIT_NAMES = {"ep": "epochs", "ba": "batches", "tok": "tokens"}
METHOD_LABELS = {"full": "Full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}
EN_DASH = "\u2013"  # ranges of lines: "lines 1–4"  # noqa: RUF003
OTHER_MODEL = "__typed__"  # the model dropdown's "a local folder or Hugging Face id" entry

#: The form's label of each create() parameter (types/create_params.py) and of the form's own fields.
LABELS = {
    **create_params.labels(),
    "adapter_rank": "LoRA rank", "adapter_alpha": "LoRA alpha", "adapter_target_modules": "Target modules",
    "sweep": "Sweep", "learning_rates": "Learning rate", "training_durations": "Duration", "lora_ranks": "LoRA rank",
}
REQUIRED = create_params.required()


@dataclass(frozen=True)
class FormState:
    """Every field as typed (text stays text: the checks say what is wrong with it)."""

    model: str = ""  # a get_models() name, or a typed folder / Hugging Face id
    task_type: str = checks.DEFAULT_TASK_TYPE
    train_data_path: str = ""
    register_to: str = ""
    duration: str = "1"
    duration_unit: str = "ep"
    learning_rate: str = ""
    eval_data_path: str = ""
    eval_prompts: str = ""
    context_length: str = ""  # blank: the model's default
    custom_weights_path: str = ""
    experiment_path: str = ""
    data_prep_cluster_id: str = ""
    num_devices: str = ""  # blank: the service's default (TUNEDECK_NUM_DEVICES, else 1)
    validate_inputs: bool = True
    adapter: str = "full"  # full | lora | qlora
    adapter_rank: str = "16"
    adapter_alpha: str = ""
    adapter_targets: str = "all-linear"  # all-linear | attention | custom
    adapter_modules: str = ""
    adapter_dropout: float = 0.0  # no field: kept from form(adapter=...)
    sweep: bool = False  # Learning rate, Duration (and LoRA rank) take comma-separated lists: tunedeck.sweep
    strict: bool = False  # Start was pressed: required fields are flagged

    def values(self, names: tuple[str, ...]) -> tuple[Any, ...]:
        return tuple(getattr(self, n) for n in names)


_ADAPTER_STATE = ("adapter", "adapter_rank", "adapter_alpha", "adapter_targets", "adapter_modules")
#: the memory check of a run is made for its processes: a problem with it names the model, or num_devices
_MEMORY_STATE = ("model", "context_length", "custom_weights_path", "num_devices", *_ADAPTER_STATE)
_ALL = tuple(f.name for f in dataclasses.fields(FormState) if f.name != "strict")
#: The state a problem about each field depends on: a service's answer is shown while these are unchanged.
DEPENDS: dict[str, tuple[str, ...]] = {
    "model": ("task_type", *_MEMORY_STATE),
    "task_type": ("model", "task_type", "train_data_path", "eval_data_path"),
    "train_data_path": ("model", "task_type", "train_data_path", "context_length"),
    "eval_data_path": ("model", "task_type", "eval_data_path", "context_length"),
    "context_length": ("model", "context_length"),
    "custom_weights_path": ("model", "custom_weights_path"),
    "register_to": ("register_to",),
    "training_duration": ("duration", "duration_unit", "sweep"),
    "learning_rate": ("learning_rate", "sweep"),
    "eval_prompts": ("eval_prompts",),
    "experiment_path": ("experiment_path",),
    "data_prep_cluster_id": ("data_prep_cluster_id",),
    "validate_inputs": ("validate_inputs",),
    "num_devices": _MEMORY_STATE,
    "adapter": ("model", *_ADAPTER_STATE),
    "adapter_rank": (*_ADAPTER_STATE, "sweep"),
    "adapter_alpha": _ADAPTER_STATE,
    "adapter_target_modules": _ADAPTER_STATE,
}


def depends(field_name: str) -> tuple[str, ...]:
    """What a problem about ``field_name`` depends on; a field the form does not know: everything."""
    return DEPENDS.get(field_name, _ALL)


@dataclass(frozen=True)
class Report:
    """What the service answered for the form in ``state``: create()'s problems (kind "create") or one
    Check data answer (kind "check", about ``field``: train_data_path or eval_data_path)."""

    state: FormState
    kind: str
    problems: tuple[Problem, ...] = ()
    field: str = ""
    result: dict[str, Any] = dataclasses.field(default_factory=dict)

    def current(self, state: FormState, field_name: str) -> bool:
        names = depends(field_name)
        return self.state.values(names) == state.values(names)


@dataclass(frozen=True)
class Fix:
    """A one-click fix: set ``field`` (a FormState name) to ``value``."""

    field: str
    value: Any
    label: str


@dataclass(frozen=True)
class DeviceInfo:
    """The service's devices, from its ``/api/health``: how many there are (GPUs, or CPU cores), described
    as create()'s messages word them, and the num_devices a run gets when create() gives none."""

    total: int
    kind: str  # "cuda" or "cpu"
    described: str  # '2 CPU cores (0-1; CPU affinity)'
    default: int | None = 1  # TUNEDECK_NUM_DEVICES, else 1; None: the service's setting is invalid

    @property
    def noun(self) -> str:
        return "GPU" if self.kind == "cuda" else "CPU core"

    @classmethod
    def from_health(cls, health: dict[str, Any]) -> DeviceInfo | None:
        """From the service's health answer; None where it does not say (an older service)."""
        devices = health.get("devices") if isinstance(health, dict) else None
        if not isinstance(devices, dict):
            return None
        total, kind, described = devices.get("total"), devices.get("kind"), devices.get("described")
        if not isinstance(total, int) or total < 1 or kind not in ("cuda", "cpu") or not isinstance(described, str):
            return None
        default = devices.get("default_num_devices")
        return cls(total, kind, described, default if isinstance(default, int) else None)


@dataclass(frozen=True)
class Issue:
    """One problem, shown once, next to its field: the lines of one file it applies to are grouped."""

    field: str
    message: str  # worded with the form's labels, starting with the field's label
    file: str | None = None
    lines: tuple[int, ...] = ()
    fix: Fix | None = None

    def text(self) -> str:
        where = []
        if self.file:
            where.append(_short_file(self.file))
        if self.lines:
            where.append(line_ranges(self.lines))
        return self.message + (f" ({', '.join(where)})" if where else "")


@dataclass
class Validation:
    """What the form shows for one state."""

    issues: list[Issue]
    params: dict[str, Any]  # create()'s keyword arguments: the valid ones only
    left_out: dict[str, str]  # create() parameter -> why the preview leaves it out
    model: ModelInfo | None
    default_context: int | None
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)  # data-check answers still true
    #: with Sweep on: tunedeck.sweep's lists (learning_rates, training_durations, lora_ranks), the valid
    #: ones; ``params`` then holds the arguments every cell shares (no learning_rate, training_duration)
    sweep: dict[str, list[Any]] | None = None

    @property
    def runs(self) -> int:
        """How many runs Start creates (the sweep's cells; 1 without Sweep)."""
        if self.sweep is None:
            return 1
        count = 1
        for values in self.sweep.values():
            count *= len(values)
        return count

    def by_field(self) -> dict[str, list[Issue]]:
        out: dict[str, list[Issue]] = {}
        for issue in self.issues:
            out.setdefault(issue.field, []).append(issue)
        return out

    @property
    def ready(self) -> bool:
        return not self.issues and not self.left_out


# -- the function ---------------------------------------------------------------------------------------
def validate(state: FormState, models: dict[str, ModelInfo], reports: tuple[Report, ...] | list[Report] = (),
             devices: DeviceInfo | None = None) -> Validation:
    """Everything the form says about ``state``: its own checks, plus what the service reported for a
    state that agrees with this one on what each problem depends on. ``devices``: the service's (Devices
    is checked against them; None: only that it is a whole number of at least 1)."""
    raw: list[Problem] = []
    fixes: dict[int, Fix] = {}  # id(problem) -> a fix the form knows better than the message
    out: dict[str, Any] = {}
    left_out: dict[str, str] = {}

    # Model
    model_text = state.model.strip()
    info, model_problem = resolve_model(model_text, models) if model_text else (None, None)
    if model_problem:
        raw.append(Problem("model", model_problem))
        left_out["model"] = "not found"
    elif model_text:
        out["model"] = model_text
    else:
        left_out["model"] = "missing"
    default_context = checks.default_context_length(info.max_context_length) if info else None

    # Required text fields
    for name in ("train_data_path", "register_to"):
        value = getattr(state, name).strip()
        if value:
            out[name] = value
        else:
            left_out[name] = "missing"
    for name in REQUIRED:
        if state.strict and left_out.get(name) == "missing":
            raw.append(Problem(name, "is required"))
    if state.task_type != checks.DEFAULT_TASK_TYPE:
        out["task_type"] = state.task_type
    if state.eval_data_path.strip():
        out["eval_data_path"] = state.eval_data_path.strip()
    prompts = [line.strip() for line in state.eval_prompts.splitlines() if line.strip()]
    if prompts:
        out["eval_prompts"] = prompts
    if state.custom_weights_path.strip():
        out["custom_weights_path"] = state.custom_weights_path.strip()

    # Duration, Learning rate: one value each, or with Sweep comma-separated lists, each value checked as one
    grid: dict[str, list[Any]] | None = {} if state.sweep else None
    unit = UNIT_NAMES.get(state.duration_unit, state.duration_unit)
    if grid is None:
        duration, why = _duration(state.duration.replace(",", ""), state.duration_unit)
        if why:
            raw.append(Problem("training_duration", why))
            left_out["training_duration"] = "invalid"
        elif duration is not None and str(duration) != checks.DEFAULT_DURATION:
            out["training_duration"] = str(duration)
        if state.learning_rate.strip():
            try:
                out["learning_rate"] = checks.parse_learning_rate(state.learning_rate.strip())
            except ValueError as exc:
                raw.append(Problem("learning_rate", str(exc)))
                left_out["learning_rate"] = "invalid"
    else:
        parts = _parts(state.learning_rate)
        rates: list[Any] = []
        for part in parts:
            try:
                rates.append(checks.parse_learning_rate(part))
            except ValueError as exc:
                raw.append(Problem("learning_rate", str(exc)))
        raw += _twice("learning_rate", parts, rates)
        if not parts and state.strict:
            raw.append(Problem("learning_rate", "is required for a sweep: one or more values, comma-separated (e.g. 1e-4, 3e-4)"))
        _sweep_list(grid, left_out, "learning_rates", parts, rates, raw, "learning_rate")
        parts = _parts(state.duration)
        durations: list[Any] = []
        for part in parts:
            duration, why = _duration(part, state.duration_unit, sweep=True)
            if why:
                raw.append(Problem("training_duration", why))
            elif duration is not None:
                durations.append(str(duration))
        raw += _twice("training_duration", parts, durations)
        if not parts:
            raw.append(Problem("training_duration", f"is required: one or more whole numbers of {unit}, comma-separated"))
        _sweep_list(grid, left_out, "training_durations", parts, durations, raw, "training_duration")

    # Context length: blank is the model's default; above the model's maximum is refused, with a fix
    if state.context_length.strip():
        try:
            ctx = checks.parse_context_length(state.context_length.strip())
        except ValueError as exc:
            raw.append(Problem("context_length", str(exc)))
            left_out["context_length"] = "invalid"
        else:
            if ctx is not None and info is not None and ctx > info.max_context_length:
                maximum = info.max_context_length
                problem = Problem("context_length", f"{ctx:,} is above {_model_name(info)}'s maximum of {maximum:,}")
                raw.append(problem)
                fixes[id(problem)] = Fix("context_length", str(info.max_context_length),
                                         f"Set Context length to {info.max_context_length:,}")
                left_out["context_length"] = "invalid"
            elif ctx is not None:
                out["context_length"] = ctx

    # Register to
    if out.get("register_to"):
        try:
            checks.registered_model_name(out["register_to"], "run")
        except ValueError as exc:
            raw.append(Problem("register_to", str(exc)))
            left_out["register_to"] = "invalid"
            del out["register_to"]
    if state.experiment_path.strip():
        out["experiment_path"] = state.experiment_path.strip()
    if state.data_prep_cluster_id.strip():
        out["data_prep_cluster_id"] = state.data_prep_cluster_id.strip()
    if not state.validate_inputs:
        out["validate_inputs"] = False

    # Devices: blank is the service's default; else create()'s check, against the service's devices
    if state.num_devices.strip():
        count, devices_problem = _num_devices(state.num_devices, devices)
        if devices_problem:
            raw.append(devices_problem)
            left_out["num_devices"] = "invalid"
            if devices is not None and count is not None and count > devices.total:
                fixes[id(devices_problem)] = Fix("num_devices", str(devices.total), f"Set Devices to {devices.total}")
        else:
            out["num_devices"] = count

    # Adapter: parse_adapter, as the service runs it, one setting at a time so each error sits by its field
    if state.adapter != "full":
        lora = lora_of(state if grid is None else dataclasses.replace(state, adapter_rank=""))
        found = []
        if grid is not None:  # each rank of the sweep checked as the single field is
            parts = _parts(state.adapter_rank)
            ranks: list[Any] = []
            for part in parts:
                try:
                    checks.parse_adapter(LoRA(rank=_number(part)))
                except ValueError as exc:
                    message = str(exc)
                    found.append(Problem("adapter_rank", message if part in message else f"{_quote(part)}: {message}"))
                else:
                    ranks.append(_number(part))
            found += _twice("adapter_rank", parts, ranks)
            if not parts:
                found.append(Problem("adapter_rank", "is required for a sweep: one or more ranks, comma-separated (e.g. 8, 16)"))
            _sweep_list(grid, left_out, "lora_ranks", parts, ranks, found, "adapter_rank")
        for name, setting in (("adapter_rank", LoRA(rank=lora.rank)), ("adapter_alpha", LoRA(alpha=lora.alpha)),
                              ("adapter_target_modules", LoRA(target_modules=lora.target_modules))):
            try:
                checks.parse_adapter(setting)
            except ValueError as exc:
                found.append(Problem(name, str(exc)))
        adapter = state.adapter if lora == LoRA(**checks.ADAPTER_NAMES[state.adapter]) else lora
        if not found:
            try:
                checks.parse_adapter(adapter)
            except ValueError as exc:
                found.append(Problem("adapter", str(exc)))
        raw += found
        if found:
            left_out["adapter"] = "invalid"
        else:
            out["adapter"] = adapter

    # The service's answers, where still true
    current_checks: dict[str, dict[str, Any]] = {}
    for report in reports:
        if report.kind == "check":
            if not report.current(state, report.field):
                continue
            current_checks[report.field] = report.result
            for p in [*(report.result.get("problems") or []), *(report.result.get("bad_lines") or [])]:
                p = p if isinstance(p, dict) else {"message": str(p)}
                name = p.get("field") or report.field
                if name == "train_data_path":  # the service checks the file it is sent as train data
                    name = report.field
                message = p.get("message") or p.get("error") or p.get("reason") or ""
                raw.append(Problem(name, str(message), p.get("file"), p.get("line") or p.get("line_number")))
        else:
            raw += [p for p in report.problems if report.current(state, p.field or "")]

    issues = _group([_word(p, fixes.get(id(p))) for p in raw])
    return Validation(issues, _ordered(out), left_out, info, default_context, current_checks, grid)


def _duration(text: str, unit: str, sweep: bool = False) -> tuple[checks.Duration | None, str | None]:
    """One Duration value as typed (a number of ``unit``): the Duration, or why not (naming the value
    with Sweep on, where the field holds several)."""
    name = UNIT_NAMES.get(unit, unit)
    text = text.strip().replace("_", "")
    if not text:
        return None, f"is required: a whole number of {name}"
    if not text.isdigit():
        if sweep:
            return None, f"{_quote(text)} is not a whole number of {name}"
        return None, f"must be a whole number of {name}, found {_quote(text)}"
    if int(text) == 0:
        return None, (f"'0' must be greater than 0 (0 {name} trains nothing)" if sweep
                      else f"must be greater than 0 (0 {name} trains nothing)")
    try:
        return checks.parse_duration(f"{int(text)}{unit}"), None
    except ValueError as exc:
        return None, str(exc)


def _num_devices(text: str, devices: DeviceInfo | None) -> tuple[int | None, Problem | None]:
    """Devices as typed: the number, and create()'s problem with it (inputs/validate.check_num_devices,
    so the words are the service's); without the service's devices, no upper bound (create() checks it)."""
    text = text.strip().replace("_", "")
    if not re.fullmatch(r"[+-]?\d+", text):
        return None, Problem("num_devices", f"must be a whole number, found {_quote(text)}")
    count = int(text)
    known = Devices(devices.total, devices.described, devices.kind) if devices else Devices(max(count, 1), "")
    try:
        check_num_devices(count, known)
    except (TypeError, ValueError) as exc:
        return count, Problem("num_devices", str(exc))
    return count, None


def _parts(text: str) -> list[str]:
    """A Sweep field's values: comma-separated, blanks dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _twice(field_name: str, parts: list[str], values: list[Any]) -> list[Problem]:
    """A value given twice would make two identical runs."""
    if len(values) != len(parts):
        return []
    seen: set[Any] = set()
    out = []
    for part, value in zip(parts, values, strict=True):
        if value in seen:
            out.append(Problem(field_name, f"{_quote(part)} is given twice: each value makes its own runs"))
        seen.add(value)
    return out


def _sweep_list(grid: dict[str, list[Any]], left_out: dict[str, str], key: str, parts: list[str], values: list[Any],
                raw: list[Problem], field_name: str) -> None:
    """The sweep's list ``key`` when every value of the field is valid; else why it is left out."""
    if parts and len(values) == len(parts) and not any(p.field == field_name for p in raw):
        grid[key] = values
    else:
        left_out[key] = "missing" if not parts else "invalid"


def lora_of(state: FormState) -> LoRA:
    """The LoRA settings as typed (possibly invalid: validate() says what is wrong, next to the field)."""
    if state.adapter_targets == "all-linear":
        modules: tuple[str, ...] | str | None = None
    elif state.adapter_targets == "attention":
        modules = "attention"
    else:
        modules = tuple(part.strip() for part in state.adapter_modules.split(",") if part.strip())
    alpha = state.adapter_alpha.strip()
    return LoRA(
        rank=_number(state.adapter_rank, default=LoRA.rank), alpha=_number(alpha) if alpha else None,
        dropout=state.adapter_dropout, target_modules=modules,
        quantize_base=checks.ADAPTER_NAMES["qlora"]["quantize_base"] if state.adapter == "qlora" else None,
    )


# -- a typed model ------------------------------------------------------------------------------------------
def resolve_model(text: str, models: dict[str, ModelInfo]) -> tuple[ModelInfo | None, str | None]:
    """A get_models() entry by name, a local model folder, or a Hugging Face id in the local cache:
    its facts (maximum context = max_position_embeddings, parameters from config.json), or why not."""
    text = text.strip()
    for name, info in models.items():
        if name.lower() == text.lower():
            return info, None
    if text.startswith(("/", ".", "~", "file:")) or (os.sep in text and Path(os.path.expanduser(text)).exists()):
        folder = Path(os.path.abspath(os.path.expanduser(text.removeprefix("file://"))))
        if not is_folder(folder):
            return None, f"no folder {folder}: give a model folder (with config.json) or a Hugging Face id"
        return _folder_info(folder, str(folder), "local folder")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text):
        repo = hf_hub_cache() / ("models--" + text.replace("/", "--"))
        snap = snapshot_dir(repo) if is_folder(repo) else None
        if snap is None:
            return None, (f"{text} is not in the local Hugging Face cache ({hf_hub_cache()}), and this machine "
                          "downloads nothing: give a local model folder, or a model from the list")
        return _folder_info(snap, text, "Hugging Face cache")
    names = ", ".join(models) or "none"
    return None, f"{_quote(text)} is neither a model of this machine ({names}) nor a model folder or Hugging Face id"


def _folder_info(folder: Path, name: str, source: str) -> tuple[ModelInfo | None, str | None]:
    cfg = catalog.read_config(folder)
    if cfg is None:
        return None, f"{folder} has no config.json: it is not a Hugging Face model folder"
    try:
        weights = any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))
    except OSError:
        weights = False
    if not weights:
        return None, f"{folder} holds no weights (*.safetensors or *.bin)"
    maximum = catalog._positive_int(cfg.get("max_position_embeddings")) or catalog._positive_int(cfg.get("n_positions"))
    parameters = catalog.estimate_parameters(cfg)
    return ModelInfo(name=name, max_context_length=maximum or 2048, source=source, path=str(folder),
                     default_learning_rate=checks.default_learning_rate(parameters), parameters=parameters), None


# -- wording -----------------------------------------------------------------------------------------------
_SWITCH_TASK = re.compile(r"(?:pass|use) task_type='(\w+)'")
_ADAPTER_SUGGESTION = re.compile(r"adapter='(lora|qlora)'")
_CONTEXT_SUGGESTION = re.compile(r"context_length=([\d,]+)")
_DEVICES_SUGGESTION = re.compile(r"num_devices=(\d+)")


def _word(problem: Problem, fix: Fix | None) -> Issue:
    """The problem in the form's words (labels, not API names), with a one-click fix where one exists."""
    message = problem.message
    switch = _SWITCH_TASK.search(message)
    if fix is None and switch and switch.group(1) in TASK_LABELS:
        label = TASK_LABELS[switch.group(1)]
        fix = Fix("task_type", switch.group(1), f"Switch Task to {label}")
    devices = _DEVICES_SUGGESTION.search(message)
    if fix is None and devices and problem.field == "num_devices":  # "One process (num_devices=1) would fit."
        fix = Fix("num_devices", devices.group(1), f"Set Devices to {devices.group(1)}")
    adapter = _ADAPTER_SUGGESTION.search(message)
    if fix is None and adapter and problem.field == "model":
        fix = Fix("adapter", adapter.group(1), f"Switch Fine-tuning to {METHOD_LABELS[adapter.group(1)]}")
    message = _SWITCH_TASK.sub(lambda m: f"switch Task to {TASK_LABELS.get(m.group(1), m.group(1))}", message)
    message = _ADAPTER_SUGGESTION.sub(lambda m: f"Fine-tuning {METHOD_LABELS[m.group(1)]}", message)
    message = _CONTEXT_SUGGESTION.sub(lambda m: f"Context length {m.group(1)}", message)
    message = _DEVICES_SUGGESTION.sub(lambda m: f"Devices {m.group(1)}", message)
    for value, label in TASK_LABELS.items():
        message = re.sub(rf"\b{value}\b", label, message)
    for name, word in LABELS.items():
        if "_" in name:
            message = re.sub(rf"(?<![\w']){name}\b", word, message)
    if problem.field in LABELS:
        field_name, label = problem.field, LABELS[problem.field]
    else:  # a field the form has no place for (the service's environment, ...)
        field_name, label = "", (problem.field or "")
    if label and not message.startswith(label):
        message = f"{label}: {message}" if not message.startswith(("is ", "must ", "asks ")) else f"{label} {message}"
    return Issue(field_name, message, problem.file or None, (problem.line,) if problem.line else (), fix)


def _group(issues: list[Issue]) -> list[Issue]:
    """One issue per (field, message, file): the lines of the same problem merged, each shown once."""
    merged: dict[tuple[str, str, str | None], Issue] = {}
    for issue in issues:
        key = (issue.field, issue.message, issue.file)
        if key in merged:
            seen = merged[key]
            merged[key] = dataclasses.replace(seen, lines=tuple(sorted(set(seen.lines) | set(issue.lines))),
                                              fix=seen.fix or issue.fix)
        else:
            merged[key] = issue
    return list(merged.values())


def line_ranges(lines: tuple[int, ...] | list[int]) -> str:
    """(1, 2, 3, 4, 7) -> 'lines 1-4, 7' (with an en dash); (5,) -> 'line 5'."""
    numbers = sorted(set(lines))
    if len(numbers) == 1:
        return f"line {numbers[0]}"
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(f"{start}{EN_DASH}{prev}" if prev > start else str(start))
        if n is not None:
            start = prev = n
    return "lines " + ", ".join(parts)


# -- the code preview -----------------------------------------------------------------------------------------
def preview_code(v: Validation) -> str:
    """The create() call of the valid parameters, ready to paste; a parameter that is missing or invalid is
    a comment saying so, at its place: its value never reaches the preview. With Sweep on: the
    tunedeck.sweep call, then tunedeck.compare of its runs."""
    if v.sweep is not None:
        return _sweep_code(v)
    lines = [f"    {key}={_literal(value)}," for key, value in v.params.items()]
    for key, why in v.left_out.items():
        label = LABELS.get(key, key)
        comment = (f"    # {key}: missing, fill in {label} above" if why == "missing"
                   else f"    # {key}: left out, {label} is {why} (see the field marked in red)")
        order = PARAMETERS.index(key)
        lines.insert(sum(1 for k in v.params if PARAMETERS.index(k) < order) + sum(
            1 for k in v.left_out if PARAMETERS.index(k) < order), comment)
    return "from tunedeck import foundation_model as fm\n\nrun = fm.create(\n" + "\n".join(lines) + "\n)"


SWEEP_LISTS = ("learning_rates", "training_durations", "lora_ranks")


def _sweep_code(v: Validation) -> str:
    """The tunedeck.sweep call of a Sweep: its lists first, then what every cell shares; a list or
    parameter that is missing or invalid is a comment, as in the create() preview."""
    grid = v.sweep or {}
    order = (*SWEEP_LISTS, *(p for p in PARAMETERS if p not in ("learning_rate", "training_duration")))
    lines: list[str] = []
    for key in order:
        if key in grid:
            lines.append(f"    {key}={_literal(grid[key])},")
        elif key in v.params:
            lines.append(f"    {key}={_literal(v.params[key])},")
        elif key in v.left_out:
            label = LABELS.get(key, key)
            why = v.left_out[key]
            lines.append(f"    # {key}: missing, fill in {label} above" if why == "missing"
                         else f"    # {key}: left out, {label} is {why} (see the field marked in red)")
    head = "import tunedeck\n"
    if "adapter" in v.params and not isinstance(v.params["adapter"], str):
        head += "from tunedeck import foundation_model as fm\n"
    return (head + f"\n# {v.runs} run(s), one per combination, queued\nruns = tunedeck.sweep(\n" + "\n".join(lines)
            + "\n)\ntunedeck.compare(runs)")


def _literal(value: Any) -> str:
    """Python source for a parameter value (JSON string escapes are valid Python)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, LoRA):  # only what differs from LoRA()'s defaults
        default = LoRA()
        settings = [f"{f.name}={_literal(getattr(value, f.name))}" for f in dataclasses.fields(LoRA)
                    if getattr(value, f.name) != getattr(default, f.name)]
        return f"fm.LoRA({', '.join(settings)})"
    return repr(value)


# -- helpers -------------------------------------------------------------------------------------------------
#: create()'s parameters the form has (every one), in the preview's order: types/create_params.py's
PARAMETERS = create_params.api_names()


def _ordered(params: dict[str, Any]) -> dict[str, Any]:
    return {k: params[k] for k in PARAMETERS if k in params}


def _model_name(info: ModelInfo) -> str:
    return Path(info.name).name if info.source == "local folder" else info.name


def _short_file(path: str) -> str:
    """The file's name: the field above holds its path (for a folder of .txt files, the name says which)."""
    return Path(path).name or path


def _quote(text: str) -> str:
    text = text.strip()
    return repr(text if len(text) <= 40 else text[:40] + "…")


def _number(text: str, default: Any = None) -> Any:
    """'32' -> 32, '0.5' -> 0.5, '' -> default; anything else stays text, for parse_adapter to name."""
    text = text.strip()
    if not text:
        return default
    for kind in (int, float):
        try:
            number = kind(text)
        except ValueError:
            continue
        return number if math.isfinite(number) else text
    return text
