"""The summed token loss of a micro-batch.

Summed, not averaged: the recipe divides by the number of loss-bearing tokens of the whole optimizer
step, so a step's loss is the mean over its tokens however they are split into micro-batches and rows
(packed and unpacked batches give the same gradient). Only the positions that carry a loss go through
the (large) vocabulary projection, via transformers' ``logits_to_keep`` boolean mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunedeck.training.packing import Batch
from tunedeck.training.tokenize import IGNORE


def loss_sum(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """(sum of token cross-entropies, number of tokens summed)."""
    keep = batch.targets != IGNORE
    count = int(keep.sum())
    inputs = dict(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    try:
        logits = model(**inputs, logits_to_keep=keep).logits
    except TypeError:  # an architecture without logits_to_keep: project every position
        logits = model(**inputs).logits
    if logits.dim() == 3:  # (B, L, V): not sliced by the model
        logits = logits[keep]
    loss = F.cross_entropy(logits.float(), batch.targets[keep], reduction="sum")
    return loss, count


def per_example_losses(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Token losses (B, L) with 0 where there is no loss: for tests and diagnostics."""
    with torch.no_grad():
        logits = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        ).logits
    targets = batch.targets.clamp(min=0)
    losses = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    return losses * (batch.targets != IGNORE)
