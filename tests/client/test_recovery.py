"""A kernel's cached client outlives its service: after a crash (kill -9) the embedded service's client
finds the new one (or starts it) and goes on; a client of TUNEDECK_URL says the service is not answering.
Real service processes throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import wait_for
from tunedeck import ServiceUnavailableError
from tunedeck import foundation_model as fm
from tunedeck.client import get_client


def _kill_9(home) -> dict:
    """Crash the service of a state dir the hard way: no clean shutdown, service.json left behind."""
    info = json.loads((home / "service.json").read_text())
    os.kill(info["pid"], signal.SIGKILL)
    os.waitpid(info["pid"], 0)  # the launcher in this process started it: reap it
    return info


def test_embedded_client_follows_a_service_restarted_on_another_port_after_kill_9(service_home, capsys):
    assert fm.list() == []
    client = get_client()
    old = _kill_9(service_home)
    assert client.url == old["url"]

    # a new service for the same state dir, as another kernel or `tunedeck serve` would start it
    log = open(service_home / "second-service.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "tunedeck.service", "--home", str(service_home), "--port", "0"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        new = wait_for(lambda: _info_of(service_home, proc.pid), timeout=60)
        assert new["url"] != old["url"]
        capsys.readouterr()

        assert fm.list() == []  # the cached client, whose url is dead
        assert get_client() is client and client.url == new["url"]
        note = capsys.readouterr().err
        assert note.strip() == f"tunedeck: the service at {old['url']} stopped; reconnected to {new['url']}"

        fm.list()
        assert capsys.readouterr().err == ""  # the note once, not on every call
    finally:
        proc.terminate()
        proc.wait(30)


def _info_of(home, pid):
    try:
        info = json.loads((home / "service.json").read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("pid") == pid else None


def test_embedded_client_restarts_the_crashed_service_and_sends_a_refused_post_again(service_home, capsys):
    assert fm.list() == []
    client = get_client()
    old = _kill_9(service_home)
    capsys.readouterr()

    # a POST whose connection is refused was never received: safe to send again to the new service
    problems = fm.check_inputs(model="no-such-model", train_data_path="/nowhere/train.jsonl", register_to="main.demo.m")
    assert problems and any(p.field == "model" for p in problems)
    new = json.loads((service_home / "service.json").read_text())
    assert new["pid"] != old["pid"] and client.url == new["url"] != old["url"]
    assert f"reconnected to {new['url']}" in capsys.readouterr().err


def test_client_of_an_explicit_url_says_the_service_is_not_answering_and_how_to_start_it(service_home, monkeypatch):
    fm.list()
    info = json.loads((service_home / "service.json").read_text())
    monkeypatch.setenv("TUNEDECK_URL", info["url"])
    monkeypatch.setenv("TUNEDECK_TOKEN", (service_home / "token").read_text())
    assert fm.list() == []
    _kill_9(service_home)

    with pytest.raises(ServiceUnavailableError) as caught:
        fm.list()
    message = str(caught.value)
    port = info["url"].rsplit(":", 1)[1]
    assert message.startswith(f"the tunedeck service at {info['url']} is not answering (Connection refused)")
    assert f"`tunedeck serve --port {port}`" in message and "unset TUNEDECK_URL and TUNEDECK_TOKEN" in message
    # nothing was started behind the user's back: service.json still names the dead service
    assert json.loads((service_home / "service.json").read_text())["pid"] == info["pid"]
