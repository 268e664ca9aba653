"""The summed token loss of a micro-batch, without ever holding the whole (tokens x vocabulary) logits.

Summed, not averaged: the recipe divides by the number of loss-bearing tokens of the whole optimizer
step, so a step's loss is the mean over its tokens however they are split into micro-batches and rows
(packed and unpacked batches give the same gradient).

Only the positions that carry a loss go through the vocabulary projection, and they go through it in
chunks of ``chunk_rows(vocab)`` positions (about 32 MB of float32 logits each). The logits of a
micro-batch of 1,024 loss positions with a 152k vocabulary take 0.6 GB, and about three times that
with the log-softmax and the gradients; chunked, only one chunk's ever exists:

* a plain linear head (almost every model): each chunk's loss *and* gradients (softmax - one-hot, for
  the hidden states, the weight and the bias) are computed while its logits exist, in the forward;
  backward only scales them. Nothing is projected twice, so it costs no more compute than before.
* any other head (e.g. one with a LoRA adapter): each chunk's projection + cross-entropy runs under
  ``torch.utils.checkpoint`` and is recomputed, one chunk at a time, in backward.
* on CUDA with ``liger_kernel`` installed: Liger's fused linear cross-entropy (a Triton kernel).

The chunked path needs the decoder's hidden states and a plain output head (``logits = lm_head(h)``),
which holds for the architectures in ``CHUNKED_LOSS_MODEL_TYPES``; others (final logit soft-capping,
logit scaling, no decoder) take the model's own forward with transformers' ``logits_to_keep`` mask.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tunedeck.inputs.memory import CHUNKED_LOSS_MODEL_TYPES, loss_chunk_rows
from tunedeck.training.packing import Batch
from tunedeck.training.tokenize import IGNORE

# Model types whose causal-LM forward is exactly ``lm_head(decoder(...).last_hidden_state)`` (checked in
# transformers' modeling files): no soft-capping, no logit scaling. Gemma 2/3, Cohere, Granite are not.
PLAIN_HEAD = CHUNKED_LOSS_MODEL_TYPES


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
    varlen = getattr(batch, "varlen_kwargs", None)  # flash-attention boundaries of a flattened batch
    if varlen is not None:
        inputs.update(varlen())
    parts = decoder_and_head(model)
    if parts is None:
        return _model_loss(model, inputs, keep, batch.targets), count
    decoder, head = parts
    hidden = decoder(**inputs).last_hidden_state[keep]  # (N, hidden): the positions that carry a loss
    return projected_loss(head, hidden, batch.targets[keep]), count


def decoder_and_head(model: Any) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """The decoder and output head of a plain causal LM (also through a PEFT wrapper), or None.

    A ``peft.PeftModel`` forwards unknown attributes to its LoRA model and that to the wrapped
    transformers model, so ``get_decoder()`` / ``get_output_embeddings()`` / ``config`` reach the
    model whose layers PEFT changed in place: calling them trains the adapters as the forward would.
    """
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in PLAIN_HEAD:
        return None
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logits_scaling", None):
        return None
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if not isinstance(decoder, torch.nn.Module) or not isinstance(head, torch.nn.Module) or decoder is model:
        return None
    return decoder, head


def projected_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """sum(cross_entropy(head(hidden), targets)), never holding more than ``chunk`` rows of logits."""
    plain = type(head) is torch.nn.Linear
    if hidden.is_cuda and plain and _liger_loss() is not None:
        out = _liger_loss()(head.weight, hidden, targets, head.bias)
        return out[0] if isinstance(out, tuple) else out
    vocab = getattr(head, "out_features", None) or head.weight.shape[0]
    rows = max(1, int(chunk or loss_chunk_rows(int(vocab))))
    if plain:  # the common case: gradients computed chunk by chunk in the forward, nothing recomputed
        return _LinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, rows)
    n = hidden.shape[0]
    if n <= rows:  # one chunk: nothing to save by recomputing
        return _chunk_loss(head, hidden, targets)
    recompute = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head.parameters()))
    total = None
    for start in range(0, n, rows):
        h, t = hidden[start : start + rows], targets[start : start + rows]
        if recompute:  # e.g. a head with a LoRA adapter: each chunk's logits recomputed in backward
            part = checkpoint(_chunk_loss, head, h, t, use_reentrant=False, preserve_rng_state=False)
        else:
            part = _chunk_loss(head, h, t)
        total = part if total is None else total + part
    return total


class _LinearCrossEntropy(torch.autograd.Function):
    """sum(cross_entropy(hidden @ weight.T + bias, targets)) for a plain linear head, ``rows`` at a time.

    Each chunk's logits give its loss and, while they exist, its gradients (softmax - one-hot) for the
    hidden states, the weight and the bias; the logits are then dropped. Backward only scales the
    stored gradients: no chunk is projected twice (checkpointing would, at +1/3 of the head's cost).
    Under autocast the projections run in the autocast dtype, as the model's own head would; the
    weight's gradient is accumulated in float32 over the chunks.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, rows):  # autograd's signature
        want_h, want_w, want_b = ctx.needs_input_grad[:3]
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        if weight.dtype != hidden.dtype and not torch.is_autocast_enabled(hidden.device.type):
            # a head held narrower than it computes (frozen_base: bf16 storage, float32 compute):
            # upcast it once for all chunks, as its own forward would per call
            weight = weight.to(hidden.dtype)
            bias = None if bias is None else bias.to(hidden.dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if want_b and bias is not None else None
        for start in range(0, hidden.shape[0], rows):
            h, t = hidden[start : start + rows], targets[start : start + rows]
            projected = F.linear(h, weight, bias)  # in the autocast dtype under autocast, as the model's head
            logits = projected.float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if grad_h is None and grad_w is None and grad_b is None:
                continue
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            probs[torch.arange(len(t), device=t.device), t] -= 1.0  # d loss / d logits
            g = probs.to(projected.dtype)
            del projected, logits
            if grad_h is not None:
                grad_h[start : start + rows] = g @ weight  # autocast casts as the model's backward would
            if grad_w is not None:
                grad_w += g.t() @ h
            if grad_b is not None:
                grad_b += probs.sum(0)
        ctx.save_for_backward(*(x for x in (grad_h, grad_w, grad_b) if x is not None))
        ctx.which = (grad_h is not None, grad_w is not None, grad_b is not None)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        saved = iter(ctx.saved_tensors)
        grads = [
            (next(saved) * grad_output).to(dtype) if present else None
            for present, dtype in zip(ctx.which, ctx.dtypes, strict=True)
        ]
        return (*grads, None, None)


def _chunk_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


@functools.cache
def _liger_loss():
    """Liger's fused linear cross-entropy (summed), or None where liger_kernel is not installed."""
    try:
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
    except Exception:  # noqa: BLE001 - not installed, or installed without a usable Triton
        return None
    return LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE, reduction="sum")


def _model_loss(model: Any, inputs: dict[str, Any], keep: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The model's own forward, projecting only the loss positions where it supports logits_to_keep."""
    try:
        logits = model(**inputs, logits_to_keep=keep).logits
    except TypeError:  # an architecture without logits_to_keep: project every position
        logits = model(**inputs).logits
    if logits.dim() == 3:  # (B, L, V): not sliced by the model
        logits = logits[keep]
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum")


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
