"""The worker's reports to the service: one JSON object per line, flushed at once.

Written to the pipe named by ``TUNEDECK_REPORT_FD`` (stdout when unset). Kinds:

    {"kind": "event", "type": EventType, "message": str, "data": {...}}
    {"kind": "metrics", "step": int, "values": {"train/loss": ...}}
    {"kind": "run", "fields": {"mlflow_run_id": ..., "progress": ...}}
    {"kind": "failure", "reason": str}

A service that went away must not kill the training: a broken pipe turns reporting off, nothing more.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from typing import Any, Callable, TextIO

from tunedeck.types import EventType

log = logging.getLogger(__name__)


class Reporter:
    def __init__(self, stream: TextIO | None = None, sink: Callable[[dict[str, Any]], None] | None = None):
        """Write to ``stream``; or hand each report to ``sink`` (used in-process, e.g. by tests)."""
        self._stream = stream
        self._sink = sink
        self._broken = False

    @classmethod
    def from_env(cls) -> "Reporter":
        fd = os.environ.get("TUNEDECK_REPORT_FD")
        if fd:
            return cls(os.fdopen(int(fd), "w", buffering=1, encoding="utf-8", closefd=True))
        return cls(sys.stdout)

    def emit(self, report: dict[str, Any]) -> None:
        if self._sink is not None:
            self._sink(json.loads(json.dumps(_finite(report), default=str)))
            return
        if self._broken or self._stream is None:
            return
        try:
            self._stream.write(json.dumps(_finite(report), default=str, ensure_ascii=False) + "\n")
            self._stream.flush()
        except (BrokenPipeError, OSError, ValueError) as error:
            self._broken = True
            log.warning("reports can no longer be sent to the service (%s); training goes on", error)

    def event(self, type: EventType, message: str, **data: Any) -> None:
        self.emit({"kind": "event", "type": EventType(type).value, "message": message, "data": data})

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.emit({"kind": "metrics", "step": int(step), "values": values})

    def run(self, **fields: Any) -> None:
        self.emit({"kind": "run", "fields": fields})

    def failure(self, reason: str) -> None:
        self.emit({"kind": "failure", "reason": reason})


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: a diverged loss is reported as null rather than breaking the reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def format_duration(seconds: float) -> str:
    """1234 -> '20m 34s'; 45 -> '45s'; 7384 -> '2h 3m'."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h {m}m"
    if m:
        return f"{m}m {s}s"
    return f"{s}s"
