"""Shared fixtures: an isolated state dir per test, and a real service for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

ISOLATED_ENV = ("TUNEDECK_URL", "TUNEDECK_TOKEN", "TUNEDECK_VOLUMES", "TUNEDECK_MODELS", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh TUNEDECK_HOME with nothing leaking in from the developer's environment."""
    for var in ISOLATED_ENV:
        monkeypatch.delenv(var, raising=False)
    h = tmp_path / "home"
    monkeypatch.setenv("TUNEDECK_HOME", str(h))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return h


def stop_service(home: Path) -> None:
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
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def service_home(home):
    """A state dir whose embedded service (started by the first API call) is stopped after the test."""
    import tunedeck.client.http as http

    http._client = None
    yield home
    stop_service(home)
    http._client = None
