"""The fault suite: a real service process training a tiny model, killed and restarted at bad moments.

Each test asserts what a user would see: every run ends COMPLETED or FAILED with a reason, no worker
is left without an owner, and the metrics hold each step exactly once (nothing lost, nothing doubled).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from benchmarks._service import ServiceProcess as Service
from benchmarks._service import wait_for, worker_pids
from tests.helpers import ISOLATED_ENV, PAIRS, write_jsonl

pytestmark = pytest.mark.e2e

STEPS = 400


@pytest.fixture
def fault_home(tmp_path, monkeypatch):
    from tunedeck.training.tiny import build_tiny_model

    for var in ISOLATED_ENV:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("TUNEDECK_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TUNEDECK_RESUME_EVERY_SECONDS", "0.5")  # a resume point every half second
    build_tiny_model(home / "models" / "tiny", [t for p in PAIRS for t in p])
    write_jsonl(tmp_path / "train.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    services: list[Service] = []
    yield home, services
    for service in services:
        service.stop()
    for pid in worker_pids(home):
        os.killpg(pid, signal.SIGKILL)


def start(home: Path, services: list[Service]) -> Service:
    services.append(Service(home))
    return services[-1]


def create(service: Service, steps: int = STEPS) -> str:
    body = {"model": "tiny", "train_data_path": str(service.home.parent / "train.jsonl"), "register_to": "main.faults.tiny",
            "task_type": "INSTRUCTION_FINETUNE", "training_duration": f"{steps}ba", "learning_rate": 3e-3}
    return service.api("POST", "/api/runs", json=body)["name"]


def paused_worker(service: Service, name: str, home: Path, resume_point: bool = False) -> int:
    """The run's worker, stopped (SIGSTOP) once it has trained (and, with ``resume_point``, saved a resume
    point): a tiny model on a quiet machine trains 250 steps in seconds, faster than the store applies
    them, so the test holds the worker still instead of racing it. SIGCONT resumes it."""
    from tunedeck.training.checkpoint import latest_resume_point

    pid = wait_for(lambda: next((e["data"]["pid"] for e in service.events(name) if e["type"] == "STARTED"), None), timeout=180)
    run_dir = home / "runs" / name
    if resume_point:
        wait_for(lambda: latest_resume_point(run_dir) is not None, timeout=180, interval=0.02)
    else:
        wait_for(lambda: b'"kind": "metrics"' in (run_dir / "journal.jsonl").read_bytes()
                 if (run_dir / "journal.jsonl").exists() else False, timeout=180, interval=0.02)
    os.kill(pid, signal.SIGSTOP)
    assert worker_pids(home) == [pid], "paused before it finished"
    return pid


def assert_whole_history(service: Service, name: str, steps: int = STEPS) -> None:
    losses = service.losses(name)
    assert [s for s, _ in losses] == list(range(1, steps + 1)), "each step's loss exactly once"
    assert losses[-1][1] < losses[0][1] / 5, "the model learned"


def test_service_kill9_the_worker_trains_on_and_the_restarted_service_reattaches(fault_home):
    home, services = fault_home
    service = start(home, services)
    name = create(service)
    pid = paused_worker(service, name, home)
    service.kill9()
    os.kill(pid, signal.SIGCONT)
    time.sleep(1.5)
    assert worker_pids(home) == [pid], "the worker goes on while its service is briefly gone"

    service = start(home, services)
    run = service.wait_status(name, {"COMPLETED", "FAILED"})
    assert run["status"] == "COMPLETED", run
    messages = [e["message"] for e in service.events(name)]
    assert any("re-attached to the worker" in m for m in messages)
    assert not any("resum" in m for m in messages), "re-attached, not resumed"
    assert_whole_history(service, name)
    assert run["registered_model_version"] == 1
    assert worker_pids(home) == []


def test_worker_dying_while_the_service_is_down_is_resumed_from_its_latest_checkpoint(fault_home):
    home, services = fault_home
    service = start(home, services)
    name = create(service)
    pid = paused_worker(service, name, home, resume_point=True)
    service.kill9()
    os.killpg(pid, signal.SIGKILL)

    service = start(home, services)
    run = service.wait_status(name, {"COMPLETED", "FAILED"})
    assert run["status"] == "COMPLETED", run
    events = service.events(name)
    queued = [e for e in events if e["data"].get("autoresume")]
    assert len(queued) == 1 and "died while the tunedeck service was down" in queued[0]["message"]
    resumed = [e for e in events if e["type"] == "TRAIN_RESUMED"]
    assert len(resumed) == 1 and resumed[0]["data"]["step"] >= 1
    assert_whole_history(service, name)
    assert worker_pids(home) == []


def test_worker_kill9_under_a_live_service_resumes_the_run(fault_home):
    home, services = fault_home
    service = start(home, services)
    name = create(service)
    pid = paused_worker(service, name, home, resume_point=True)
    os.killpg(pid, signal.SIGKILL)
    run = service.wait_status(name, {"COMPLETED", "FAILED"})
    assert run["status"] == "COMPLETED", run
    queued = [e for e in service.events(name) if e["data"].get("autoresume")]
    assert len(queued) == 1 and "SIGKILL" in queued[0]["message"] and "attempt 1 of 2" in queued[0]["message"]
    assert_whole_history(service, name)


def test_a_worker_without_a_service_stops_itself_and_the_run_resumes_later(fault_home, monkeypatch):
    monkeypatch.setenv("TUNEDECK_ORPHAN_GRACE_SECONDS", "1")
    home, services = fault_home
    service = start(home, services)
    name = create(service)
    pid = paused_worker(service, name, home)
    service.kill9()
    os.kill(pid, signal.SIGCONT)
    wait_for(lambda: worker_pids(home) == [], timeout=60)  # no owner for 1 s: the worker left on its own

    service = start(home, services)
    run = service.wait_status(name, {"COMPLETED", "FAILED"})
    assert run["status"] == "COMPLETED", run
    queued = [e for e in service.events(name) if e["data"].get("autoresume")]
    assert len(queued) == 1 and "no tunedeck service owned it" in queued[0]["message"]
    assert_whole_history(service, name)


def test_sigterm_shuts_the_service_down_cleanly(fault_home):
    home, services = fault_home
    service = start(home, services)
    name = create(service)
    paused_worker(service, name, home)  # still training when the service is asked to leave
    service.proc.terminate()
    assert service.proc.wait(30) == 0
    assert not (home / "service.json").exists()
    assert worker_pids(home) == []
    service = start(home, services)
    run = service.run(name)
    assert run["status"] == "STOPPED" and "shut down" in run["details"]


def test_the_service_leaves_when_its_state_dir_is_gone(fault_home):
    import shutil

    home, services = fault_home
    service = start(home, services)
    shutil.rmtree(home)
    assert service.proc.wait(30) == 0


def test_an_idle_service_started_with_idle_exit_leaves_on_its_own(fault_home):
    home, services = fault_home
    services.append(Service(home, args=("--idle-exit", "1")))
    assert services[-1].proc.wait(30) == 0
    assert not (home / "service.json").exists()
