"""The embedded service: started by the first call, found by the next, guarded by a token."""

from __future__ import annotations

import json
import stat

import pytest
import requests

from tunedeck import AuthenticationError
from tunedeck import foundation_model as fm


def test_first_call_starts_a_local_service_that_later_calls_reuse(service_home, monkeypatch):
    assert fm.list() == []
    info = json.loads((service_home / "service.json").read_text())
    assert info["url"].startswith("http://127.0.0.1:")
    token_file = service_home / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert requests.get(info["url"] + "/api/runs", timeout=5).status_code == 401

    import tunedeck.client.http as http

    http._client = None  # a new kernel: finds the same service instead of starting another
    fm.list()
    assert json.loads((service_home / "service.json").read_text())["pid"] == info["pid"]

    monkeypatch.setenv("TUNEDECK_URL", info["url"])
    monkeypatch.setenv("TUNEDECK_TOKEN", "wrong")
    with pytest.raises(AuthenticationError):
        fm.list()
    monkeypatch.setenv("TUNEDECK_TOKEN", token_file.read_text())
    assert fm.list() == []
