"""How long a run is, in optimizer steps, and what happens when: batch sizes, LR schedule, checkpoints.

Everything here is plain arithmetic on counts (no torch) so it is easy to test and to reason about.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tunedeck.inputs.params import Duration

# Tokens per optimizer step when the run does not say. On CPU a step of ~4k tokens takes seconds on a
# 135M model, so progress is visible and a run of a few hundred examples still gets tens of steps; on
# a GPU larger batches are cheap and give smoother gradients.
DEFAULT_BATCH_TOKENS = {"cpu": 4096, "cuda": 32768}
# Most tokens in one forward/backward pass: MICRO_BATCH_TOKENS in inputs/memory.py (the create-time
# memory check plans with it too, and inputs never imports the trainer).
# Target length of a packed row (see packing.row_capacity). Measured on SmolLM2-135M here (fwd+bwd):
# rows of 256 / 512 / 1024 / 2048 tokens ran at ~195 / 180 / 155 / 118 tok/s; on a tiny Llama packing
# into 256 gave 2.18x the useful tok/s of padded batches against 1.99x for 512 (benchmarks/packing.py).
PACK_TOKENS = {"cpu": 256, "cuda": 4096}
WARMUP_FRACTION = 0.02
MAX_CHECKPOINTS = 5


@dataclass
class Plan:
    rows_per_epoch: int
    tokens_per_epoch: int
    rows_per_step: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    checkpoint_steps: list[int] = field(default_factory=list)

    @property
    def epochs(self) -> float:
        return self.total_steps / self.steps_per_epoch

    @property
    def tokens_per_step(self) -> int:
        return round(self.tokens_per_epoch / self.steps_per_epoch)

    def epoch_of(self, step: int) -> int:
        """0-based epoch that 1-based ``step`` belongs to."""
        return (step - 1) // self.steps_per_epoch

    def rows_of(self, step: int) -> slice:
        """Which of its epoch's packed rows 1-based ``step`` trains on."""
        k = (step - 1) % self.steps_per_epoch
        return slice(k * self.rows_per_step, min((k + 1) * self.rows_per_step, self.rows_per_epoch))

    def completed_epochs(self, step: int) -> int:
        """Epochs finished after ``step`` steps: the E of a checkpoint named ep{E}-ba{B}."""
        return step // self.steps_per_epoch

    def lr_multiplier(self, step_index: int) -> float:
        return lr_multiplier(step_index, self.warmup_steps, self.total_steps)


def make_plan(
    duration: Duration,
    rows_per_epoch: int,
    tokens_per_epoch: int,
    batch_tokens: int,
    max_checkpoints: int = MAX_CHECKPOINTS,
) -> Plan:
    """Steps for a duration in epochs, tokens or batches; epochs repeat when ba/tok run past one.

    A step takes as many packed rows as make ``batch_tokens`` on average (rows vary in length);
    "tok" durations count the real (unpadded) tokens of the training data.
    """
    if rows_per_epoch <= 0:
        raise ValueError("there are no training rows")
    mean_row_tokens = max(1.0, tokens_per_epoch / rows_per_epoch)
    rows_per_step = min(rows_per_epoch, max(1, round(batch_tokens / mean_row_tokens)))  # a small dataset is one step
    steps_per_epoch = math.ceil(rows_per_epoch / rows_per_step)
    if duration.unit == "ep":
        total = duration.value * steps_per_epoch
    elif duration.unit == "ba":
        total = duration.value
    else:  # tokens: the steps that cover that many tokens at this data's tokens per step
        total = max(1, math.ceil(duration.value * steps_per_epoch / max(1, tokens_per_epoch)))
    warmup = max(1, round(WARMUP_FRACTION * total))
    return Plan(
        rows_per_epoch=rows_per_epoch,
        tokens_per_epoch=tokens_per_epoch,
        rows_per_step=rows_per_step,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        warmup_steps=warmup,
        checkpoint_steps=checkpoint_steps(total, steps_per_epoch, max_checkpoints),
    )


def lr_multiplier(step_index: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup to 1 over ``warmup_steps``, then linear decay towards 0 at the end of the run.

    ``step_index`` is the 0-based optimizer step about to be taken. This is transformers'
    ``get_linear_schedule_with_warmup`` shifted by one step, so that the first step does not have a
    learning rate of exactly 0 (a wasted step, and a 1-step run that learns nothing) and the last
    one is small but not zero.
    """
    k, w, t = step_index, max(1, warmup_steps), max(1, total_steps)
    return max(0.0, min((k + 1) / w, (t - k) / (t - w + 1)))


def checkpoint_steps(total_steps: int, steps_per_epoch: int, max_checkpoints: int = MAX_CHECKPOINTS) -> list[int]:
    """Epoch ends, thinned to at most ``max_checkpoints`` evenly spaced ones, always the last step."""
    ends = [e * steps_per_epoch for e in range(1, total_steps // steps_per_epoch + 1) if e * steps_per_epoch < total_steps]
    keep = max(0, max_checkpoints - 1)
    if len(ends) > keep:
        ends = [ends[round((j + 1) * len(ends) / (keep + 1)) - 1] for j in range(keep)] if keep else []
    return sorted(set(ends) | {total_steps})
