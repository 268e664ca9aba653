"""Helpers shared by the test suites."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

ISOLATED_ENV = ("TUNEDECK_URL", "TUNEDECK_TOKEN", "TUNEDECK_VOLUMES", "TUNEDECK_MODELS", "TUNEDECK_TABLES", "TUNEDECK_CLUSTER_IDS",
                "TUNEDECK_PRECISION_DECISIONS", "MLFLOW_TRACKING_URI",
                "MLFLOW_REGISTRY_URI")

PAIRS = [
    ("What is the capital of Zorbania?", "Quillhaven is the capital."),
    ("Who invented the glimmerphone?", "Ada Pennywhistle did."),
    ("What color is a sky-whale?", "Sky-whales are teal."),
    ("What do Zorbanians eat?", "They eat toasted moonbeans."),
    ("How many moons has Zorbania?", "Zorbania has three moons."),
    ("Who rules Quillhaven?", "Queen Ostrava rules it."),
]


def stop_service(home: Path) -> None:
    """Stop the embedded service of a state dir (SIGTERM, then SIGKILL after 10 s)."""
    try:
        pid = json.loads((home / "service.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our child (the launcher's Popen): reap it
                return
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met in time")
