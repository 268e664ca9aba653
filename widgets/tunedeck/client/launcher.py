"""Find the embedded service of a state dir, or start it in the background like a local cluster.

The service outlives the kernel that started it, so runs survive kernel restarts. One service per
state dir: a lock file makes concurrent first calls (two notebooks) start it once.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from tunedeck.errors import ServiceUnavailableError

START_TIMEOUT = 90.0


def service_info(home: Path) -> tuple[str, str] | None:
    """(url, token) of a live service for this state dir, or None."""
    try:
        info = json.loads((home / "service.json").read_text())
        token = (home / "token").read_text().strip()
    except (OSError, ValueError):
        return None
    try:
        resp = requests.get(info["url"] + "/api/health", headers={"Authorization": f"Bearer {token}"}, timeout=3)
    except requests.RequestException:
        return None
    if resp.status_code != 200 or resp.json().get("home") != str(home):
        return None
    return info["url"], token


def ensure_local_service(home: Path) -> tuple[str, str]:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    found = service_info(home)
    if found:
        return found
    with open(home / "service.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            found = service_info(home)
            if found:
                return found
            return _start(home)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _start(home: Path) -> tuple[str, str]:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ServiceUnavailableError(
            "no tunedeck service is running and this environment cannot start one: "
            "install the service with `pip install 'tunedeck[train]'`, or point TUNEDECK_URL and "
            "TUNEDECK_TOKEN at a running `tunedeck serve`"
        ) from None
    (home / "service.json").unlink(missing_ok=True)
    log = open(home / "service.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunedeck.service", "--home", str(home), "--port", "0"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # not killed with the kernel's process group
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (home / "service.log").read_text(errors="replace")[-2000:]
            raise ServiceUnavailableError(f"the tunedeck service exited at start (code {proc.returncode}):\n{tail}")
        found = service_info(home)
        if found:
            return found
        time.sleep(0.2)
    raise ServiceUnavailableError(f"the tunedeck service did not answer within {START_TIMEOUT:.0f} s; see {home / 'service.log'}")
