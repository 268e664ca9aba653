"""The two ways a training run ends early on purpose: a clear failure, or a stop request (SIGTERM)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class TrainingFailure(Exception):
    """A problem the user can fix (bad data, context too long, mismatched weights): the message is
    the one sentence the run's FAILED event shows, naming the problem and where it is."""


class StopRequested(BaseException):
    """SIGTERM arrived: leave at the next safe point, write nothing new, exit 143.

    A BaseException (like KeyboardInterrupt), so that no library's `except Exception` swallows it.
    """


class StopSignal:
    """SIGTERM handling with safe points.

    Outside ``safe_points()`` (loading, tokenizing) a SIGTERM raises ``StopRequested`` at once: there
    is nothing to protect. Inside it (training, checkpointing, eval, export) it only sets a flag that
    the recipe checks between micro-batches, eval batches, prompts and generated tokens, and before a
    checkpoint, export and registration: a checkpoint being written is finished, nothing is left
    half-written, and a stopped run never registers a model.
    """

    def __init__(self) -> None:
        self.requested = False
        self._deferred = False

    def install(self) -> StopSignal:
        signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:  # signal handler signature
        self.requested = True
        if not self._deferred:
            raise StopRequested()

    @contextmanager
    def safe_points(self) -> Iterator[None]:
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False

    def check(self) -> None:
        if self.requested:
            raise StopRequested()
