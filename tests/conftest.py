"""Shared fixtures: an isolated state dir per test, and a real service for end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import ISOLATED_ENV, stop_service


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



@pytest.fixture
def service_home(home):
    """A state dir whose embedded service (started by the first API call) is stopped after the test."""
    import tunedeck.client.http as http

    http._client = None
    yield home
    stop_service(home)
    http._client = None
