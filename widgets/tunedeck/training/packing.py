"""Pack tokenized examples into rows and collate rows into model inputs that keep examples apart.

Packing several short examples into one row wastes no compute on padding (2.2x the useful tokens/s
measured here), but the examples must not see each other. On CPU (no flash-attention varlen kernels)
restarting ``position_ids`` alone does *not* do that (benchmarks/README.md), so each batch carries a 4D
block-diagonal causal mask ``(B, 1, L, L)``: 0 where a token may attend, the dtype's minimum elsewhere,
used as-is by transformers' sdpa/eager attention. Position ids restart per example so every example
sees the positions it would see alone, and targets are shifted *per example* so the last token of
one example never learns to predict the first token of the next. Together these make a packed row
give exactly the per-example losses of running each example alone.

Attention implementations that isolate examples themselves (flash-attention varlen kernels,
FlexAttention block masks; see ``attention.py``) take the ``"varlen"`` form instead: the micro-batch
flattened into one row, no mask, position ids restarting per example and the ``cu_seqlens`` of the
examples, so no (B, 1, L, L) tensor is ever built.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Literal

import torch

from tunedeck.training.tokenize import IGNORE, Tokenized

PAD_MULTIPLE = 8  # pad micro-batches to a multiple of 8 tokens: friendlier shapes, little waste


@dataclass
class Batch:
    """Model inputs for one micro-batch; ``targets`` are already shifted (predict token i+1 at i)."""

    input_ids: torch.Tensor  # (B, L) long
    position_ids: torch.Tensor  # (B, L) long, restarting at 0 for every example
    attention_mask: torch.Tensor | None  # (B, 1, L, L) float, additive: 0 or dtype-min; None = causal
    targets: torch.Tensor  # (B, L) long, IGNORE where no loss
    tokens: int  # real (non-padding) tokens
    # "varlen" batches only (B == 1): where each example (and the padding tail) starts, and the longest.
    cu_seqlens: torch.Tensor | None = None  # (segments + 1,) int32: 0, n1, n1 + n2, ..., L
    max_seqlen: int | None = None

    @property
    def loss_tokens(self) -> int:
        return int((self.targets != IGNORE).sum())

    def varlen_kwargs(self) -> dict[str, torch.Tensor | int]:
        """Flash-attention kwargs (transformers' ``FlashAttentionKwargs``) for a varlen batch, else ``{}``.

        Optional: transformers' flash path infers the same boundaries from ``position_ids``; passing them
        saves that scan (and its device sync) in every layer. Other implementations ignore them.
        """
        if self.cu_seqlens is None or self.max_seqlen is None:
            return {}
        return {
            "cu_seq_lens_q": self.cu_seqlens,
            "cu_seq_lens_k": self.cu_seqlens,
            "max_length_q": self.max_seqlen,
            "max_length_k": self.max_seqlen,
        }

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.position_ids.to(device),
            None if self.attention_mask is None else self.attention_mask.to(device),
            self.targets.to(device),
            self.tokens,
            None if self.cu_seqlens is None else self.cu_seqlens.to(device),
            self.max_seqlen,
        )


def pack(lengths: list[int], capacity: int, seed: int | None = None) -> list[list[int]]:
    """Group example indices into rows of at most ``capacity`` tokens (best-fit decreasing).

    With a seed, examples of equal length are grouped differently and the rows come out in a
    different order each time, while the number of rows stays the same (it depends only on the
    lengths): so an epoch always has the same number of steps, which the LR schedule needs.
    """
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    if seed is not None:
        rng.shuffle(order)
    order.sort(key=lambda i: -lengths[i])  # stable: the shuffle breaks ties
    rows: list[list[int]] = []
    free: list[int] = []  # sorted remaining capacities of open rows
    rows_by_free: dict[int, list[int]] = {}
    for i in order:
        n = lengths[i]  # an example longer than the capacity gets a row of its own
        at = bisect.bisect_left(free, n)
        if at < len(free):  # the fullest row this example still fits in
            space = free.pop(at)
            row = rows_by_free[space].pop()
        else:
            space = capacity
            row = len(rows)
            rows.append([])
        rows[row].append(i)
        left = max(0, space - n)
        if left > 0:
            bisect.insort(free, left)
            rows_by_free.setdefault(left, []).append(row)
    if seed is not None:
        rng.shuffle(rows)
    return rows


def row_capacity(context_length: int, pack_tokens: int) -> int:
    """How many tokens short examples are packed into: ``pack_tokens``, at most ``context_length``.

    Packed rows shorter than the context length change nothing in what is learned (examples never
    see each other anyway) and avoid a dense L x L attention over a long, mostly masked row: on
    this CPU, rows of 512 tokens train ~1.5x faster than rows of 2048 and need a quarter of the
    attention memory. Examples longer than the capacity (up to context_length) get a row each.
    """
    return max(1, min(context_length, pack_tokens))


def micro_batches(rows: list[list[Tokenized]], max_tokens: int) -> list[list[list[Tokenized]]]:
    """Split a step's rows into micro-batches of at most ``max_tokens`` padded tokens (at least a row)."""
    groups: list[list[list[Tokenized]]] = []
    current: list[list[Tokenized]] = []
    longest = 0
    for row in rows:
        n = sum(len(e) for e in row)
        if current and max(longest, n) * (len(current) + 1) > max_tokens:
            groups.append(current)
            current, longest = [], 0
        current.append(row)
        longest = max(longest, n)
    if current:
        groups.append(current)
    return groups


def collate(
    rows: list[list[Tokenized]],
    pad_id: int,
    dtype: torch.dtype = torch.float32,
    packed_mask: Literal["dense", "varlen"] = "dense",
) -> Batch:
    """Rows of examples -> one padded micro-batch in which examples cannot see each other.

    ``packed_mask="dense"`` (the default; sdpa/eager): (B, L) rows with a block-diagonal causal mask.
    ``packed_mask="varlen"`` (flash/flex attention): every example of every row in one (1, T) row, no
    mask, restarting position ids and ``cu_seqlens``; the attention implementation isolates them.

    When every row holds one example and all have the same length (continued-pretraining blocks, or
    one long example), there is nothing to keep apart: no mask is built and the attention takes its
    plain causal path, which on CPU avoids an L x L mask per row (e.g. 2.4 GB per layer at 8k tokens).
    """
    if packed_mask not in ("dense", "varlen"):
        raise ValueError(f"packed_mask must be 'dense' or 'varlen', not {packed_mask!r}")
    sizes = [sum(len(e) for e in row) for row in rows]
    if all(len(row) == 1 for row in rows) and len(set(sizes)) == 1:
        return _collate_plain(rows)
    if packed_mask == "varlen":
        return _collate_varlen(rows, pad_id)
    length = -(-max(sizes) // PAD_MULTIPLE) * PAD_MULTIPLE
    b = len(rows)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    position_ids = torch.zeros((b, length), dtype=torch.long)
    targets = torch.full((b, length), IGNORE, dtype=torch.long)
    segment = torch.full((b, length), -1, dtype=torch.long)  # which example each token belongs to
    tokens = 0
    for r, row in enumerate(rows):
        start = 0
        for s, example in enumerate(row):
            n = len(example)
            end = start + n
            input_ids[r, start:end] = torch.tensor(example.input_ids)
            position_ids[r, start:end] = torch.arange(n)
            targets[r, start : end - 1] = torch.tensor(example.labels[1:])
            segment[r, start:end] = s
            start = end
        tokens += start
        # Padding attends to itself only: no softmax over an all-masked row, and never seen by real tokens.
        segment[r, start:] = -2 - torch.arange(length - start)
        position_ids[r, start:] = torch.arange(length - start)
    same = segment[:, :, None] == segment[:, None, :]
    causal = torch.ones((length, length), dtype=torch.bool).tril()
    allowed = same & causal
    mask = torch.zeros((b, 1, length, length), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return Batch(input_ids, position_ids, mask, targets, tokens)


def _collate_varlen(rows: list[list[Tokenized]], pad_id: int) -> Batch:
    """All examples back to back in one row; padding (to a multiple of 8) is a segment of its own.

    Every example's positions start at 0, which is what transformers keys on: flash attention cuts
    sequences at each position-0 token (batch of one), FlexAttention/sdpa/eager at every position that
    is not its predecessor + 1. The padding tail restarts at 0 too, so it is a separate segment.
    """
    examples = [e for row in rows for e in row]
    real = sum(len(e) for e in examples)
    length = -(-real // PAD_MULTIPLE) * PAD_MULTIPLE
    input_ids = torch.full((1, length), pad_id, dtype=torch.long)
    position_ids = torch.zeros((1, length), dtype=torch.long)
    targets = torch.full((1, length), IGNORE, dtype=torch.long)
    starts = [0]
    for example in examples:
        n = len(example)
        start, end = starts[-1], starts[-1] + n
        input_ids[0, start:end] = torch.tensor(example.input_ids)
        position_ids[0, start:end] = torch.arange(n)
        targets[0, start : end - 1] = torch.tensor(example.labels[1:])
        starts.append(end)
    if length > real:
        position_ids[0, real:] = torch.arange(length - real)
        starts.append(length)
    cu_seqlens = torch.tensor(starts, dtype=torch.int32)
    max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    return Batch(input_ids, position_ids, None, targets, real, cu_seqlens, max_seqlen)


def _collate_plain(rows: list[list[Tokenized]]) -> Batch:
    input_ids = torch.tensor([row[0].input_ids for row in rows], dtype=torch.long)
    targets = torch.full_like(input_ids, IGNORE)
    targets[:, :-1] = torch.tensor([row[0].labels[1:] for row in rows], dtype=torch.long)
    positions = torch.arange(input_ids.shape[1]).expand_as(input_ids).contiguous()
    return Batch(input_ids, positions, None, targets, input_ids.numel())
