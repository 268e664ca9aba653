"""Throughput, progress and time left of a training loop, and when to tell the service about them."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

REPORT_EVERY_SECONDS = 0.5  # at most ~2 TRAIN_UPDATED events per second


class Progress:
    """Step times and checkpoint times are measured apart: a checkpoint (save, eval, generations)
    can take longer than many steps, and the ETA should count the ones still to come."""

    def __init__(self, total_steps: int, checkpoints: int, clock=time.monotonic):
        self.total_steps = total_steps
        self.checkpoints_left = checkpoints
        self._clock = clock
        self._train_seconds = 0.0
        self._tokens = 0
        self._steps = 0
        self._checkpoint_seconds: list[float] = []
        self._last_report: float | None = None

    def step_done(self, tokens: int, seconds: float) -> None:
        self._steps += 1
        self._tokens += tokens
        self._train_seconds += seconds

    def checkpoint_done(self, seconds: float) -> None:
        self.checkpoints_left = max(0, self.checkpoints_left - 1)
        self._checkpoint_seconds.append(seconds)

    @property
    def tokens_per_second(self) -> float:
        return self._tokens / self._train_seconds if self._train_seconds > 0 else 0.0

    def percent(self, step: int) -> float:
        return round(100.0 * step / max(1, self.total_steps), 2)

    def eta_seconds(self, step: int) -> float:
        per_step = self._train_seconds / max(1, self._steps)
        per_checkpoint = (
            sum(self._checkpoint_seconds) / len(self._checkpoint_seconds) if self._checkpoint_seconds else per_step
        )
        return (self.total_steps - step) * per_step + self.checkpoints_left * per_checkpoint

    def estimated_end(self, step: int) -> str:
        end = datetime.now(timezone.utc) + timedelta(seconds=self.eta_seconds(step))
        return end.isoformat(timespec="seconds")

    def should_report(self, step: int) -> bool:
        """Always the first and last step; otherwise at most every REPORT_EVERY_SECONDS."""
        now = self._clock()
        if step in (1, self.total_steps) or self._last_report is None or now - self._last_report >= REPORT_EVERY_SECONDS:
            self._last_report = now
            return True
        return False
