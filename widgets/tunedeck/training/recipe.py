"""The training recipe: one run, read top to bottom.

    setup       device, model files, tokenizer, context length
    data        read, check, tokenize, pack                      -> DATA_VALIDATED
    memory      fit the run in what the device has free, or refuse it before loading weights
    model       weights (+ LoRA adapters), learning rate, optimizer, schedule -> MODEL_INITIALIZED
    tracking    MLflow experiment and run                         -> run fields
    train       steps of packed rows, gradient accumulation       -> TRAIN_UPDATED, metrics
    checkpoint  save, eval loss, eval_prompts generations         -> CHECKPOINT_SAVED, EVAL_*
    export      final HF folder, MLflow artifacts, registry       -> TRAIN_FINISHED, MODEL_REGISTERED
    cleanup     close the MLflow run with the outcome

Resume: every checkpoint, and a snapshot in RUN_DIR/resume every ``resume_every_seconds``, holds the
trainer state (checkpoint.py); ``resume_from`` continues the same run from one (-> TRAIN_RESUMED),
bit for bit on CPU: same weights, optimizer and schedule state, RNG, and the same rows for each step.

Stop: a stop request (SIGTERM) is honoured between micro-batches, in eval and generation, before
export and before registration; a checkpoint being written is finished first. A stopped run never
registers a model and its MLflow run ends KILLED.

Optimizer: AdamW, betas (0.9, 0.95), no weight decay, gradient clipping at norm 1.0; LR warms up
linearly over 2% of the steps (at least one) and decays linearly towards 0 (see plan.lr_multiplier).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from array import array
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunedeck.inputs import memory
from tunedeck.inputs.memory import MICRO_BATCH_TOKENS
from tunedeck.inputs.params import check_task_type, default_learning_rate, describe_adapter, parse_duration
from tunedeck.inputs.spec import RunSpec
from tunedeck.training import adapters, distributed, sharding
from tunedeck.training.attention import PackedMask, choose_attention, plan_of_model
from tunedeck.training.checkpoint import (
    OPTIMIZER_DCP,
    TRAINER_STATE,
    SavedCheckpoint,
    capture_rng,
    check_same_run,
    checkpoint_name,
    checkpoint_tmp,
    export_merged,
    export_model,
    forget_resume_points_after,
    load_trainer_state,
    prepare_tmp,
    restore_rng,
    resume_info,
    resume_tmp,
    save_checkpoint,
    save_resume_snapshot,
    saved_checkpoints,
)
from tunedeck.training.data import Split, make_split, tokenize_source
from tunedeck.training.evaluate import eval_loss, generate
from tunedeck.training.failures import StopRequested, StopSignal, TrainingFailure
from tunedeck.training.loss import loss_sum
from tunedeck.training.memory_plan import fit_run
from tunedeck.training.models import (
    Device,
    count_parameters,
    load_config,
    load_model,
    load_tokenizer,
    model_folder,
    pick_device,
    resolve_context_length,
)
from tunedeck.training.optim import make_optimizer
from tunedeck.training.packing import collate, micro_batches
from tunedeck.training.plan import DEFAULT_BATCH_TOKENS, PACK_TOKENS, Plan, make_plan
from tunedeck.training.progress import Progress
from tunedeck.training.report import Reporter, format_duration, format_rate
from tunedeck.training.tokenize import Tokenized
from tunedeck.training.tracking import Tracker
from tunedeck.types import EventType

log = logging.getLogger(__name__)

SEED = 0
BETAS = (0.9, 0.95)
MAX_GRAD_NORM = 1.0


@dataclass
class Result:
    """What a finished run produced (the worker reports it; tests assert on it)."""

    model_dir: Path
    checkpoints: list[SavedCheckpoint]
    losses: list[float]
    mlflow_run_id: str
    registered_model_version: int


def run(spec: RunSpec, reporter: Reporter, stop: StopSignal | None = None) -> Result:
    stop = stop or StopSignal()
    run_dir = Path(spec.run_dir)

    # --- setup -----------------------------------------------------------------------------------
    try:
        task = check_task_type(spec.task_type)
    except ValueError as error:
        raise TrainingFailure(f"task_type: {error}") from None
    try:
        duration = parse_duration(spec.training_duration)
    except ValueError as error:
        raise TrainingFailure(f"training_duration: {error}") from None
    torch.manual_seed(SEED)
    world = distributed.world_from_env()  # several processes (torchrun): DDP or FSDP, rank 0 reports (distributed.py)
    shard_setting = sharding.setting()  # TUNEDECK_SHARDING: auto, ddp or fsdp (sharding.py)
    distributed.init(world)
    folder = model_folder(spec)
    tokenizer = load_tokenizer(folder)
    config = load_config(folder)
    device = pick_device(spec.precision, config)  # on CPU, `auto` probes a matmul of this model's shape
    if world.enabled:  # every rank computes in rank 0's precision (each rank's CPU probe may differ)
        device = dataclasses.replace(device, **world.broadcast(
            {"autocast_dtype": device.autocast_dtype, "precision_reason": device.precision_reason,
             "bf16_speedup": device.bf16_speedup}))
    kind = device.device.type if device.device.type in DEFAULT_BATCH_TOKENS else "cpu"
    context_length = resolve_context_length(spec, config)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    # --- data ------------------------------------------------------------------------------------
    train = make_split(
        tokenize_source(spec.train_data, task, "train_data_path", tokenizer, context_length),
        "train_data_path", context_length, PACK_TOKENS[kind],
    )
    evals: Split | None = None
    if spec.eval_data is not None:
        evals = make_split(
            tokenize_source(spec.eval_data, task, "eval_data_path", tokenizer, context_length),
            "eval_data_path", context_length, PACK_TOKENS[kind],
        )
    message = train.describe("train") + (f"; {evals.describe('eval')}" if evals else "")
    summary = train.summary()
    reporter.event(
        EventType.DATA_VALIDATED, message, rows=summary["rows"], tokens=summary["tokens"],
        packed_rows=summary["packed_rows"], context_length=context_length,
        train=summary, eval=evals.summary() if evals else None,
    )

    # --- plan, and the resume point it must match ------------------------------------------------
    batch_tokens = int(spec.batch_tokens or DEFAULT_BATCH_TOKENS[kind])
    first_rows = train.rows(0)
    plan = make_plan(duration, len(first_rows), train.data.tokens, batch_tokens)
    fingerprint = run_fingerprint(plan, train)
    resume = Path(spec.resume_from) if spec.resume_from else None
    resumed: dict[str, Any] = {}
    if resume is not None:
        resumed = check_resume_point(spec, resume, fingerprint)  # before any weight is loaded

    # --- memory: decided before any weight is loaded ---------------------------------------------
    lora_adapter = spec.adapter or (memory.checkpoint_adapter(spec.custom_weights_path) if spec.custom_weights_path else None)
    sharding.check_setting(shard_setting, world, lora=lora_adapter is not None)
    fit = fit_run(
        _weights_folder(spec, folder),
        adapter=lora_adapter,
        autocast=device.autocast_dtype is not None,
        context_length=context_length,
        row_tokens=max([train.capacity, *train.lengths]),  # a long example trains alone: the largest micro-batch
        device=device.device,
        micro_batch_tokens=MICRO_BATCH_TOKENS[kind],
        dense_mask=choose_attention(device.device.type, device.compute_dtype).packed_mask == "dense",
        processes=world.size,
        sharding=shard_setting,
    )
    sharded = bool(world.broadcast(fit.sharded)) if world.enabled else False  # every rank as rank 0 decided

    # --- model, optimizer, schedule --------------------------------------------------------------
    weights = dataclasses.replace(spec, custom_weights_path=str(resume)) if resume else spec
    # FSDP on GPUs: weights load on the CPU and each rank moves only its shards to its GPU (sharding.shard)
    on = dataclasses.replace(device, device=torch.device("cpu")) if sharded else device
    model = load_model(folder, weights, on, bf16_storage=fit.bf16_storage)
    if fit.plan is not None and fit.plan.activation_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    adapter = adapters.adapter_settings(model) if adapters.is_peft(model) else None
    if adapter is not None:
        if spec.adapter is not None and not spec.custom_weights_path:
            adapter = dict(spec.adapter)  # as asked: "all linear layers" reads better than their list
        reporter.run(adapter=adapter)  # a continued LoRA checkpoint trains its own adapter
    parameters = count_parameters(model)
    trainable = count_parameters(model, trainable_only=True)
    learning_rate = float(spec.learning_rate or default_learning_rate(parameters, adapter))
    fingerprint["learning_rate"] = learning_rate
    if resume is not None:
        check_same_run(resumed.get("fingerprint") or {}, {"learning_rate": learning_rate}, resume)
    micro_batch_tokens = fit.plan.micro_batch_tokens if fit.plan is not None else MICRO_BATCH_TOKENS[kind]
    root = sharding.shard(model) if sharded else None  # model's parameters are now this rank's shards
    if sharded:
        sharding.same_rng(world, device.device.type)
    optimizer = make_optimizer(adapters.trainable_parameters(model), learning_rate, BETAS, 0.0, device.device.type)
    attention = plan_of_model(model)  # how packed rows keep their examples apart
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, plan.lr_multiplier)
    state: dict[str, Any] | None = None
    if resume is not None:
        state = load_trainer_state(resume)
        if state.get("optimizer") == OPTIMIZER_DCP:  # a sharded run's: resharded to this one, any size
            sharding.load_optimizer(model, root, optimizer, sharding.optimizer_folder(resume))
        elif root is not None:  # a whole optimizer state, sharded onto this FSDP run
            sharding.load_full_optimizer(model, root, optimizer, state.get("optimizer") or {})
        try:
            if root is None and state.get("optimizer") != OPTIMIZER_DCP:
                optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except (KeyError, ValueError, RuntimeError) as error:
            raise TrainingFailure(
                f"resume_from: the optimizer state in {resume} does not fit this model's trainable parameters ({error})"
            ) from None
    dtype = device.dtype_label
    parallel = f" {world.size} processes, {'FSDP (sharded)' if sharded else 'DDP (replicas)'}." if world.enabled else ""
    reporter.event(
        EventType.MODEL_INITIALIZED,
        f"{spec.model_name}: {parameters:,} parameters, {describe_training(adapter, trainable, parameters)}, "
        f"{dtype} on {device.label}; learning rate {learning_rate:g}, "
        f"context length {context_length:,}; {plan.total_steps:,} steps of {plan.rows_per_step} row(s) "
        f"(~{plan.tokens_per_step:,} tokens), {plan.steps_per_epoch:,} per epoch, {plan.warmup_steps} warmup.{parallel} "
        f"Precision: {device.precision_reason}. Memory: {fit.describe()}",
        parameters=parameters, trainable_parameters=trainable, adapter=adapter,
        dtype=dtype, precision_reason=device.precision_reason, bf16_speedup=device.bf16_speedup,
        device=device.label, attention=attention.label, learning_rate=learning_rate,
        memory=fit.plan.to_dict() if fit.plan is not None else None, bf16_storage=fit.bf16_storage,
        context_length=context_length, total_steps=plan.total_steps, steps_per_epoch=plan.steps_per_epoch,
        warmup_steps=plan.warmup_steps, rows_per_step=plan.rows_per_step, tokens_per_step=plan.tokens_per_step,
        row_tokens=train.capacity, micro_batch_tokens=micro_batch_tokens, batch_tokens=batch_tokens,
        checkpoint_steps=plan.checkpoint_steps,
        processes=world.size, sharding=("fsdp" if sharded else "ddp") if world.enabled else None,
    )

    # --- tracking --------------------------------------------------------------------------------
    tracker = distributed.NoTracking(spec.resume_mlflow_run_id) if not world.main else Tracker.start(
        spec.mlflow_tracking_uri, spec.experiment_path, spec.mlflow_artifact_root, spec.name,
        params={
            "model": spec.model_name, "task_type": task, "train_data_path": spec.train_data.origin,
            "eval_data_path": spec.eval_data.origin if spec.eval_data else None,
            # a Unity Catalog table's Delta version, as read (inputs/tables.py); None (not logged) for files
            "train_data_version": spec.train_data.version,
            "eval_data_version": spec.eval_data.version if spec.eval_data else None,
            "custom_weights_path": spec.custom_weights_path, "training_duration": str(duration),
            "learning_rate": learning_rate, "context_length": context_length, "total_steps": plan.total_steps,
            "steps_per_epoch": plan.steps_per_epoch, "warmup_steps": plan.warmup_steps,
            "rows_per_step": plan.rows_per_step, "row_tokens": train.capacity, "batch_tokens": batch_tokens,
            "micro_batch_tokens": micro_batch_tokens,
            "optimizer": f"AdamW(betas={BETAS}, weight_decay=0.0)", "max_grad_norm": MAX_GRAD_NORM,
            "scheduler": "linear warmup (2%) + linear decay to 0", "parameters": parameters, "dtype": dtype,
            "precision_reason": device.precision_reason, "attention": attention.label,
            "seed": SEED, "eval_prompts": json.dumps(spec.eval_prompts) if spec.eval_prompts else None,
            "adapter": describe_adapter(adapter), "trainable_parameters": trainable,
            # every create() argument, as the run used it (learning rate, duration, context above)
            "register_to": spec.register_to, "experiment_path": spec.experiment_path,
            "data_prep_cluster_id": spec.data_prep_cluster_id, "validate_inputs": spec.validate_inputs,
            "num_devices": spec.num_devices,
            "sharding": ("fsdp" if sharded else "ddp") if world.enabled else None,
        },
        tags={"tunedeck.run": spec.name, **({"mlflow.user": spec.created_by} if spec.created_by else {})},
        run_id=spec.resume_mlflow_run_id,
    )
    reporter.run(mlflow_experiment_id=tracker.experiment_id, mlflow_run_id=tracker.run_id,  # and the values the run uses
                 learning_rate=learning_rate, context_length=context_length, training_duration=str(duration))

    try:
        with stop.safe_points():
            # --- train ---------------------------------------------------------------------------
            done = int(state["step"]) if state is not None else 0  # steps already trained (resume)
            progress = Progress(plan.total_steps, len([s for s in plan.checkpoint_steps if s > done]))
            checkpoints: list[SavedCheckpoint] = saved_checkpoints(run_dir, done) if state is not None else []
            losses: list[float] = [float(x) for x in state["losses"]] if state is not None else []
            epoch = plan.epoch_of(done + 1)
            rows = first_rows if epoch == 0 else train.rows(epoch)
            eval_rows = evals.rows() if evals else []
            extra = {"adapter": adapter} if adapter else None
            # DDP (weights stay in `model`), or FSDP's root (`model` holds the shards)
            trained = root if root is not None else distributed.wrap(model) if world.enabled else model

            def trainer_state(step: int) -> dict[str, Any]:
                return {
                    "format": 1, "step": step, "epoch": plan.epoch_of(step),
                    "optimizer": OPTIMIZER_DCP if sharded else optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": capture_rng(device.device.type), "losses": list(losses),
                    "fingerprint": fingerprint, "mlflow_run_id": tracker.run_id,
                }

            def save_sharded(step: int, snapshot: bool = False) -> SavedCheckpoint:
                """Every rank: consolidated weights to rank 0, optimizer shards by DCP; rank 0 writes the rest."""
                epochs = plan.completed_epochs(step)
                tmp = resume_tmp(run_dir) if snapshot else checkpoint_tmp(run_dir, epochs, step)
                if world.main:
                    prepare_tmp(tmp)
                world.barrier()
                full = sharding.full_weights(root)
                sharding.save_optimizer(root, optimizer, sharding.optimizer_folder(tmp))
                name = checkpoint_name(epochs, step)
                saved = SavedCheckpoint(name, run_dir / "checkpoints" / name, epochs, step, step, "")
                if world.main and snapshot:
                    save_resume_snapshot(model, run_dir, trainer_state(step), extra, weights=full, prepared=True)
                elif world.main:
                    saved = save_checkpoint(model, tokenizer, run_dir, epochs, step, step, extra=extra,
                                            state=trainer_state(step), weights=full, prepared=True)
                world.barrier()
                return saved

            if state is not None and resume is not None:
                if world.main:
                    forget_resume_points_after(run_dir, done)  # an older point was chosen: later ones are abandoned
                restore_rng(state["rng"])
                name = resume.name if resume.parent.name == "checkpoints" else "the resume snapshot"
                reporter.event(
                    EventType.TRAIN_RESUMED, f"resumed from {name} at step {done:,} of {plan.total_steps:,}",
                    step=done, total_steps=plan.total_steps, resume_from=str(resume), mlflow_run_id=tracker.run_id,
                )
                reporter.run(progress=progress.percent(done))
            every = float(spec.resume_every_seconds or 0)
            last_resume_point = time.monotonic()
            for step in range(done + 1, plan.total_steps + 1):
                if plan.epoch_of(step) != epoch:
                    epoch = plan.epoch_of(step)
                    rows = train.rows(epoch)
                started = time.monotonic()
                distributed.test_hook(world, step)
                lr = scheduler.get_last_lr()[0]
                if sharded:
                    loss, tokens, grad_norm = sharding.step(
                        trained, optimizer, rows[plan.rows_of(step)], micro_batch_tokens, pad_id, device, stop,
                        attention.packed_mask, world, MAX_GRAD_NORM,
                    )
                else:
                    loss, tokens, grad_norm = train_step(
                        trained, optimizer, rows[plan.rows_of(step)], micro_batch_tokens, pad_id, device, stop,
                        attention.packed_mask, world,
                    )
                scheduler.step()
                seconds = time.monotonic() - started
                progress.step_done(tokens, seconds)
                losses.append(loss)
                values = {"train/loss": loss, "train/lr": lr, "train/tokens_per_second": tokens / max(1e-9, seconds)}
                reporter.metrics(step, values)
                tracker.log_metrics(step, {**values, "train/grad_norm": grad_norm})
                if progress.should_report(step):
                    report_progress(reporter, plan, progress, step, loss, lr)

                # --- checkpoint ------------------------------------------------------------------
                if step in plan.checkpoint_steps and not world.main and not sharded:
                    world.barrier()  # rank 0 saves and evaluates (sharded: every rank takes part)
                elif step in plan.checkpoint_steps:
                    stop.check()  # a stop request never starts a new checkpoint (one under way is finished)
                    started = time.monotonic()
                    saved = save_sharded(step) if sharded else save_checkpoint(
                        model, tokenizer, run_dir, plan.completed_epochs(step), step, step, extra=extra,
                        state=trainer_state(step),
                    )
                    last_resume_point = time.monotonic()
                    checkpoints.append(saved)
                    reporter.event(
                        EventType.CHECKPOINT_SAVED, f"checkpoint {saved.name} saved",
                        checkpoint=saved.name, path=str(saved.path), epoch=saved.epoch, batch=saved.batch,
                    )
                    stop.check()
                    with sharding.gathered(root):  # sharded: every rank computes, rank 0 reports
                        evaluate(model, tokenizer, spec, task, evals, eval_rows, pad_id, device, kind, saved, reporter,
                                 tracker, attention.packed_mask, stop, world if sharded else None)
                    progress.checkpoint_done(time.monotonic() - started)
                    world.barrier()
                elif sharded and every > 0 and world.broadcast(
                        time.monotonic() - last_resume_point >= every and not stop.requested):  # rank 0's clock
                    save_sharded(step, snapshot=True)
                    last_resume_point = time.monotonic()
                elif world.main and every > 0 and time.monotonic() - last_resume_point >= every and not stop.requested:
                    folder_saved = save_resume_snapshot(model, run_dir, trainer_state(step), extra)
                    last_resume_point = time.monotonic()
                    log.debug("resume snapshot at step %d in %s", step, folder_saved)
            tracker.flush()
            reporter.event(
                EventType.TRAIN_FINISHED,
                f"training finished: {plan.total_steps:,} steps, final loss {losses[-1]:.4f}, "
                f"{format_rate(progress.tokens_per_second)}",
                steps=plan.total_steps, loss=losses[-1], tokens_per_second=progress.tokens_per_second,
            )

            # --- export --------------------------------------------------------------------------
            stop.check()
            if not world.main:  # rank 0 exports, logs and registers the model
                tracker.finish("FINISHED")
                return Result(run_dir / "model", checkpoints, losses, tracker.run_id, 0)
            if adapter is not None:  # registered with the adapter merged in: loads anywhere, no PEFT needed
                model_dir = export_merged(adapters.merge(model), tokenizer, checkpoints[-1].path, run_dir)
            else:
                model_dir = export_model(checkpoints[-1].path, run_dir)
            stop.check()
            source = tracker.log_model_folder(model_dir)
            stop.check()  # a stopped run never registers a model
            version = tracker.register(spec.register_to, source)
            reporter.run(registered_model_name=spec.register_to, registered_model_version=version, progress=100.0)
            reporter.event(
                EventType.MODEL_REGISTERED, f"registered {spec.register_to} version {version}",
                name=spec.register_to, version=version, mlflow_run_id=tracker.run_id, source=source,
            )
    # --- cleanup ---------------------------------------------------------------------------------
    except StopRequested:
        tracker.finish("KILLED")
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    return Result(model_dir, checkpoints, losses, tracker.run_id, version)


def train_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    rows: list[list[Tokenized]],
    micro_batch_tokens: int,
    pad_id: int,
    device: Device,
    stop: StopSignal,
    packed_mask: PackedMask = "dense",
    world: distributed.World | None = None,
) -> tuple[float, int, float]:
    """One optimizer step over ``rows``: (mean token loss, tokens, gradient norm before clipping).

    Each micro-batch's summed loss is divided by the loss-bearing tokens of the *whole step*, so the
    accumulated gradient is that of the mean over the step's tokens however rows are grouped.
    With several processes ``model`` is the DDP-wrapped loss (distributed.wrap): see distributed_step.
    """
    if world is not None and world.enabled:
        return distributed_step(model, optimizer, rows, micro_batch_tokens, pad_id, device, stop, packed_mask, world)
    count = sum(e.loss_tokens for row in rows for e in row)
    total, tokens = 0.0, 0
    for group in micro_batches(rows, micro_batch_tokens):
        stop.check()
        batch = collate(group, pad_id, device.compute_dtype, packed_mask).to(device.device)
        with device.autocast():
            loss, _ = loss_sum(model, batch)
        (loss / count).backward()
        total += float(loss.detach())
        tokens += batch.tokens
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / count, tokens, grad_norm


def distributed_step(
    model: Any, optimizer: torch.optim.Optimizer, rows: list[list[Tokenized]], micro_batch_tokens: int,
    pad_id: int, device: Device, stop: StopSignal, packed_mask: PackedMask, world: distributed.World,
) -> tuple[float, int, float]:
    """train_step on this rank's share ``rows[rank::world]`` of the step's rows, the same step as one process's.

    The loss is normalized by the step's global count of loss tokens, times the world size since DDP
    averages gradients: the averaged gradient is the one-process gradient. Gradients are all-reduced
    once per step, on each rank's last micro-batch (``no_sync`` before it): ranks may have different
    numbers of micro-batches. A rank with no row in this step (fewer rows than ranks) still joins that
    all-reduce with a zero-weight pass over the step's first row (DDP needs each rank's backward), which
    adds exactly zero to the gradient and nothing to the loss or token counts.
    """
    mine = world.share(rows)
    count = world.sum(sum(e.loss_tokens for row in mine for e in row))[0]
    groups = micro_batches(mine, micro_batch_tokens) or micro_batches(rows[:1], micro_batch_tokens)
    weight = world.size / count if mine else 0.0
    total, tokens = 0.0, 0
    for i, group in enumerate(groups):
        stop.check()
        batch = collate(group, pad_id, device.compute_dtype, packed_mask).to(device.device)
        with nullcontext() if i == len(groups) - 1 else model.no_sync():
            with device.autocast():
                loss = model(batch)
            (loss * weight).backward()
        if mine:
            total += float(loss.detach())
            tokens += batch.tokens
    total, all_tokens = world.sum(total, tokens)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / count, int(all_tokens), grad_norm


def evaluate(
    model: Any, tokenizer: Any, spec: RunSpec, task: str, evals: Split | None, eval_rows: list,
    pad_id: int, device: Device, kind: str, saved: SavedCheckpoint, reporter: Reporter, tracker: Tracker,
    packed_mask: PackedMask = "dense", stop: StopSignal | None = None, world: distributed.World | None = None,
) -> None:
    """Eval loss on the eval data and generations for eval_prompts, at a checkpoint (``world``: a
    sharded run's, whose ranks all compute them)."""
    if evals is not None:
        loss = eval_loss(model, eval_rows, MICRO_BATCH_TOKENS[kind], pad_id, device, packed_mask, stop)
        reporter.metrics(saved.step, {"eval/loss": loss})
        tracker.log_metrics(saved.step, {"eval/loss": loss}, force=True)
        reporter.event(
            EventType.EVAL_COMPLETED, f"eval loss {loss:.4f} at {saved.name}",
            step=saved.step, checkpoint=saved.name, eval_loss=loss,
        )
    if spec.eval_prompts:
        generations = generate(model, tokenizer, spec.eval_prompts, task, device, stop, world)
        tracker.log_generations(saved.name, saved.step, generations)
        reporter.event(
            EventType.EVAL_GENERATIONS, f"{len(generations)} generation(s) at {saved.name}",
            checkpoint=saved.name, step=saved.step, generations=generations,
        )


def run_fingerprint(plan: Plan, train: Split) -> dict[str, Any]:
    """What a resume needs unchanged: the plan, and the tokenized data whose seeded packing gives each step its rows."""
    digest = hashlib.sha256()
    for example in train.examples:
        digest.update(array("q", example.input_ids).tobytes())
        digest.update(array("q", example.labels).tobytes())
    return {
        "total_steps": plan.total_steps, "steps_per_epoch": plan.steps_per_epoch, "rows_per_step": plan.rows_per_step,
        "tokens_per_epoch": plan.tokens_per_epoch, "packed_rows": plan.rows_per_epoch, "row_tokens": train.capacity,
        "examples": len(train.examples), "data_sha256": digest.hexdigest()[:16],
    }


def check_resume_point(spec: RunSpec, resume: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """resume_from's checkpoint.json / resume.json, once it is known to belong to a run like this one."""
    info = resume_info(resume)
    if info is None:
        raise TrainingFailure(
            f"resume_from: {resume} is not a resume point (no {TRAINER_STATE} beside a checkpoint.json or resume.json); "
            "only the latest checkpoint or RUN_DIR/resume keeps one"
        )
    check_same_run(info.get("fingerprint") or {}, fingerprint, resume)
    custom = spec.custom_weights_path
    lora = spec.adapter is not None or bool(custom and adapters.is_adapter_checkpoint(custom))
    if adapters.is_adapter_checkpoint(resume) != lora:
        held, trains = ("a LoRA adapter", "all weights") if not lora else ("full weights", "a LoRA adapter")
        raise TrainingFailure(f"resume_from: {resume} holds {held} but this run trains {trains}")
    return info


def _weights_folder(spec: RunSpec, folder: Path) -> Path:
    """The folder whose weights the run loads (a full checkpoint's, or the base's): what memory is planned for."""
    custom = Path(spec.custom_weights_path) if spec.custom_weights_path else None
    return custom if custom is not None and not adapters.is_adapter_checkpoint(custom) else folder


def describe_training(adapter: dict | None, trainable: int, parameters: int) -> str:
    if adapter is None:
        return "full fine-tuning"
    return f"{describe_adapter(adapter)}: {trainable:,} train ({100 * trainable / max(1, parameters):.2f}%)"


def report_progress(reporter: Reporter, plan: Plan, progress: Progress, step: int, loss: float, lr: float) -> None:
    epochs = max(1, -(-plan.total_steps // plan.steps_per_epoch))
    eta = progress.eta_seconds(step)
    tps = progress.tokens_per_second
    reporter.event(
        EventType.TRAIN_UPDATED,
        f"[ep {plan.epoch_of(step) + 1}/{epochs}] [ba {step}/{plan.total_steps}] loss {loss:.4f}, "
        f"{format_rate(tps)}, ETA {format_duration(eta)}",
        step=step, total_steps=plan.total_steps, epoch=round(step / plan.steps_per_epoch, 4),
        progress=progress.percent(step), loss=loss, lr=lr, tokens_per_second=tps, eta_seconds=round(eta, 1),
    )
    reporter.run(progress=progress.percent(step), estimated_end_time=progress.estimated_end(step))
