"""The worker's reports to the service: one JSON object per line, flushed at once.

Appended to the run's journal, the file named by ``TUNEDECK_JOURNAL`` (stdout when unset), which the
service tails. Kinds:

    {"kind": "event", "type": EventType, "message": str, "data": {...}}
    {"kind": "metrics", "step": int, "values": {"train/loss": ...}}
    {"kind": "run", "fields": {"mlflow_run_id": ..., "progress": ...}}
    {"kind": "failure", "reason": str}
    {"kind": "orphaned", "reason": str}    the worker stops itself: no service has owned it for a while
    {"kind": "exit", "code": int}          the last line of a worker that ended on its own

A file, not a pipe, so that nothing is lost while the service is down: a restarted service applies the
journal from where its store says it stopped (service/worker_process.py), and training never depends on a
reader being there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from tunedeck.types import EventType

log = logging.getLogger(__name__)


class Reporter:
    def __init__(
        self, stream: TextIO | None = None, sink: Callable[[dict[str, Any]], None] | None = None,
        journal_fd: int | None = None,
    ):
        """Append to the journal ``journal_fd``, or write to ``stream``; or hand each report to ``sink``
        (used in-process, e.g. by tests)."""
        self._stream = stream
        self._sink = sink
        self._journal_fd = journal_fd
        self._broken = False
        self._rank: str | None = None  # set by for_rank
        self._failures_only = False

    def for_rank(self, rank: int, world_size: int) -> Reporter:
        """One of several processes of a run (training/distributed.py): failures name the rank, and
        only rank 0 reports anything else; each rank appends its own whole lines to the journal."""
        if world_size > 1:
            self._rank = f"rank {rank} of {world_size}"
            self._failures_only = rank != 0
        return self

    @classmethod
    def from_env(cls) -> Reporter:
        path = os.environ.get("TUNEDECK_JOURNAL")
        if path:
            return cls(journal_fd=os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        return cls(sys.stdout)

    def emit(self, report: dict[str, Any]) -> None:
        if self._failures_only and report.get("kind") != "failure":
            return
        if self._sink is not None:
            self._sink(json.loads(json.dumps(_finite(report), default=str)))
            return
        if self._broken:
            return
        line = json.dumps(_finite(report), default=str, ensure_ascii=False) + "\n"
        try:
            if self._journal_fd is not None:
                _write_all(self._journal_fd, line.encode("utf-8"))  # one append per report: whole lines
            elif self._stream is not None:
                self._stream.write(line)
                self._stream.flush()
        except (OSError, ValueError) as error:
            self._broken = True
            log.warning("reports can no longer be written (%s); training goes on", error)

    def event(self, type: EventType, message: str, **data: Any) -> None:
        self.emit({"kind": "event", "type": EventType(type).value, "message": message, "data": data})

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.emit({"kind": "metrics", "step": int(step), "values": values})

    def run(self, **fields: Any) -> None:
        self.emit({"kind": "run", "fields": fields})

    def failure(self, reason: str) -> None:
        self.emit({"kind": "failure", "reason": f"{self._rank}: {reason}" if self._rank else reason})

    def orphaned(self, reason: str) -> None:
        self.emit({"kind": "orphaned", "reason": reason})

    def exit(self, code: int) -> None:
        self.emit({"kind": "exit", "code": int(code)})


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: a diverged loss is reported as null rather than breaking the reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def format_rate(tokens_per_second: float) -> str:
    """12345.6 -> '12,346 tok/s'; 0.1194 -> '0.12 tok/s' (a 7B model on a CPU is not '0 tok/s')."""
    if tokens_per_second >= 100:
        return f"{tokens_per_second:,.0f} tok/s"
    return f"{tokens_per_second:.2g} tok/s" if tokens_per_second < 10 else f"{tokens_per_second:.1f} tok/s"


def format_duration(seconds: float) -> str:
    """1234 -> '20m 34s'; 45 -> '45s'; 7384 -> '2h 3m'."""
    seconds = max(0, round(float(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h {m}m"
    if m:
        return f"{m}m {s}s"
    return f"{s}s"
