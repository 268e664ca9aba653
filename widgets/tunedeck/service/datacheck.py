"""The form's "Check data", on the service's side: the cheap checks here, the token counts in a helper.

Counting tokens needs the model's tokenizer, and so transformers (~5 s and ~250 MiB to import here),
which the service never loads. The service does what it can with ``inputs`` (task type, data path,
data format when no model is chosen) and hands the rest to ``python -m tunedeck.training.datacheck
--serve``: a helper process started on the first check, asked one JSON line at a time, and kept warm
so that later checks answer in a fraction of a second. It exits on its own after
``training.datacheck.IDLE_EXIT_SECONDS`` without a request, and when the service goes (its stdin
closes). A check that takes longer than ``TUNEDECK_DATA_CHECK_TIMEOUT`` seconds is ended (the helper
is killed and the next check starts a fresh one) and answered with a problem that says so; so is a
helper that crashes.

A GGUF model (SmolLM2) is converted to a Hugging Face folder once, before the first check or estimate
that needs it, as a step of its own (``prepare_model``): ``python -m tunedeck.training.models --convert``
in a process of its own, with its own timeout (``TUNEDECK_CONVERT_TIMEOUT``, default 30 min; it took
~20 s on a quiet 2-core machine, 50 s at load average 6, and an estimate that did it inside the data
check's 120 s once ran out of time) and its stage in the answer. A request waits for it up to
``PREPARE_WAIT`` seconds (the client waits 300 s for a check or an estimate); after that it is
answered ``pending`` with the stage and time so far, and the conversion goes on: ask again.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from tunedeck import config
from tunedeck.errors import Problem
from tunedeck.inputs import catalog, datasets
from tunedeck.inputs.params import check_task_type
from tunedeck.inputs.paths import resolve_data

HELPER_MODULE = "tunedeck.training.datacheck"  # run as a process, never imported here
LOG_FILE = "datacheck.log"
CONVERT_MODULE = "tunedeck.training.models"  # its --convert step, run as a process
CONVERT_LOG = "convert-{name}.log"
CONVERTED_MARKER = ".tunedeck-converted.json"  # training/models.py writes it last, into the finished folder
PROGRESS_PREFIX = "tunedeck-convert: "  # training/models.py's progress lines
DEFAULT_CONVERT_TIMEOUT = 1800.0
PREPARE_WAIT = 150.0  # a request waits this long for a conversion, then answers "pending" (the client waits 300 s)

log = logging.getLogger(__name__)


def convert_timeout() -> float:
    """Seconds a GGUF conversion may take before it is stopped (TUNEDECK_CONVERT_TIMEOUT, default 1800)."""
    value = os.environ.get("TUNEDECK_CONVERT_TIMEOUT")
    return max(1.0, float(value)) if value else DEFAULT_CONVERT_TIMEOUT


def converted(gguf: Path, target: Path) -> bool:
    """``target`` holds the finished conversion of this very ``gguf`` file (training/models.py's marker:
    its path, size and modification time), read without loading anything."""
    try:
        info = gguf.stat()
        marker = json.loads((target / CONVERTED_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return bool(marker == json.loads(json.dumps({"gguf": str(gguf), "size": info.st_size, "mtime": info.st_mtime})))


class Conversion:
    """One GGUF -> Hugging Face conversion in a process of its own, followed by a thread; ``error`` is
    None once it succeeded, a sentence once it failed or ran past its timeout."""

    def __init__(self, name: str, gguf: Path, target: Path, command: list[str], timeout: float):
        self.name, self.gguf, self.target, self.timeout = name, gguf, target, timeout
        self.log_path = config.home() / CONVERT_LOG.format(name=_safe(name))
        self.started = time.monotonic()
        self.error: str | None = None
        self.done = threading.Event()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as out:
            # stdin is a pipe the process watches: it ends itself when the service is gone
            self.proc = subprocess.Popen([*command, "--convert", str(gguf), str(target)], stdin=subprocess.PIPE,
                                         stdout=out, stderr=subprocess.STDOUT, cwd=config.home(),
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        log.info("converting %s (%s) to Hugging Face format in %s, once: pid %d, log %s",
                 name, gguf, target, self.proc.pid, self.log_path)
        threading.Thread(target=self._follow, name=f"convert-{name}", daemon=True).start()

    def _follow(self) -> None:
        try:
            code = self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            self.error = (f"converting {self.name} from GGUF did not finish within {self.timeout:g} s "
                          "(TUNEDECK_CONVERT_TIMEOUT) and was stopped")
        else:
            if code != 0 or not converted(self.gguf, self.target):
                self.error = f"converting {self.name} from GGUF failed (exit code {code}){_log_tail(self.log_path)}"
        took = time.monotonic() - self.started
        if self.error:
            log.error("%s (after %.0f s)", self.error, took)
        else:
            log.info("converted %s in %.0f s", self.name, took)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.done.set()

    def stage(self) -> str:
        """The stage the conversion last reported ("dequantizing the weights"), or "starting"."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        stages = [line.removeprefix(PROGRESS_PREFIX) for line in lines if line.startswith(PROGRESS_PREFIX)]
        return stages[-1] if stages else "starting"

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


