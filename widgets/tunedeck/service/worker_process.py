"""One training worker subprocess: launch it, read its JSON-line reports, stop it, see how it ended.

Each run trains in its own process group so a crash, an OOM kill or a cancel never reaches the service.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

CANCEL_GRACE_SECONDS = 2.0


@dataclass
class WorkerExit:
    returncode: int
    cancelled: bool
    failure: str | None  # the worker's own reason, if it gave one
    log_tail: str


class WorkerProcess:
    def __init__(
        self,
        run_dir: Path,
        on_report: Callable[[dict[str, Any]], None],
        on_exit: Callable[[WorkerExit], None],
        command: list[str] | None = None,
    ):
        self.run_dir = run_dir
        self._on_report = on_report
        self._on_exit = on_exit
        self._command = command or [sys.executable, "-m", "tunedeck.training.worker", str(run_dir)]
        self._cancelled = threading.Event()
        self._failure: str | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        read_fd, write_fd = os.pipe()
        log = open(self.run_dir / "worker.log", "ab")
        env = {**os.environ, "TUNEDECK_REPORT_FD": str(write_fd), "PYTHONUNBUFFERED": "1"}
        try:
            self.proc = subprocess.Popen(
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                env=env,
                start_new_session=True,
                cwd=self.run_dir,
            )
        finally:
            os.close(write_fd)
            log.close()
        threading.Thread(target=self._pump, args=(read_fd,), name=f"worker-{self.pid}", daemon=True).start()

    def cancel(self) -> None:
        """SIGTERM now; SIGKILL if the worker has not left after the grace period."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._cancelled.set()
        self._signal(signal.SIGTERM)
        timer = threading.Timer(CANCEL_GRACE_SECONDS, self._signal, args=(signal.SIGKILL,))
        timer.daemon = True
        timer.start()

    def kill(self) -> None:
        self._cancelled.set()
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def _pump(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as reports:
            for line in reports:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("kind") == "failure":
                    self._failure = str(msg.get("reason") or "")
                    continue
                try:
                    self._on_report(msg)
                except Exception as exc:  # a bad report must not stop the pump
                    print(f"tunedeck: could not record report {line[:200]!r}: {exc}", file=sys.stderr)
        returncode = self.proc.wait()
        self._on_exit(WorkerExit(returncode, self._cancelled.is_set(), self._failure, _tail(self.run_dir / "worker.log")))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
