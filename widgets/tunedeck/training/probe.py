"""Before Start: what a run will be (tokens, steps, memory plan) and how fast this machine trains it.

The run's data is prepared exactly as the recipe prepares it (tokenize, truncate, pack, ``make_plan``,
``fit_run``), so tokens per epoch, steps and the micro-batch are the ones the worker will report.
The throughput probe, only when the service has no measured figure for this model on this hardware,
loads the model as the worker would and times a few real training steps of one micro-batch each
(the run's own first rows, optimizer included), then a short greedy generation (checkpoints generate
answers to ``eval_prompts``). Its cost is the model load plus ~``PROBE_SECONDS`` of steps: ~1-2 s for
a tiny model, ~5-10 s for SmolLM2-135M on this CPU; it reports what it took (``probe_seconds``).

The service never imports this module: the data-check helper (training/datacheck.py --serve) answers
requests of ``"kind": "estimate"`` with ``answer`` below (service/estimate.py asks it).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

from tunedeck.inputs.memory import MICRO_BATCH_TOKENS
from tunedeck.inputs.params import check_task_type, parse_duration
from tunedeck.inputs.spec import DataSource, RunSpec

PROBE_SECONDS = 1.5  # time steps until this much has been measured (at least MIN_STEPS, at most MAX_STEPS)
MIN_STEPS, MAX_STEPS = 2, 8
GENERATION_TOKENS = 8  # tokens of the generation probe


def adapter_mode(adapter: dict | None) -> str:
    """How the run trains, as the throughput cache tells runs apart (service/estimate.py says the same)."""
    if not adapter:
        return "full"
    return "lora-4bit" if adapter.get("quantize_base") else "lora"


def estimate(spec: RunSpec, probe: bool = True) -> dict[str, Any]:
    """Plan, memory and (when ``probe``) measured throughput of ``spec``'s run; errors as TrainingFailure."""
    from tunedeck.training.attention import choose_attention
    from tunedeck.training.data import make_split, tokenize_source
    from tunedeck.training.memory_plan import fit_run
    from tunedeck.training.models import load_config, load_tokenizer, model_folder, pick_device, resolve_context_length
    from tunedeck.training.plan import DEFAULT_BATCH_TOKENS, PACK_TOKENS, make_plan
    from tunedeck.training.recipe import _weights_folder

    started = time.monotonic()
    task = check_task_type(spec.task_type)
    duration = parse_duration(spec.training_duration)
    folder = model_folder(spec)
    tokenizer = load_tokenizer(folder)
    config = load_config(folder)
    device = pick_device(spec.precision, config)
    kind = device.device.type if device.device.type in DEFAULT_BATCH_TOKENS else "cpu"
    context_length = resolve_context_length(spec, config)
    train = make_split(tokenize_source(spec.train_data, task, "train_data_path", tokenizer, context_length),
                       "train_data_path", context_length, PACK_TOKENS[kind])
    eval_tokens = 0
    if spec.eval_data is not None:
        evals = make_split(tokenize_source(spec.eval_data, task, "eval_data_path", tokenizer, context_length),
                           "eval_data_path", context_length, PACK_TOKENS[kind])
        eval_tokens = evals.data.tokens
    batch_tokens = int(spec.batch_tokens or DEFAULT_BATCH_TOKENS[kind])
    first_rows = train.rows(0)
    plan = make_plan(duration, len(first_rows), train.data.tokens, batch_tokens)
    adapter = spec.adapter
    if adapter is None and spec.custom_weights_path:
        from tunedeck.inputs import memory

        adapter = memory.checkpoint_adapter(spec.custom_weights_path)
    packed_mask = choose_attention(device.device.type, device.compute_dtype).packed_mask
    fit = fit_run(
        _weights_folder(spec, folder), adapter=adapter, autocast=device.autocast_dtype is not None,
        context_length=context_length, row_tokens=max([train.capacity, *train.lengths]), device=device.device,
        micro_batch_tokens=MICRO_BATCH_TOKENS[kind], dense_mask=packed_mask == "dense",
    )
    micro = fit.plan.micro_batch_tokens if fit.plan is not None else MICRO_BATCH_TOKENS[kind]
    # the tokens the loop trains on: whole epochs, then the steps of a last partial one
    full, rest = divmod(plan.total_steps, plan.steps_per_epoch)
    train_tokens = full * plan.tokens_per_epoch
    if rest:
        train_tokens += sum(len(e) for row in train.rows(full)[: rest * plan.rows_per_step] for e in row)
    result: dict[str, Any] = {
        "ok": True,
        "device": device.label,
        "dtype": device.dtype_label,
        "adapter": adapter_mode(adapter),
        "context_length": context_length,
        "rows": train.data.rows,
        "tokens_per_epoch": plan.tokens_per_epoch,
        "packed_rows": plan.rows_per_epoch,
        "steps_per_epoch": plan.steps_per_epoch,
        "total_steps": plan.total_steps,
        "tokens_per_step": plan.tokens_per_step,
        "epochs": round(plan.epochs, 4),
        "train_tokens": int(train_tokens),
        "checkpoints": len(plan.checkpoint_steps),
        "eval_tokens": eval_tokens,
        "eval_prompts": len(spec.eval_prompts or []),
        "micro_batch_tokens": micro,
        "memory": fit.plan.to_dict() if fit.plan is not None else None,
        "memory_note": fit.describe(),
        "plan_seconds": round(time.monotonic() - started, 3),
    }
    if probe:
        result["probe"] = _probe(spec, folder, device, fit, first_rows, micro, tokenizer, packed_mask)
    return result


