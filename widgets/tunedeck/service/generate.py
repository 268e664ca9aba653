"""Try it, on the service's side: a completed run's model answers a prompt, streamed, in a helper process.

Generating needs torch and transformers, which the service never loads. ``Generator`` starts ``python -m
tunedeck.training.generate_server --serve`` on the first request, writes it one JSON request a line and
reads the answer back as JSON lines (its protocol is in that module), one answer at a time. The helper
keeps the model it last used loaded, so the next prompt to it answers at once (the first costs the
import of transformers, ~5 s here, and loading the weights). It exits on its own after
``TUNEDECK_TRY_IT_IDLE`` seconds without a request (default 300) or when the service goes (its stdin
closes); the service kills it after ``TUNEDECK_TRY_IT_TIMEOUT`` seconds on one answer (default 300), and
the next request starts a fresh one.

What may be asked is decided here, before anything starts (``helper_request``): a COMPLETED run, a
prompt that is not empty and at most ``MAX_PROMPT_CHARS`` long, and ``checkpoint`` either
``"registered"`` (the registered model version, read back from the MLflow registry by the helper: what
``tunedeck.registry.load_model`` would load) or the name of one of the run's checkpoints; None means the
registered version. Each refusal is a Problem naming its field.

An answer runs in a thread of its own that reads the helper, not in the HTTP request: a client that
goes away stops the generation at the next token (a stop line to the helper) and the next request
finds the helper free, whether or not the response had started.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tunedeck import config
from tunedeck.errors import InvalidInputError, Problem
from tunedeck.types import Checkpoint, RunStatus, TrainingRun

log = logging.getLogger(__name__)

HELPER_MODULE = "tunedeck.training.generate_server"  # run as a process, never imported here
LOG_FILE = "generate.log"
REGISTERED = "registered"
MAX_PROMPT_CHARS = 8000
DEFAULT_IDLE_SECONDS = 300.0
DEFAULT_TIMEOUT_SECONDS = 300.0
BUSY_WAIT_SECONDS = 5.0  # how long a request waits for the answer before it to end
_TICK = 0.2  # how often the reading thread looks whether its client went away


class GeneratorBusyError(Exception):
    """Another answer is being generated (one at a time)."""


def _seconds(env: str, default: float) -> float:
    try:
        value = float(os.environ.get(env, ""))
    except ValueError:
        return default
    return value if value > 0 else default


def helper_request(
    run: TrainingRun, checkpoints: list[Checkpoint], prompt: str, checkpoint: str | None = None,
    max_new_tokens: int = 128, temperature: float = 0.0,
) -> dict[str, Any]:
    """The helper's request for a prompt to ``run``'s model, or InvalidInputError naming each bad field."""
    problems: list[Problem] = []
    if run.status is not RunStatus.COMPLETED:
        problems.append(Problem("run", f"run {run.name} is {run.status.value}: Try it answers with the model of a "
                                       "COMPLETED run (its checkpoints and registered version)"))
    if not prompt.strip():
        problems.append(Problem("prompt", "is empty: type something for the model to answer"))
    elif len(prompt) > MAX_PROMPT_CHARS:
        problems.append(Problem("prompt", f"is {len(prompt):,} characters long; at most {MAX_PROMPT_CHARS:,}"))
    names = [c.name for c in checkpoints]
    choices = ", ".join([REGISTERED, *names][:12]) + (", ..." if len(names) > 11 else "")
    registered = run.registered_model_name and run.registered_model_version is not None
    chosen = checkpoint if checkpoint not in (None, "") else REGISTERED
    request: dict[str, Any] = {"task_type": run.task_type, "prompt": prompt, "max_new_tokens": int(max_new_tokens),
                               "temperature": float(temperature)}
    if chosen == REGISTERED:
        if registered:
            request["registered"] = {"name": run.registered_model_name, "version": run.registered_model_version,
                                     "tracking_uri": _tracking_uri(run)}
            request["label"] = f"{run.registered_model_name} version {run.registered_model_version}"
        elif run.status is RunStatus.COMPLETED:
            problems.append(Problem("checkpoint", f"run {run.name} has no registered model version; choose a checkpoint: "
                                                  f"{', '.join(names) or 'it has none'}"))
    else:
        found = next((c for c in checkpoints if c.name == chosen), None)
        if found is None:
            problems.append(Problem("checkpoint", f"run {run.name} has no checkpoint {str(chosen)[:100]!r}; choose one of: "
                                                  f"{choices}"))
        else:
            request["model_path"] = found.path
            request["label"] = f"checkpoint {found.name}"
    if problems:
        raise InvalidInputError(problems)
    request["checkpoint"] = chosen
    return request


def _tracking_uri(run: TrainingRun) -> str:
    """The MLflow store the run registered to (its spec), else the service's default."""
    try:
        spec = json.loads((Path(run.run_dir or config.runs_root() / run.name) / "spec.json").read_text())
        return str(spec.get("mlflow_tracking_uri") or config.mlflow_tracking_uri())
    except (OSError, ValueError, AttributeError):
        return config.mlflow_tracking_uri()


class Answer:
    """One answer being generated: its events as they come, and a way to stop it."""

    def __init__(self, start: dict[str, Any]):
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._events.put(start)
        self.stopped = threading.Event()
        self.finished = threading.Event()

    def put(self, event: dict[str, Any]) -> None:
        self._events.put(event)

    def events(self) -> Iterator[dict[str, Any]]:
        """Events until "done" or "error"; leaving early (the client went away) stops the generation."""
        try:
            while True:
                event = self._events.get()
                yield event
                if event.get("event") in ("done", "error"):
                    return
        finally:
            self.stopped.set()

    def lines(self) -> Iterator[bytes]:
        """The events as JSON lines (the HTTP response body)."""
        for event in self.events():
            yield json.dumps(event).encode() + b"\n"

    def stop(self) -> None:
        self.stopped.set()


