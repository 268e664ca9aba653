"""The service core without HTTP: queueing, cancelling before start, recovery after a restart."""

from __future__ import annotations

import pytest

from tunedeck import InvalidInputError, RunStatus
from tunedeck.inputs.validate import RunRequest
from tunedeck.service.core import RunService
from tunedeck.service.store import Store
from tunedeck.types import TrainingRun, utcnow
from tests.helpers import PAIRS, wait_for, write_jsonl


@pytest.fixture
def model_and_data(home, tmp_path):
    from tunedeck.training.tiny import build_tiny_model

    build_tiny_model(home / "models" / "tiny", [t for p in PAIRS for t in p])
    data = write_jsonl(tmp_path / "train.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    return "tiny", str(data)


def request(model: str, data: str, **kw) -> RunRequest:
    return RunRequest(model=model, train_data_path=data, register_to="main.tests", task_type="INSTRUCTION_FINETUNE", **kw)


def test_runs_wait_in_order_while_no_slot_is_free_and_cancel_stops_them_at_once(home, model_and_data):
    home.mkdir(parents=True, exist_ok=True)
    service = RunService(Store(home / "t.db"), max_concurrent=0)  # no slot: nothing ever launches
    service.start()
    first = service.create(request(*model_and_data))
    second = service.create(request(*model_and_data))
    assert first.status is RunStatus.QUEUED and second.status is RunStatus.QUEUED
    assert [e.type for e in service.events(first.name)] == ["CREATED", "QUEUED"]
    stopped = service.cancel(first.name)
    assert stopped.status is RunStatus.STOPPED and stopped.completed_at is not None
    assert service.events(first.name)[-1].type == "STOPPED"
    assert service.cancel(first.name).status is RunStatus.STOPPED  # cancelling twice is harmless
    service.shutdown()


def test_a_rejected_create_stores_nothing(home, model_and_data):
    home.mkdir(parents=True, exist_ok=True)
    service = RunService(Store(home / "t.db"), max_concurrent=0)
    with pytest.raises(InvalidInputError) as err:
        service.create(request(model_and_data[0], model_and_data[1], context_length=100_000, training_duration="3 epochs"))
    assert {p.field for p in err.value.problems} == {"context_length", "training_duration"}
    assert service.list() == []
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_runs_left_active_by_a_previous_service_are_marked_failed(home):
    home.mkdir(parents=True, exist_ok=True)
    store = Store(home / "t.db")
    run = TrainingRun(name="orphan", status=RunStatus.RUNNING, model="m", train_data_path="d", register_to="a.b", created_at=utcnow())
    store.add_run(run, "CREATED", "created")
    service = RunService(store, max_concurrent=0)
    service.start()
    recovered = service.get("orphan")
    assert recovered.status is RunStatus.FAILED
    assert "service stopped" in service.events("orphan")[-1].message
    service.shutdown()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_scheduler_that_stops_is_restarted_and_health_says_so(home, model_and_data):
    home.mkdir(parents=True, exist_ok=True)
    service = RunService(Store(home / "t.db"), max_concurrent=0)
    real = service._next_waiting
    calls = {"n": 0}

    def dies_once():
        calls["n"] += 1
        if calls["n"] == 1:
            raise SystemExit("simulated: something the loop's guard does not catch")
        return real()

    service._next_waiting = dies_once
    service.start()
    wait_for(lambda: service.scheduler_restarts == 1, timeout=10)
    wait_for(service.scheduler_alive, timeout=10)
    assert service.health()["scheduler"] == "alive" and service.health()["scheduler_restarts"] == 1
    service.shutdown()


def test_a_state_dir_others_can_read_is_tightened(tmp_path, capsys):
    import os
    import stat

    from tunedeck.service.__main__ import secure_home

    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    secure_home(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert "tightened to 700" in capsys.readouterr().err


def test_a_run_whose_launch_raises_fails_with_the_reason_and_the_next_run_still_starts(home, model_and_data, monkeypatch):
    import sys

    import tunedeck.service.core as core

    home.mkdir(parents=True, exist_ok=True)
    real = core.build_spec

    def build_spec(req, name, **kw):
        if req.training_duration == "7ba":  # the poisoned run
            raise RuntimeError("Could not determine home directory.")
        return real(req, name, **kw)

    monkeypatch.setattr(core, "build_spec", build_spec)
    service = RunService(Store(home / "t.db"), max_concurrent=1, worker_command=[sys.executable, "-c", "pass"])
    service.start()
    bad = service.create(request(*model_and_data, training_duration="7ba", validate_inputs=False))
    good = service.create(request(*model_and_data, training_duration="2ba"))
    wait_for(lambda: service.get(bad.name).status.is_terminal() and service.get(good.name).status.is_terminal(), timeout=30)
    failed = service.get(bad.name)
    assert failed.status is RunStatus.FAILED
    assert "could not start the run: RuntimeError: Could not determine home directory." in failed.details
    assert service.get(good.name).status is RunStatus.COMPLETED
    assert service.health()["scheduler"] == "alive"
    service.shutdown()


def test_without_validation_the_cheap_checks_still_refuse_a_direct_create(home, model_and_data):
    home.mkdir(parents=True, exist_ok=True)
    service = RunService(Store(home / "t.db"), max_concurrent=0)
    with pytest.raises(InvalidInputError) as err:
        service.create(RunRequest(model=model_and_data[0], train_data_path="relative/train.jsonl", register_to="x" * 5000,
                                  validate_inputs=False))
    assert {p.field for p in err.value.problems} >= {"train_data_path", "register_to"}
    assert service.list() == []
