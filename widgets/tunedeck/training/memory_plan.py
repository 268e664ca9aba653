"""The worker's memory plan: what this device has free now, and how the run fits in it (or a clear refusal).

``inputs/memory.py`` estimates (no torch, also used by the service at create()); this module asks the
device what is free, knows the tokenized data's longest row, and decides before any weight is loaded:
activation checkpointing or not, the micro-batch size, and, for LoRA on a float32-computing device,
whether the frozen base must be held in bf16 to fit (frozen_base.py).
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

    def describe(self) -> str:
        if self.plan is None:
            return "memory not estimated (model size unknown)"
        return self.plan.describe() + ("; frozen base held in bf16, computed in float32" if self.bf16_storage else "")


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
) -> Fit:
    """The settings under which the run fits, or TrainingFailure saying what it needs and what would fit."""
    shape = memory.ModelShape.from_folder(folder)
    if shape is None:
        return Fit(None)
    kind = "cuda" if device.type == "cuda" else "cpu"
    available = torch.cuda.mem_get_info(device)[0] if kind == "cuda" else None
    resident = 0 if kind == "cuda" else memory.resident_memory()
    settings: dict[str, Any] = dict(
        context_length=context_length, adapter=adapter, autocast=autocast, row_tokens=row_tokens, device=kind,
        available=available, resident=resident, micro_batch_tokens=micro_batch_tokens, dense_mask=dense_mask,
    )
    try:
        return Fit(memory.plan_memory(shape, **settings))
    except memory.MemoryShortfall as shortfall:
        refusal = shortfall
    if adapter is not None and not autocast and not adapter.get("quantize_base"):
        try:  # half the frozen base's memory, at ~0.66x float32 matmul speed (frozen_base.py)
            return Fit(memory.plan_memory(shape, weight_bytes=2, **settings), bf16_storage=True)
        except memory.MemoryShortfall:
            pass
    raise TrainingFailure(f"memory: {refusal}")