class Generator:
    """Owns the generation helper: starts it on demand, one answer at a time."""

    def __init__(self, command: list[str] | None = None, *, idle_exit: float | None = None, timeout: float | None = None):
        self.idle_exit = idle_exit if idle_exit is not None else _seconds("TUNEDECK_TRY_IT_IDLE", DEFAULT_IDLE_SECONDS)
        self.timeout = timeout if timeout is not None else _seconds("TUNEDECK_TRY_IT_TIMEOUT", DEFAULT_TIMEOUT_SECONDS)
        self._command = command or [sys.executable, "-m", HELPER_MODULE, "--serve", "--idle-exit", f"{self.idle_exit:g}"]
        self._busy = threading.Lock()  # held by the thread reading one answer, from start to end
        self._proc_lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending = b""

    @property
    def helper_pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self, request: dict[str, Any], run: str) -> Answer:
        """Begin answering ``request`` (from helper_request); GeneratorBusyError while another answer runs."""
        if not self._busy.acquire(timeout=BUSY_WAIT_SECONDS):
            raise GeneratorBusyError("another Try it answer is being generated (one at a time); try again when it ends")
        answer = Answer({"event": "start", "run": run, "checkpoint": request["checkpoint"], "source": request["label"]})
        try:
            threading.Thread(target=self._answer, args=(request, answer), name=f"tunedeck-try-it-{run}", daemon=True).start()
        except BaseException:
            self._busy.release()
            raise
        return answer

    def close(self) -> None:
        """End the helper (the service is shutting down)."""
        with self._proc_lock:
            self._stop()

    # -- the reading thread ------------------------------------------------------------------------------
    def _answer(self, request: dict[str, Any], answer: Answer) -> None:
        try:
            answer.put(self._generate(request, answer))
        except Exception as error:  # the client gets every failure as an error event
            log.exception("Try it failed")
            answer.put({"event": "error", "message": f"{type(error).__name__}: {error}"})
        finally:
            answer.finished.set()
            self._busy.release()

    def _generate(self, request: dict[str, Any], answer: Answer) -> dict[str, Any]:
        """Forward the helper's events to ``answer``; returns the last one ("done" or "error")."""
        line = json.dumps({k: v for k, v in request.items() if k not in ("label", "checkpoint")}).encode() + b"\n"
        deadline = time.monotonic() + self.timeout
        for attempt in (1, 2):
            with self._proc_lock:
                proc = self._helper()
            stop_sent = False
            got_any = False
            try:
                self._write(proc, line)
            except BrokenPipeError:
                pass
            while True:
                if answer.stopped.is_set() and not stop_sent:
                    stop_sent = self._try_write(proc, b'{"stop": true}\n')
                if time.monotonic() > deadline:
                    with self._proc_lock:
                        self._stop()
                    return {"event": "error", "message": f"no answer within {self.timeout:g} s (TUNEDECK_TRY_IT_TIMEOUT): "
                                                         "the generation was stopped"}
                raw = self._read_line(proc, min(deadline, time.monotonic() + _TICK))
                if raw is None:
                    continue  # nothing yet: look at the client and the deadline again
                if raw == b"":
                    break  # the helper ended
                got_any = True
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                if event.get("event") in ("done", "error"):
                    return event
                answer.put(event)
            try:
                code: int | None = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            with self._proc_lock:
                self._stop()
            if attempt == 1 and not got_any and code == 0:
                continue  # it had just ended for being idle: start a fresh one
            return {"event": "error", "message": f"the Try it helper process ended (exit code {code}){_log_tail()}"}
        raise AssertionError("unreachable")

    def _helper(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop()
        home = config.home()
        home.mkdir(parents=True, exist_ok=True)
        with open(home / LOG_FILE, "wb") as log_file:
            self._proc = subprocess.Popen(
                self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, cwd=home,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
            )
        self._pending = b""
        return self._proc

    @staticmethod
    def _write(proc: subprocess.Popen[bytes], data: bytes) -> None:
        stdin: IO[bytes] | None = proc.stdin
        assert stdin is not None
        stdin.write(data)
        stdin.flush()

    def _try_write(self, proc: subprocess.Popen[bytes], data: bytes) -> bool:
        try:
            self._write(proc, data)
        except (BrokenPipeError, ValueError):
            pass
        return True

    def _read_line(self, proc: subprocess.Popen[bytes], until: float) -> bytes | None:
        """The helper's next line (b"" if it ended, None if none came before ``until``)."""
        stdout: IO[bytes] | None = proc.stdout
        assert stdout is not None
        fd = stdout.fileno()
        while b"\n" not in self._pending:
            left = until - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b""
            self._pending += chunk
        raw, self._pending = self._pending.split(b"\n", 1)
        return raw

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def _log_tail(lines: int = 3) -> str:
    try:
        text = (config.home() / LOG_FILE).read_text(errors="replace").strip()
    except OSError:
        return ""
    last = [line for line in text.splitlines() if line.strip() and "it/s]" not in line][-lines:]
    return ": " + " | ".join(line.strip()[:300] for line in last) if last else ""


__all__ = ["MAX_PROMPT_CHARS", "REGISTERED", "Answer", "Generator", "GeneratorBusyError", "helper_request"]
