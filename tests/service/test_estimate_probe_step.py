"""The estimate's throughput probe is a step of its own: it runs in the background with its own timeout
(TUNEDECK_PROBE_TIMEOUT, not the data check's 120 s); an estimate that has waited long enough for it
answers ``pending`` and the probe goes on; the next estimate gets the measured figure. A real service
core, its real data-check helper, a tiny model built here: no stand-ins."""

from __future__ import annotations

import json

import pytest

from tests.helpers import PAIRS, wait_for, write_jsonl
from tunedeck.inputs.validate import RunRequest
from tunedeck.service.estimate import CACHE_FILE, Estimator

pytestmark = pytest.mark.e2e


@pytest.fixture
def service(home):
    from tunedeck.service.core import RunService
    from tunedeck.service.store import Store
    from tunedeck.training.tiny import build_tiny_model

    build_tiny_model(home / "models" / "tiny-probe", [t for pair in PAIRS for t in pair])
    home.mkdir(parents=True, exist_ok=True)
    core = RunService(Store(str(home / "t.db")))
    yield core
    core.shutdown()


def _request(tmp_path) -> RunRequest:
    data = write_jsonl(tmp_path / "train.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    return RunRequest(model="tiny-probe", train_data_path=str(data), register_to="main.tests",
                      task_type="INSTRUCTION_FINETUNE", training_duration="3ba", context_length=64)


def test_an_estimate_answers_pending_while_the_probe_measures_and_the_next_one_gets_its_figure(service, home, tmp_path):
    estimator = Estimator(service, probe_wait=0)
    pending = estimator.estimate(_request(tmp_path))
    assert pending["pending"] and not pending["ok"], pending
    assert pending["message"].startswith("measuring how fast this machine trains tiny-probe: a few real training steps")
    assert "ask again" in pending["message"] and pending["problems"][0]["field"] == "model"
    probe = estimator._probe
    assert probe is not None
    # the probe goes on without anyone waiting, and its figure lands in the cache
    wait_for(probe.done.is_set, timeout=300, interval=0.2)
    assert probe.answer["ok"], probe.answer
    entries = json.loads((home / CACHE_FILE).read_text())["entries"]
    assert [e["source"] for e in entries.values()] == ["probe"]

    estimator.probe_wait = 300
    answer = estimator.estimate(_request(tmp_path))
    assert answer["ok"], answer
    assert answer["tokens_per_second"] == probe.answer["probe"]["tokens_per_second"]
    assert answer["throughput_source"] == "probe" and answer["total_steps"] == 3
    assert answer["probe_seconds"] == probe.answer["probe"]["probe_seconds"]  # the pending estimate's probe, said so
    assert "probe took" in answer["message"]
    assert estimator._probe is None  # taken: no second probe was started
    assert len(json.loads((home / CACHE_FILE).read_text())["entries"]) == 1
    cached = estimator.estimate(_request(tmp_path))
    assert cached["ok"] and cached["probe_seconds"] is None and "cached" in cached["message"]


def test_a_probe_past_its_own_timeout_is_stopped_and_named(service, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEDECK_PROBE_TIMEOUT", "1")  # the helper cannot even load the model in 1 s
    estimator = Estimator(service, probe_wait=300)
    answer = estimator.estimate(_request(tmp_path))
    assert not answer["ok"] and not answer.get("pending"), answer
    assert "did not finish within 1 s (TUNEDECK_PROBE_TIMEOUT)" in answer["message"]
    monkeypatch.delenv("TUNEDECK_PROBE_TIMEOUT")
    again = estimator.estimate(_request(tmp_path))  # tried afresh, and measured this time
    assert again["ok"] and again["throughput_source"] == "probe", again
