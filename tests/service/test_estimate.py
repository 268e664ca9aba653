"""Before Start, an estimate: tokens per epoch and steps exactly as the worker then reports them, a time
from a measured throughput, peak memory; after the run, estimate vs actual, and the run's measured
throughput replaces the probe's in $TUNEDECK_HOME/estimates.json.

A real embedded service and a tiny model trained for real (~30 s here); no timed assertions.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import PAIRS, write_jsonl
from tunedeck.service.estimate import CACHE_FILE, EstimateCache, _learn, cache_key, hardware

pytestmark = pytest.mark.e2e


def _chat(path):
    return write_jsonl(path, [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]}
                              for p, r in PAIRS])


def test_estimate_matches_what_the_worker_reports_and_the_run_teaches_the_cache(service_home, tmp_path):
    from tunedeck import foundation_model as fm
    from tunedeck.client.http import get_client
    from tunedeck.training.tiny import build_tiny_model

    build_tiny_model(service_home / "models" / "tiny-llama", [t for pair in PAIRS for t in pair])
    params = {"model": "tiny-llama", "train_data_path": str(_chat(tmp_path / "chat.jsonl")), "register_to": "main.tests",
              "training_duration": "3ba", "learning_rate": 3e-3, "context_length": 64,
              "eval_data_path": str(_chat(tmp_path / "eval.jsonl")), "eval_prompts": [PAIRS[0][0]]}
    client = get_client()

    first = client.estimate(params)
    assert first["ok"], first
    assert first["throughput_source"] == "probe" and first["probe_seconds"] > 0 and first["tokens_per_second"] > 0
    assert first["seconds"] > first["train_seconds"] > 0
    assert first["peak_memory_bytes"] > 0
    assert f"~{first['tokens_per_epoch']:,} tokens/epoch, 3 steps, ~" in first["message"]
    assert "peak ~" in first["message"] and "tok/s" in first["message"]
    cache = json.loads((service_home / CACHE_FILE).read_text())
    assert cache["entries"][first["key"]]["source"] == "probe"

    again = client.estimate(params)  # cached: no second probe
    assert again["probe_seconds"] is None and again["tokens_per_second"] == first["tokens_per_second"]
    assert again["total_steps"] == first["total_steps"] and again["tokens_per_epoch"] == first["tokens_per_epoch"]

    run = fm.create(**params)
    client.record_estimate(run.name, first)
    events = fm.get_events(run, follow=True)
    assert events[-1].type == "COMPLETED", events[-1].message
    reported = {e.type: e.data for e in events}
    assert first["tokens_per_epoch"] == reported["DATA_VALIDATED"]["tokens"]
    assert first["total_steps"] == reported["MODEL_INITIALIZED"]["total_steps"] == 3
    assert first["steps_per_epoch"] == reported["MODEL_INITIALIZED"]["steps_per_epoch"]
    assert first["micro_batch_tokens"] == reported["MODEL_INITIALIZED"]["micro_batch_tokens"]
    assert first["checkpoints"] == sum(1 for e in events if e.type == "CHECKPOINT_SAVED")

    record = client.run_estimate(run.name)
    assert record["estimate"]["seconds"] == first["seconds"]
    took = fm.get(run.name).duration_seconds
    assert record["actual"]["seconds"] == pytest.approx(took, abs=0.1)
    assert record["ratio"] == pytest.approx(record["actual"]["seconds"] / first["seconds"], rel=1e-3)

    measured = reported["TRAIN_FINISHED"]["tokens_per_second"]
    entry = json.loads((service_home / CACHE_FILE).read_text())["entries"][first["key"]]
    assert entry["tokens_per_second"] == measured and entry["source"] == f"run {run.name}"
    assert entry["other_checkpoints"] == first["checkpoints"] and entry["other_seconds"] > 0

    learned = client.estimate(params)  # the next estimate uses the run's figures
    assert learned["tokens_per_second"] == measured and learned["throughput_source"] == f"run {run.name}"
    assert learned["probe_seconds"] is None and f"by run {run.name}" in learned["message"]


def test_an_estimate_of_a_bad_request_names_the_problem_and_probes_nothing(service_home, tmp_path):
    from tunedeck.client.http import get_client

    answer = get_client().estimate({"model": "no-such-model", "train_data_path": str(_chat(tmp_path / "c.jsonl")),
                                    "register_to": "main.tests"})
    assert answer["ok"] is False and answer["problems"][0]["field"] == "model"
    assert not (service_home / CACHE_FILE).exists()


def test_a_run_teaches_throughput_and_the_time_outside_training(tmp_path):
    cache = EstimateCache(tmp_path / CACHE_FILE)
    key = cache_key("m", "cpu", "float32", "full")
    assert key.startswith("m | cpu (") and hardware("cuda (NVIDIA H100)") == "cuda (NVIDIA H100)"
    actual = {"key": key, "seconds": 30.0, "tokens_per_second": 100.0, "tokens_per_epoch": 500, "total_steps": 4,
              "steps_per_epoch": 2, "checkpoints": 2, "resumed": False}
    cache.update(lambda d: _learn(d, actual, "run-a"))
    entry = cache.entry(key)
    assert entry == {**entry, "tokens_per_second": 100.0, "other_seconds": 20.0, "other_checkpoints": 2, "source": "run run-a"}
    cache.update(lambda d: _learn(d, {**actual, "tokens_per_second": 50.0, "seconds": 99.0, "resumed": True}, "run-b"))
    entry = cache.entry(key)
    assert entry["tokens_per_second"] == 50.0 and entry["other_seconds"] == 20.0  # a resumed run's time teaches nothing
    assert cache.read()["learned"] == ["run-a", "run-b"]
