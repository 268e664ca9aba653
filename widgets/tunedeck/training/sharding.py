"""FSDP2 sharding for a run of several processes, and its checkpoints with torch.distributed.checkpoint.

DDP (distributed.py) keeps a whole replica of the weights, gradients and AdamW state on every rank.
FSDP2 (``torch.distributed.fsdp.fully_shard``) keeps 1/N of each on each rank and all-gathers a layer's
weights just for its forward and backward: a model whose training state does not fit one device can
train on N. Which one a run uses (``TUNEDECK_SHARDING``, read by the worker):

    auto  (default)  DDP, unless the memory plan says a replica does not fit and 1/N of it does (full
                     fine-tuning only): then FSDP
    ddp              DDP always (the memory plan may then refuse the run)
    fsdp             FSDP for every full fine-tuning run of several processes

LoRA runs always use DDP: their trainable state is a few MB, and merging the adapter for export needs
the whole base in one process. ``fsdp`` with LoRA is refused when the worker starts.

The run means the same as with one process (as under DDP): each rank trains its share of the step's
rows, the loss is divided by the step's global token count times N (FSDP averages gradients over the
ranks), and gradients are reduce-scattered once per step. Unlike DDP, every forward all-gathers
weights, so every rank runs the same number of micro-batches per step: a rank with fewer runs
zero-weight passes over one of its rows (they add exactly nothing).

Layout: each decoder layer (the model's ``_no_split_modules``) is one FSDP unit; the root unit is
``distributed.LossOf`` (the loss the recipe computes), so the embeddings, the final norm and the head
are all-gathered by the loss's own forward. Evaluation and generation call the model directly, inside
``gathered`` (the root's weights unsharded; each layer all-gathers its own).

Checkpoints of a sharded run (``ep{E}-ba{B}/`` and RUN_DIR/resume, see checkpoint.py):

    config.json, model.safetensors, tokenizer   consolidated: the full state dict gathered on rank 0
                                                (CPU offload), so ``custom_weights_path`` and the export
                                                read them as any checkpoint's
    optimizer.dcp/                               AdamW's state, sharded, written by every rank with
                                                torch.distributed.checkpoint (keys are parameter names)
    trainer_state.pt                             step, schedule, RNG, losses, fingerprint (no optimizer)

torch.distributed.checkpoint reshards on load, so the run resumes at any number of processes: under
FSDP, under DDP or in one process (there DCP reads every shard). A sharded run resumed from a
one-process or DDP checkpoint (a whole optimizer state in trainer_state.pt) shards that state.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from tunedeck import config
from tunedeck.training.checkpoint import OPTIMIZER_DCP
from tunedeck.training.distributed import LossOf, World
from tunedeck.training.failures import StopSignal, TrainingFailure

log = logging.getLogger(__name__)

SHARDING = "TUNEDECK_SHARDING"
SETTINGS = config.SHARDINGS
ROOT_PREFIX = "model."  # LossOf's attribute: parameter names seen from the FSDP root


def setting() -> str:
    """TUNEDECK_SHARDING, checked: auto (default), ddp or fsdp (config.sharding)."""
    try:
        return config.sharding()
    except ValueError as exc:
        raise TrainingFailure(str(exc)) from None


def check_setting(value: str, world: World, lora: bool) -> None:
    if value == "fsdp" and world.enabled and lora:
        raise TrainingFailure(
            f"{SHARDING}=fsdp: LoRA runs train with DDP (the adapter's state is small and merging it for export "
            "needs the whole base in one process); unset it or set ddp, or train all weights"
        )


def shard(model: torch.nn.Module) -> LossOf:
    """``model``'s loss as the FSDP root, each decoder layer its own unit. ``model``'s parameters become
    DTensor shards in place (make the optimizer afterwards). On CUDA the shards move to this rank's GPU."""
    from torch.distributed.fsdp import fully_shard

    root = LossOf(model)
    layers = decoder_layers(model)
    for layer in layers:
        fully_shard(layer)
    fully_shard(root)
    log.info("FSDP: %d decoder layers sharded, plus the root (embeddings, norm, head)", len(layers))
    return root


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules transformers says must not be split across devices (its decoder layers)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names and m is not model]


def same_rng(world: World, device_type: str) -> None:
    """Every rank continues with rank 0's random state: sampled generations then draw the same tokens
    on every rank, so every rank runs the same number of forwards (each all-gathers weights)."""
    if not world.enabled:
        return
    torch.set_rng_state(world.broadcast(torch.get_rng_state()))
    if device_type == "cuda":
        torch.cuda.set_rng_state(world.broadcast(torch.cuda.get_rng_state()))


