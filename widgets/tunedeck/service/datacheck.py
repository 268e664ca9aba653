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
"""

from __future__ import annotations

import json
import os
import select
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


class DataChecker:
    """Answers data checks; owns the helper process (one check at a time)."""

    def __init__(self, command: list[str] | None = None, timeout: float | None = None):
        self._command = command or [sys.executable, "-m", HELPER_MODULE, "--serve"]
        self._timeout = timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending = b""

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
        request = {
            "source": {"kind": source.kind, "files": list(source.files), "origin": source.origin},
            "task_type": task_type,
            "model_path": str(Path(info.path).parent) if gguf else info.path,
            "gguf_file": Path(info.path).name if gguf else None,
            "model_cache_dir": str(cache_dir) if cache_dir else None,
            "context_length": context_length,
        }
        return self.ask(request)

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """The helper's answer to one request, or a problem saying why there is none."""
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
                        f"the data check did not finish within {timeout:g} s (TUNEDECK_DATA_CHECK_TIMEOUT) and was "
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
        """End the helper (the service is shutting down)."""
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
    return {
        "ok": False,
        "message": message,
        "problems": [{"field": "train_data_path", "message": message, "file": None, "line": None}],
    }


def _log_tail(lines: int = 3) -> str:
    try:
        text = (config.home() / LOG_FILE).read_text(errors="replace").strip()
    except OSError:
        return ""
    last = text.splitlines()[-lines:]
    return ": " + " | ".join(line.strip()[:300] for line in last) if last else ""
