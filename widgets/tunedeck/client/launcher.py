"""Find the embedded service of a state dir, or start it in the background like a local cluster; stop it.

The service outlives the kernel that started it, so runs survive kernel restarts. One service per
state dir: a lock file makes concurrent first calls (two notebooks) start it once.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tunedeck.errors import ServiceUnavailableError, TunedeckError

START_TIMEOUT = 90.0
IDLE_EXIT_SECONDS = 3600  # an auto-started service with no run active or waiting for an hour exits
STOP_TIMEOUT = 15.0


def service_info(home: Path) -> tuple[str, str] | None:
    """(url, token) of a live service for this state dir, or None."""
    try:
        info = json.loads((home / "service.json").read_text())
        token = (home / "token").read_text().strip()
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("url"), str):
        return None
    return (info["url"], token) if _serves(info["url"], token, home) else None


def _serves(url: str, token: str, home: Path, timeout: float = 3.0) -> bool:
    """Whether the service answering at url is the one of this state dir (its /api/health says so)."""
    try:
        resp = requests.get(url + "/api/health", headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
        served = resp.json().get("home") if resp.status_code == 200 else None
    except (requests.RequestException, ValueError, AttributeError):
        return False
    # the service resolves its --home; compare resolved paths so a symlinked or relative home matches
    return isinstance(served, str) and (served == str(home) or Path(served).resolve() == home.resolve())


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
        [sys.executable, "-m", "tunedeck.service", "--home", str(home), "--port", "0",
         # started on demand, so it leaves when nothing needs it (the next call starts it again)
         "--idle-exit", os.environ.get("TUNEDECK_IDLE_EXIT_SECONDS", str(IDLE_EXIT_SECONDS))],
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


def stop_local_service(home: Path, wait: float = STOP_TIMEOUT) -> str:
    """Stop the service of a state dir and say what was done.

    The pid in service.json is signalled (SIGTERM, the service's clean shutdown) only after the url
    next to it answers /api/health as this state dir's service: a service that died without cleaning
    up leaves a pid that may since belong to another process. Waits up to ``wait`` seconds for the
    process to exit. Raises TunedeckError when it could not be stopped.
    """
    try:
        info = json.loads((home / "service.json").read_text())
        pid, url = int(info["pid"]), str(info["url"])
    except FileNotFoundError:
        return f"no tunedeck service is running for {home}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"no tunedeck service is running for {home} (its service.json is unreadable)"
    try:
        token = (home / "token").read_text().strip()
    except OSError:
        token = ""
    with open(home / "service.lock", "w") as lock:  # no launcher starts one while this one stops
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (token and _serves(url, token, home, timeout=5.0)):
                if _exited(pid):
                    _forget(home, pid)
                    return f"no tunedeck service is running for {home} (removed the service.json left by pid {pid})"
                raise TunedeckError(
                    f"service.json in {home} names pid {pid} at {url}, but no tunedeck service of this state dir "
                    f"answers there; pid {pid} was not signalled, as it may now be another process (if `ps -p {pid}` "
                    f"shows a stuck tunedeck service, stop it with `kill {pid}`)"
                )
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + wait
            while not _exited(pid):
                if time.monotonic() > deadline:
                    raise TunedeckError(
                        f"the tunedeck service of {home} (pid {pid}) did not exit within {wait:g} s of SIGTERM; "
                        f"`kill -9 {pid}` stops it at once (a run in progress fails)"
                    )
                time.sleep(0.1)
            left = " (it left its service.json behind: removed)" if _forget(home, pid) else ""
            return f"stopped the tunedeck service of {home} (pid {pid}, {url}){left}"
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _exited(pid: int) -> bool:
    """Whether the process is gone (or a zombie: exited, not yet reaped by its parent)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child (a launcher in this process started it)
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: alive
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _forget(home: Path, pid: int) -> bool:
    """Remove service.json if it still names this pid; whether it did."""
    path = home / "service.json"
    try:
        if json.loads(path.read_text()).get("pid") != pid:
            return False
        path.unlink()
    except (OSError, ValueError, AttributeError):
        return False
    return True
