"""`tunedeck stop`: stops the state dir's real service, says when nothing runs, never signals a stranger."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.client.edges import closed_port_url
from tunedeck import foundation_model as fm
from tunedeck.cli import main
from tunedeck.client import get_client


def _tunedeck(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunedeck.cli", *args], capture_output=True, text=True, timeout=120)


def test_stop_stops_the_service_and_a_second_stop_says_nothing_is_running(service_home, capsys):
    fm.list()
    client = get_client()
    info = json.loads((service_home / "service.json").read_text())

    done = _tunedeck("stop")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"stopped the tunedeck service of {service_home} (pid {info['pid']}, {info['url']})")
    assert os.waitpid(info["pid"], os.WNOHANG)[0] == info["pid"]  # it has exited (our child: reaped here)
    assert not (service_home / "service.json").exists()

    done = _tunedeck("stop")
    assert (done.returncode, done.stdout.strip()) == (0, f"no tunedeck service is running for {service_home}")

    # the kernel's cached client starts the service again on its next call
    capsys.readouterr()
    assert fm.list() == []
    assert client.url != info["url"] and f"reconnected to {client.url}" in capsys.readouterr().err


def test_stop_takes_the_state_dir_from_home_too(service_home, tmp_path, monkeypatch, capsys):
    fm.list()
    monkeypatch.setenv("TUNEDECK_HOME", str(tmp_path / "elsewhere"))
    assert main(["stop", "--home", str(service_home)]) == 0
    assert capsys.readouterr().out.startswith(f"stopped the tunedeck service of {service_home}")
    assert not (service_home / "service.json").exists()


def test_stop_never_signals_a_stale_pid_that_now_belongs_to_another_process(home, capsys):
    home.mkdir(parents=True)
    (home / "token").write_text("token")
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (home / "service.json").write_text(json.dumps({"url": closed_port_url(), "pid": stranger.pid, "home": str(home)}))
        assert main(["stop"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("tunedeck: ") and f"pid {stranger.pid} was not signalled" in err and "Traceback" not in err
        assert stranger.poll() is None  # alive and untouched
    finally:
        stranger.kill()
        stranger.wait()

    # its pid is gone now: the service.json is stale, and stop tidies it up
    assert main(["stop"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"no tunedeck service is running for {home} (removed the service.json left by pid {stranger.pid})")
    assert not (home / "service.json").exists()


def test_stop_with_no_state_dir_at_all_says_nothing_is_running(home, capsys):
    assert main(["stop"]) == 0
    assert capsys.readouterr().out.strip() == f"no tunedeck service is running for {home}"
    assert not home.exists()
