"""One training worker process: launch it (or re-attach to it after a restart), follow its journal,
stop it, and see how it ended.

Each run trains in its own process group, so a crash, an OOM kill or a cancel never reaches the
service. The worker appends its reports to ``RUN_DIR/journal.jsonl``; a follower thread applies each
complete line and hands the byte offset after it to ``on_report``, which stores both in one
transaction, so a restarted service goes on from exactly where it stopped: no report lost, none twice.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunedeck import config
from tunedeck.processes import is_alive, process_start, write_owner
from tunedeck.service.devices import PIN_CODE, Assignment
from tunedeck.service.ray_launch import ray_command

log = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
POLL_SECONDS = 0.1  # how often the journal is read: an event reaches the store within ~0.1 s
# SIGTERM asks the worker to stop at its next safe point (between micro-batches, eval batches and
# generated tokens; after an atomic checkpoint write). SIGKILL only if it has not left by then: a
# micro-batch of a 1B model on CPU takes several seconds, and a kill mid-checkpoint wastes the save.
CANCEL_GRACE_SECONDS = float(os.environ.get("TUNEDECK_CANCEL_GRACE_SECONDS", "30"))


@dataclass
class WorkerExit:
    returncode: int | None  # None: not known (a re-attached worker that died without its exit line)
    cancelled: bool  # stopped by cancel() or kill()
    failure: str | None  # the worker's own reason, if it gave one
    orphaned: bool  # it stopped itself because no service owned it
    log_tail: str


class WorkerProcess:
    def __init__(
        self,
        run_dir: Path,
        on_report: Callable[[dict[str, Any], int], None],
        on_exit: Callable[[WorkerExit], None],
        command: list[str] | None = None,
        journal_offset: int = 0,
        processes: int = 1,
        devices: Assignment | None = None,
    ):
        """``on_report(report, offset_after)`` is called for each journal line, in order, from one thread.
        ``processes`` > 1: the worker runs as that many ranks under torchrun (see torchrun_command).
        ``devices``: what the run holds (service/devices.py): its GPUs (CUDA_VISIBLE_DEVICES), or its
        CPU cores, each process pinned to its share before it execs the worker."""
        self.run_dir = Path(run_dir)
        self._on_report = on_report
        self._on_exit = on_exit
        self.devices = devices
        # How the run is launched: a Ray Train job when the service has a Ray address (service/ray_launch.py:
        # Ray places its processes, so the local devices' pinning and environment do not apply), else a
        # local worker, under torchrun for several processes. Either way one process the service owns.
        self.ray_address = config.ray_address() if command is None else None
        if self.ray_address:
            self._command = ray_command(self.run_dir, self.ray_address, processes)
        else:
            self._command = command or [sys.executable, "-m", "tunedeck.training.worker", str(run_dir)]
            if processes > 1:
                self._command = torchrun_command(self._command, processes, devices.pin_sets() if devices else None)
            if devices is not None and devices.launcher_cores():
                self._command = [sys.executable, "-c", PIN_CODE, str(devices.launcher_cores()), *self._command]
        self._cancelled = threading.Event()
        self._offset = journal_offset
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.pid_start: int | None = None
        self.failure: str | None = None
        self.orphaned = False
        self._exit_code: int | None = None  # from the journal's exit line

    @property
    def journal(self) -> Path:
        return self.run_dir / JOURNAL

    def start(self) -> None:
        """Launch a new worker, owned by this process."""
        _drop_partial_line(self.journal, self._offset)  # a killed worker's half line must not glue onto the next
        write_owner(self.run_dir)
        log_file = open(self.run_dir / "worker.log", "ab")
        env = {**os.environ, "TUNEDECK_JOURNAL": str(self.journal), "PYTHONUNBUFFERED": "1",
               **(self.devices.env() if self.devices and not self.ray_address else {})}
        try:
            self.proc = subprocess.Popen(
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                cwd=self.run_dir,
            )
        finally:
            log_file.close()
        self.pid, self.pid_start = self.proc.pid, process_start(self.proc.pid)
        self._follow()

    def attach(self, pid: int | None, pid_start: int | None) -> bool:
        """Follow a worker a previous service started (from its journal offset on). If it is still
        alive it is ours now; either way, the follower applies what it journaled and then reports
        the exit. False if the process is gone."""
        self.pid, self.pid_start = pid, pid_start
        alive = is_alive(pid, pid_start)
        if alive:
            write_owner(self.run_dir)
        self._follow()
        return alive

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return is_alive(self.pid, self.pid_start)

    def cancel(self, grace: float = CANCEL_GRACE_SECONDS) -> None:
        """SIGTERM now; SIGKILL if the worker has not left after the grace period."""
        if not self.alive():
            return
        self._cancelled.set()
        self._signal(signal.SIGTERM)
        timer = threading.Timer(grace, self._signal, args=(signal.SIGKILL,))
        timer.daemon = True
        timer.start()

    def kill(self) -> None:
        self._cancelled.set()
        self._signal(signal.SIGKILL)

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.alive()

    def _signal(self, sig: int) -> None:
        if self.alive() and self.pid:
            try:
                os.killpg(self.pid, sig)  # its own session: the worker's pid is its process group
            except ProcessLookupError:
                pass

    # -- the journal ------------------------------------------------------------------------------
    def _follow(self) -> None:
        threading.Thread(target=self._pump, name=f"journal-{self.run_dir.name}", daemon=True).start()

    def _pump(self) -> None:
        while True:
            exited = not self.alive()  # read once more after the exit: its last lines
            self._read_new_lines()
            if exited:
                break
            time.sleep(POLL_SECONDS)
        returncode = self.proc.wait() if self.proc is not None else self._exit_code
        self._on_exit(WorkerExit(returncode, self._cancelled.is_set(), self.failure, self.orphaned,
                                 _tail(self.run_dir / "worker.log")))

    def _read_new_lines(self) -> None:
        try:
            with open(self.journal, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        for line in data[: end + 1].splitlines(keepends=True):
            self._offset += len(line)
            try:
                report = json.loads(line)
            except ValueError:
                log.warning("skipping a journal line that is not JSON: %r", line[:200])
                continue
            kind = report.get("kind") if isinstance(report, dict) else None
            if kind == "failure" and self.failure is None:  # the first: later ranks fail because it did
                self.failure = str(report.get("reason") or "")
            elif kind == "orphaned":
                self.orphaned = True
            elif kind == "exit":
                self._exit_code = int(report.get("code", 1))
            try:
                self._on_report(report, self._offset)
            except Exception as exc:  # noqa: BLE001 - a bad report must not stop the follower
                print(f"tunedeck: could not record report {line[:200]!r}: {exc}", file=sys.stderr)


def torchrun_command(command: list[str], processes: int, rank_cores: str | None = None) -> list[str]:
    """``command`` (``python -m MODULE ARGS`` or ``python SCRIPT ARGS``) as ``processes`` ranks of one run.

    torchrun (torch.distributed.run) rather than Accelerate: it is part of torch (no extra dependency,
    no config file), does the rendezvous (--standalone: a private one on this machine), sets RANK /
    WORLD_SIZE / LOCAL_RANK for each rank, and ends the other ranks when one fails or when it is
    itself sent SIGTERM (the cancel, which reaches it through its process group; each rank sits in
    its own session, hence the ranks' parent-death signal in training/distributed.py). Elastic restarts
    stay off (--max-restarts 0): a failed run resumes from its checkpoint through the service instead.
    Launched as a command, so the service imports no torch.

    ``rank_cores`` ('0,1;2,3', service/devices.py): torchrun starts each rank as PIN_CODE, which pins it
    to its LOCAL_RANK's cores and then execs the rank's command (``--no-python``: torchrun runs it as given).
    """
    python, rest = command[0], command[1:]
    launcher = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={int(processes)}",
                "--max-restarts=0"]
    if rank_cores:
        return [*launcher, "--no-python", python, "-c", PIN_CODE, rank_cores, python, *rest]
    return [*launcher, *rest]


def _drop_partial_line(journal: Path, offset: int) -> None:
    """Cut the journal back to what was applied when it ends in an unfinished line."""
    try:
        size = journal.stat().st_size
        if size > offset:
            with open(journal, "rb") as f:
                f.seek(offset)
                rest = f.read()
            complete = rest[: rest.rfind(b"\n") + 1]
            if len(complete) < len(rest):
                os.truncate(journal, offset + len(complete))
    except FileNotFoundError:
        pass


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