def optimizer_folder(checkpoint: Path) -> Path:
    """Where a sharded checkpoint (or its temporary folder) holds the optimizer's shards."""
    return Path(checkpoint) / OPTIMIZER_DCP


def is_sharded(module: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


@contextmanager
def gathered(root: Any) -> Iterator[None]:
    """The root unit's weights (embeddings, norm, head) unsharded, for calls that bypass the loss's
    forward (eval loss, generation); decoder layers all-gather their own. Every rank must enter it."""
    if not is_sharded(root):
        yield
        return
    root.unshard()
    try:
        yield
    finally:
        root.reshard()


def step(
    root: Any, optimizer: torch.optim.Optimizer, rows: list, micro_batch_tokens: int, pad_id: int, device: Any,
    stop: StopSignal, packed_mask: Any, world: World, max_grad_norm: float,
) -> tuple[float, int, float]:
    """One optimizer step over this rank's share of ``rows`` under FSDP: (mean token loss, tokens, grad norm)."""
    from tunedeck.training.packing import collate, micro_batches

    mine = world.share(rows)
    groups = micro_batches(mine, micro_batch_tokens)
    count, most = world.sum(sum(e.loss_tokens for row in mine for e in row))[0], world.max(len(groups))
    filler = groups[:1] or micro_batches(rows[:1], micro_batch_tokens)  # for zero-weight passes
    weight = world.size / count
    total, tokens = 0.0, 0
    for i in range(int(most)):
        stop.check()
        own = i < len(groups)
        batch = collate(groups[i] if own else filler[0], pad_id, device.compute_dtype, packed_mask).to(device.device)
        root.set_requires_gradient_sync(i == most - 1)  # reduce-scatter once, after the last micro-batch
        with device.autocast():
            loss = root(batch)
        (loss * (weight if own else 0.0)).backward()
        if own:
            total += float(loss.detach())
            tokens += batch.tokens
    total, all_tokens = world.sum(total, tokens)
    norm = torch.nn.utils.clip_grad_norm_(root.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / count, int(all_tokens), float(_full(norm))


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


# --- checkpoints -----------------------------------------------------------------------------------


def full_weights(root: Any) -> dict[str, torch.Tensor]:
    """The whole model's state dict on rank 0's CPU ({} on the other ranks), names as the HF model's.
    A collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(root, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k.removeprefix(ROOT_PREFIX): v for k, v in state.items()}


def save_optimizer(root: Any, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Every rank writes its shard of the optimizer state into ``folder`` (a collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    dcp.save({"optimizer": get_optimizer_state_dict(root, optimizer)}, checkpoint_id=str(folder))


def load_optimizer(model: torch.nn.Module, root: Any, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """The optimizer state a sharded run saved in ``folder``, resharded to this run: FSDP at any number
    of processes (``root`` the FSDP root), or one process / DDP (``root`` None: every shard is read)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    module = root if root is not None else LossOf(model)  # the same parameter names as when it was saved
    single = not torch.distributed.is_initialized()
    try:
        with warnings.catch_warnings():  # one process reads every shard: what DCP warns it assumes
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            state = {"optimizer": get_optimizer_state_dict(module, optimizer)}
            dcp.load(state, checkpoint_id=str(folder), no_dist=single)
            set_optimizer_state_dict(module, optimizer, state["optimizer"])
    except Exception as error:  # missing, truncated, or another model's state
        raise TrainingFailure(
            f"resume_from: cannot read the optimizer state in {folder} ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0][:300] if str(error).strip() else ''})"
        ) from error


def load_full_optimizer(model: torch.nn.Module, root: Any, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """A one-process (or DDP) run's whole optimizer state (``optimizer.state_dict()``: parameters by
    position) sharded onto this FSDP run's optimizer. Every rank holds the whole saved state."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = [ROOT_PREFIX + name for name, p in model.named_parameters() if p.requires_grad]
    try:
        groups = saved["param_groups"]
        positions = [i for group in groups for i in group["params"]]
        if len(positions) != len(names):
            raise ValueError(f"{len(positions)} saved parameters, {len(names)} trainable now")
        by_position = dict(zip(positions, names, strict=True))
        state = {
            "state": {by_position[int(i)]: value for i, value in saved["state"].items()},
            "param_groups": [{**group, "params": [by_position[i] for i in group["params"]]} for group in groups],
        }
        set_optimizer_state_dict(root, optimizer, state, options=StateDictOptions(full_state_dict=True))
    except (KeyError, ValueError, RuntimeError, TypeError) as error:
        raise TrainingFailure(
            f"resume_from: the optimizer state does not fit this model's trainable parameters ({error})"
        ) from None
