"""The worker's memory plan: what this device has free now, and how the run fits in it (or a clear refusal).

``inputs/memory.py`` estimates (no torch, also used by the service at create()); this module asks the
device what is free, knows the tokenized data's longest row, and decides before any weight is loaded:
activation checkpointing or not, the micro-batch size, and, for LoRA on a float32-computing device,
whether the frozen base must be held in bf16 to fit (frozen_base.py), and for a run of several
processes whether each holds a replica (DDP) or 1/N of the weights, gradients and AdamW state (FSDP,
sharding.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunedeck.inputs import memory
from tunedeck.training.failures import TrainingFailure


@dataclass(frozen=True)
class Fit:
    plan: memory.MemoryPlan | None  # None: the model's size could not be read, defaults apply
    bf16_storage: bool = False  # LoRA: frozen linear weights held in bf16, computed in float32
    sharded: bool = False  # FSDP: each of the run's processes holds 1/N of the training state
    processes: int = 1

    def describe(self) -> str:
        if self.plan is None:
            return "memory not estimated (model size unknown)"
        text = self.plan.describe() + ("; frozen base held in bf16, computed in float32" if self.bf16_storage else "")
        if self.sharded:
            text += f"; weights, gradients and optimizer state sharded over {self.processes} processes (FSDP)"
        return text


def fit_run(
    folder: Path,
    *,
    adapter: dict | None,
    autocast: bool,
    context_length: int,
    row_tokens: int,
    device: torch.device,
    micro_batch_tokens: int,
    dense_mask: bool,
    processes: int = 1,
    sharding: str = "ddp",
) -> Fit:
    """The settings under which the run fits, or TrainingFailure saying what it needs and what would fit.

    ``processes``: the run's processes (each plans as one of them: on CPU they share the memory).
    ``sharding`` (sharding.py, full fine-tuning of several processes only): ``ddp`` a replica per
    process; ``auto`` a replica when it fits, else 1/N of the weights, gradients and AdamW state per
    process (FSDP); ``fsdp`` always sharded. The sharded estimate divides those three by N and keeps
    the activations whole; the all-gathered layer being computed is not counted apart (its size is
    one layer's, small against 1/N of the model for any model worth sharding).
    """
    processes = max(1, int(processes))
    can_shard = processes > 1 and adapter is None and sharding in ("auto", "fsdp")
    shape = memory.ModelShape.from_folder(folder)
    if shape is None:
        return Fit(None, sharded=can_shard and sharding == "fsdp", processes=processes)
    kind = "cuda" if device.type == "cuda" else "cpu"
    available = torch.cuda.mem_get_info(device)[0] if kind == "cuda" else None
    resident = 0 if kind == "cuda" else memory.resident_memory()
    settings: dict[str, Any] = dict(
        context_length=context_length, adapter=adapter, autocast=autocast, row_tokens=row_tokens, device=kind,
        available=available, resident=resident, micro_batch_tokens=micro_batch_tokens, dense_mask=dense_mask,
        processes=processes,
    )
    if can_shard and sharding == "fsdp":
        try:
            return Fit(memory.plan_memory(shape, weight_bytes=4 / processes, **settings), sharded=True, processes=processes)
        except memory.MemoryShortfall as shortfall:
            raise TrainingFailure(f"memory: even sharded over {processes} processes (FSDP): {shortfall}") from None
    try:
        return Fit(memory.plan_memory(shape, **settings), processes=processes)
    except memory.MemoryShortfall as shortfall:
        refusal = shortfall
    if can_shard:
        try:
            return Fit(memory.plan_memory(shape, weight_bytes=4 / processes, **settings), sharded=True, processes=processes)
        except memory.MemoryShortfall:
            pass
    if adapter is not None and not autocast and not adapter.get("quantize_base"):
        try:  # half the frozen base's memory, at ~0.66x float32 matmul speed (frozen_base.py)
            return Fit(memory.plan_memory(shape, weight_bytes=2, **settings), bf16_storage=True, processes=processes)
        except memory.MemoryShortfall:
            pass
    raise TrainingFailure(f"memory: {refusal}")