def _probe(spec: RunSpec, folder: Path, device: Any, fit: Any, rows: list, micro: int, tokenizer: Any,
           packed_mask: Any) -> dict[str, Any]:
    """Load the model as the worker does and time training steps of one micro-batch of the run's rows."""
    import torch

    from tunedeck.training import adapters
    from tunedeck.training.failures import StopSignal
    from tunedeck.training.models import count_parameters, load_model
    from tunedeck.training.optim import make_optimizer
    from tunedeck.training.recipe import BETAS, train_step

    started = time.monotonic()
    model = load_model(folder, spec, device, bf16_storage=fit.bf16_storage)
    if fit.plan is not None and fit.plan.activation_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    load_seconds = time.monotonic() - started
    optimizer = make_optimizer(adapters.trainable_parameters(model), 1e-6, BETAS, 0.0, device.device.type)
    batch: list = []  # whole packed rows up to one micro-batch (at least one row)
    for row in rows:
        if batch and sum(len(e) for r in [*batch, row] for e in r) > micro:
            break
        batch.append(row)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop = StopSignal()
    try:
        train_step(model, optimizer, batch, micro, pad_id, device, stop, packed_mask)  # warm-up: not timed
        tokens, seconds, steps = 0, 0.0, 0
        while steps < MIN_STEPS or (seconds < PROBE_SECONDS and steps < MAX_STEPS):
            t0 = time.monotonic()
            _, n, _ = train_step(model, optimizer, batch, micro, pad_id, device, stop, packed_mask)
            seconds += time.monotonic() - t0
            tokens += n
            steps += 1
        model.eval()
        prompt = torch.tensor([[tokenizer.eos_token_id] * 4], device=device.device)
        t0 = time.monotonic()
        with torch.no_grad(), device.autocast():
            model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=GENERATION_TOKENS,
                           min_new_tokens=GENERATION_TOKENS, do_sample=False, pad_token_id=pad_id)
        generation = time.monotonic() - t0
        parameters = count_parameters(model)
    finally:
        del model, optimizer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {
        "tokens_per_second": tokens / max(1e-9, seconds),
        "generated_tokens_per_second": GENERATION_TOKENS / max(1e-9, generation),
        "load_seconds": round(load_seconds, 3),
        "steps": steps,
        "step_tokens": tokens // max(1, steps),
        "parameters": parameters,
        "probe_seconds": round(time.monotonic() - started, 3),
    }


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """One ``"kind": "estimate"`` request: ``spec`` (a RunSpec as a dict) and ``probe`` (measure throughput)."""
    from tunedeck.training.failures import TrainingFailure

    try:
        raw = dict(request["spec"])
        raw["train_data"] = DataSource(**raw["train_data"])
        raw["eval_data"] = DataSource(**raw["eval_data"]) if raw.get("eval_data") else None
        spec = RunSpec(**raw)
        return estimate(spec, probe=bool(request.get("probe", True)))
    except TrainingFailure as failure:
        field, _, message = str(failure).partition(": ")
        return _failure(message if message else str(failure), field if message else "model")
    except Exception as error:  # noqa: BLE001 - the helper answers every request, and says why it could not
        return _failure(f"the estimate failed: {type(error).__name__}: {str(error)[:300]}", "model")


def _failure(message: str, field: str) -> dict[str, Any]:
    return {"ok": False, "message": message,
            "problems": [{"field": field, "message": message, "file": None, "line": None}]}
