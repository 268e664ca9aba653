"""A real ``python -m tunedeck.service`` process in a state dir, to kill and restart (the fault benchmark
and the fault tests), and the training workers of a state dir as /proc shows them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import requests


def wait_for(predicate: Callable[[], Any], timeout: float = 120.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met in time")


class ServiceProcess:
    """``python -m tunedeck.service --home HOME``, started the way the launcher starts it."""

    def __init__(self, home: Path, log: Path | None = None, args: tuple[str, ...] = ()):
        self.home = home
        self.log = log or home.parent / "service.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "tunedeck.service", "--home", str(home), *args],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        info = wait_for(self._info, timeout=90)
        self.url, self.token = info["url"], (home / "token").read_text().strip()

    def _info(self) -> dict | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the service exited at start:\n{self.log.read_text()[-2000:]}")
        try:
            info = json.loads((self.home / "service.json").read_text())
        except (OSError, ValueError):
            return None
        return info if info.get("pid") == self.proc.pid else None

    def api(self, method: str, path: str, **kw: Any) -> Any:
        resp = requests.request(method, self.url + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=60, **kw)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def run(self, name: str) -> dict:
        return self.api("GET", f"/api/runs/{name}")

    def events(self, name: str) -> list[dict]:
        return self.api("GET", f"/api/runs/{name}/events")["events"]

    def losses(self, name: str) -> list[tuple[int, float]]:
        points = self.api("GET", f"/api/runs/{name}/metrics")["metrics"]
        return [(p["step"], p["value"]) for p in points if p["name"] == "train/loss"]

    def wait_status(self, name: str, statuses: set[str], timeout: float = 300) -> dict:
        return wait_for(lambda: (r := self.run(name))["status"] in statuses and r, timeout=timeout)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def worker_pids(home: Path) -> list[int]:
    """Live training workers of a state dir (from /proc: a worker's command line names its run dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"tunedeck.training.worker" in cmd and any(str(home).encode() in c for c in cmd) and state != "Z":
            found.append(int(entry.name))
    return found
