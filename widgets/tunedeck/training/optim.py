"""The optimizer: AdamW, fused into one kernel per step on CUDA.

``fused=True`` runs the whole AdamW update for all parameters in a handful of CUDA kernels instead of
several per parameter tensor (the "foreach" default); the update is the same algorithm. Elsewhere the
torch default is kept.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def make_optimizer(
    params: Iterable[torch.nn.Parameter] | Iterable[dict],
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    device_type: str,
) -> torch.optim.AdamW:
    """AdamW over ``params`` (tensors or param groups), ``fused=True`` when ``device_type`` is ``"cuda"``."""
    fused = True if device_type == "cuda" else None  # None: torch's own default for the device
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)
