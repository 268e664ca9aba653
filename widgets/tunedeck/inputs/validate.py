"""Check a create() request and resolve it into a RunSpec, collecting every problem at once."""

from __future__ import annotations

import dataclasses
import getpass
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunedeck import config
from tunedeck.errors import Problem
from tunedeck.inputs import catalog, datasets, memory, params
from tunedeck.inputs.paths import PathError, local_path, resolve_data
from tunedeck.inputs.spec import DataSource, RunSpec

# Config keys that must agree between a checkpoint and the model it claims to be.
ARCHITECTURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "intermediate_size", "vocab_size")


@dataclass
class RunRequest:
    """The parameters of create(), as the user gave them."""

    model: str
    train_data_path: str
    register_to: str
    task_type: str = params.DEFAULT_TASK_TYPE
    eval_data_path: str | None = None
    eval_prompts: list[str] | None = None
    custom_weights_path: str | None = None
    training_duration: str | None = None
    learning_rate: str | float | None = None
    context_length: str | int | None = None
    experiment_path: str | None = None
    data_prep_cluster_id: str | None = None
    validate_inputs: bool = True
    adapter: str | dict[str, Any] | None = None
    created_by: str | None = field(default=None)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunRequest":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TypeError(f"unknown parameter(s): {', '.join(unknown)}")
        return cls(**d)


def build_spec(req: RunRequest, run_name: str, *, check_data: bool = True) -> tuple[RunSpec | None, list[Problem]]:
    problems: list[Problem] = []

    def attempt(field_name: str, fn, *args):
        try:
            return fn(*args)
        except ValueError as exc:
            problems.append(Problem(field_name, str(exc)))
            return None

    task_type = attempt("task_type", params.check_task_type, req.task_type)
    duration = attempt("training_duration", params.parse_duration, req.training_duration)
    lr = attempt("learning_rate", params.parse_learning_rate, req.learning_rate)
    context_length = attempt("context_length", params.parse_context_length, req.context_length)
    register_name = attempt("register_to", params.registered_model_name, req.register_to, run_name)
    precision = attempt("TUNEDECK_PRECISION (service environment)", config.precision)
    adapter = attempt("adapter", params.parse_adapter, req.adapter)

    model = catalog.resolve_model(req.model)
    if model is None:
        names = ", ".join(m.name for m in catalog.list_models()) or "none (see README: models)"
        problems.append(Problem("model", f"{req.model!r} is not available on this machine. Available: {names}"))
    elif context_length and context_length > model.max_context_length:
        problems.append(Problem("context_length", f"{context_length} is above {model.name}'s maximum context length of {model.max_context_length}"))

    prompts = req.eval_prompts
    if isinstance(prompts, str):
        prompts = [prompts]
    if prompts is not None and not (isinstance(prompts, list) and all(isinstance(p, str) for p in prompts)):
        problems.append(Problem("eval_prompts", "must be a list of strings"))
        prompts = None

    train = evaluation = None
    if task_type:
        train, found = resolve_data(req.train_data_path, task_type, "train_data_path")
        problems += found
        if req.eval_data_path:
            evaluation, found = resolve_data(req.eval_data_path, task_type, "eval_data_path")
            problems += found
        if check_data:
            for source, name in ((train, "train_data_path"), (evaluation, "eval_data_path")):
                if source is not None:
                    problems += datasets.check_data(source, task_type, name)

    weights = None
    if req.custom_weights_path:
        weights = _custom_weights(req.custom_weights_path, model, problems)
    if check_data and not problems:  # at create/validate; at launch the worker re-plans with the tokenized data
        problems += _memory_problems(model, adapter, context_length, precision, weights)

    if problems:
        return None, problems
    gguf = model.path.endswith(".gguf")
    spec = RunSpec(
        name=run_name,
        task_type=task_type,
        model_name=model.name,
        model_path=str(Path(model.path).parent) if gguf else model.path,
        model_gguf_file=Path(model.path).name if gguf else None,
        model_cache_dir=str(config.home() / "cache" / "models" / model.name) if gguf else None,
        train_data=train,
        eval_data=evaluation,
        eval_prompts=list(prompts or []),
        custom_weights_path=weights,
        register_to=register_name,
        experiment_path=req.experiment_path or f"/Users/{req.created_by or getpass.getuser()}/{run_name}",
        run_dir=str(config.runs_root() / run_name),
        mlflow_tracking_uri=config.mlflow_tracking_uri(),
        mlflow_artifact_root=str(config.mlflow_artifact_root()),
        training_duration=str(duration),
        learning_rate=lr,
        context_length=context_length,
        max_context_length=model.max_context_length,
        created_by=req.created_by,
        validate_inputs=req.validate_inputs,
        batch_tokens=config.batch_tokens(),
        precision=precision or "auto",
        adapter=adapter,
    )
    return spec, []


def resolve_checkpoint(path: str) -> Path:
    """A checkpoint folder from its path or from a ``*.symlink`` file naming it."""
    p = local_path(path)
    if p.is_file() and p.suffix == ".symlink":
        p = p.parent / p.read_text().strip()
    elif not p.exists() and p.with_suffix(".symlink").is_file():
        link = p.with_suffix(".symlink")
        p = link.parent / link.read_text().strip()
    return p


def _custom_weights(path: str, model, problems: list[Problem]) -> str | None:
    try:
        folder = resolve_checkpoint(path)
    except (PathError, OSError) as exc:
        problems.append(Problem("custom_weights_path", str(exc)))
        return None
    cfg = catalog.checkpoint_config(folder) if folder.is_dir() else None
    if cfg is None:
        base = catalog.adapter_base(folder) if folder.is_dir() else None
        message = (
            f"a LoRA checkpoint whose base model folder {base} is gone (it was trained on that folder)" if base
            else "not a checkpoint folder (ep#-ba#) or latest-sharded-rank0.symlink of an earlier run"
        )
        problems.append(Problem("custom_weights_path", message, file=str(folder)))
        return None
    if model is not None:
        base = _model_config(model)
        if base:
            diffs = [f"{k} {cfg.get(k)} vs {base.get(k)}" for k in ARCHITECTURE_KEYS if k in base and cfg.get(k) != base.get(k)]
            if diffs:
                problems.append(Problem("custom_weights_path", f"the checkpoint's architecture does not match {model.name}: " + "; ".join(diffs), file=str(folder)))
                return None
    return str(folder)


def _memory_problems(model, adapter: dict | None, context_length: int | None, precision: str | None, weights: str | None) -> list[Problem]:
    """A problem when the run's estimated peak memory exceeds what this machine has (inputs/memory.py)."""
    folder = config.home() / "cache" / "models" / model.name if model.path.endswith(".gguf") else Path(model.path)
    message = memory.check_run(
        folder, context_length=context_length or params.default_context_length(model.max_context_length),
        adapter=adapter, precision=precision or "auto", continues=weights,
    )
    return [Problem("model", message)] if message else []


def _model_config(model) -> dict | None:
    if model.path.endswith(".gguf"):
        cached = config.home() / "cache" / "models" / model.name
        return catalog.read_config(cached)
    return catalog.read_config(Path(model.path))
