"""Which process owns which: the service owns its training workers through ``RUN_DIR/owner.json``.

Shared by the service (which writes the owner file, and re-attaches to a live worker after a restart)
and the worker (which stops itself when its owner is gone). A pid alone is not an identity, pids are
reused, so a process is named by (pid, start time).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

OWNER_FILE = "owner.json"


def process_start(pid: int | None) -> int | None:
    """The start time of a live process (clock ticks since boot, from /proc), or None if there is none."""
    if not pid or pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # a zombie has exited already
        return None
    return int(fields[19])


def is_alive(pid: int | None, start: int | None) -> bool:
    """True while the process that had ``start`` as its start time is running (not a reuse of its pid)."""
    return start is not None and process_start(pid) == start


def write_owner(run_dir: Path, pid: int | None = None) -> None:
    """Record that process ``pid`` (default: this one) owns the worker of ``run_dir``."""
    pid = pid or os.getpid()
    tmp = Path(run_dir) / f".{OWNER_FILE}.tmp"
    tmp.write_text(json.dumps({"pid": pid, "start": process_start(pid)}))
    os.replace(tmp, Path(run_dir) / OWNER_FILE)


def owner_alive(run_dir: Path) -> bool:
    try:
        owner = json.loads((Path(run_dir) / OWNER_FILE).read_text())
        return is_alive(int(owner["pid"]), owner.get("start"))
    except (OSError, ValueError, KeyError, TypeError):
        return False