class DataChecker:
    """Answers data checks; owns the helper process (one check at a time)."""

    def __init__(self, command: list[str] | None = None, timeout: float | None = None,
                 convert_command: list[str] | None = None, prepare_wait: float = PREPARE_WAIT):
        self._command = command or [sys.executable, "-m", HELPER_MODULE, "--serve"]
        self._timeout = timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending = b""
        self._convert_command = convert_command or [sys.executable, "-m", CONVERT_MODULE]
        self._prepare_wait = prepare_wait
        self._conversions: dict[str, Conversion] = {}
        self._conversions_lock = threading.Lock()

    def prepare_model(self, name: str, gguf: str | Path, target: str | Path, wait: float | None = None) -> dict[str, Any] | None:
        """None once the GGUF model ``gguf`` is converted into ``target`` (at once when it already is);
        otherwise the answer to give instead: the conversion failed, or it is still going after ``wait``
        seconds (``pending``, with its stage; it goes on, so a later request finds it done)."""
        gguf, target = Path(gguf), Path(target)
        if converted(gguf, target):
            return None
        with self._conversions_lock:
            conversion = self._conversions.get(str(target))
            if conversion is None:
                conversion = Conversion(name, gguf, target, self._convert_command, convert_timeout())
                self._conversions[str(target)] = conversion
        conversion.done.wait(self._prepare_wait if wait is None else wait)
        if not conversion.done.is_set():
            so_far = time.monotonic() - conversion.started
            message = (f"{name} is being converted from GGUF to a Hugging Face folder, once before its first use "
                       f"({conversion.stage()}, {so_far:.0f} s so far); ask again in a minute")
            return {"ok": False, "pending": True, "message": message, "stage": conversion.stage(),
                    "seconds_so_far": round(so_far, 1), "problems": [_problem("model", message)]}
        with self._conversions_lock:
            if self._conversions.get(str(target)) is conversion:
                del self._conversions[str(target)]  # done: a failed one is tried afresh next time
        if conversion.error is None:
            return None
        return {"ok": False, "message": conversion.error, "problems": [_problem("model", conversion.error)]}

    def check(self, path: str, task_type: str, model: str | None, context_length: int | None) -> dict[str, Any]:
        """Rows, token counts and bad lines of a data file (the model's tokenizer, never its weights)."""
        try:
            task_type = check_task_type(task_type)
        except ValueError as exc:
            return {"ok": False, "problems": [Problem("task_type", str(exc)).to_dict()]}
        source, problems = resolve_data(path, task_type, "train_data_path")
        if problems or source is None:
            return {"ok": False, "problems": [p.to_dict() for p in problems]}
        info = catalog.resolve_model(model) if model else None
        if info is None:
            problems = datasets.check_data(source, task_type, "train_data_path")
            return {"ok": not problems, "problems": [p.to_dict() for p in problems], "note": "choose a model to count tokens"}
        gguf = catalog.is_gguf(info)
        cache_dir = catalog.gguf_cache_dir(info)
        if gguf and cache_dir:
            waiting = self.prepare_model(info.name, info.path, cache_dir)
            if waiting is not None:
                return waiting
        request = {
            "source": {"kind": source.kind, "files": list(source.files), "origin": source.origin},
            "task_type": task_type,
            "model_path": str(Path(info.path).parent) if gguf else info.path,
            "gguf_file": Path(info.path).name if gguf else None,
            "model_cache_dir": str(cache_dir) if cache_dir else None,
            "context_length": context_length,
        }
        return self.ask(request)

    def ask(self, request: dict[str, Any], timeout: float | None = None,
            setting: str = "TUNEDECK_DATA_CHECK_TIMEOUT") -> dict[str, Any]:
        """The helper's answer to one request, or a problem saying why there is none.

        ``timeout``: this request's own limit (the estimate's throughput probe has one, named ``setting``
        in the problem); by default the data check's."""
        if timeout is None:
            timeout = self._timeout if self._timeout is not None else config.data_check_timeout()
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            return _failure(f"the data check did not start within {timeout:g} s: another check is still running")
        try:
            for attempt in (1, 2):
                proc = self._helper()
                try:
                    assert proc.stdin is not None
                    proc.stdin.write(json.dumps(request).encode() + b"\n")
                    proc.stdin.flush()
                    line = self._read_line(proc, deadline)
                except BrokenPipeError:
                    line = b""
                if line is None:
                    self._stop()
                    return _failure(
                        f"the data check did not finish within {timeout:g} s ({setting}) and was "
                        "stopped; a smaller file or a longer timeout will do"
                    )
                if line:
                    return _parse(line)
                try:
                    code: int | None = proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    code = None
                self._stop()
                if code == 0 and attempt == 1:
                    continue  # it had just ended for being idle: start a fresh one
                return _failure(f"the data check's helper process ended (exit code {code}){_log_tail()}")
            raise AssertionError("unreachable")
        finally:
            self._lock.release()

    def close(self) -> None:
        """End the helper and any conversion (the service is shutting down)."""
        with self._conversions_lock:
            conversions, self._conversions = list(self._conversions.values()), {}
        for conversion in conversions:
            conversion.stop()
        with self._lock:
            self._stop()

    def _helper(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        home = config.home()
        home.mkdir(parents=True, exist_ok=True)
        with open(home / LOG_FILE, "wb") as log:
            self._proc = subprocess.Popen(
                self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=home,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
            )
        self._pending = b""
        return self._proc

    def _read_line(self, proc: subprocess.Popen[bytes], deadline: float) -> bytes | None:
        """The next line of the helper's answers (b"" if it ended first, None at the deadline)."""
        stdout: IO[bytes] | None = proc.stdout
        assert stdout is not None
        fd = stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b""
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()


def _parse(line: bytes) -> dict[str, Any]:
    try:
        result = json.loads(line)
    except ValueError:
        result = None
    return result if isinstance(result, dict) else _failure("the data check's helper answered something that is not JSON")


def _failure(message: str) -> dict[str, Any]:
    return {"ok": False, "message": message, "problems": [_problem("train_data_path", message)]}


def _problem(field: str, message: str) -> dict[str, Any]:
    return {"field": field, "message": message, "file": None, "line": None}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:100]


def _log_tail(path: Path | None = None, lines: int = 3) -> str:
    try:
        text = (path or config.home() / LOG_FILE).read_text(errors="replace").strip()
    except OSError:
        return ""
    last = text.splitlines()[-lines:]
    return ": " + " | ".join(line.strip()[:300] for line in last) if last else ""
