"""A stop request (what SIGTERM sets) ends every long phase cleanly: a checkpoint being saved is finished,
eval loss, generation, export and registration stop; nothing is registered and the MLflow run is KILLED."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from tunedeck.training.failures import StopRequested, StopSignal

from .conftest import PAIRS, events, jsonl_source, make_spec, write_jsonl

pytestmark = pytest.mark.e2e

# One step an epoch; "2ba" checkpoints at steps 1 and 2, each with eval loss and one generation.
ROWS = [{"prompt": p, "response": r} for p, r in PAIRS]
EVAL_ROWS = [{"prompt": f"{p} ({i})", "response": r} for i in range(12) for p, r in PAIRS]  # 2+ micro-batches


def spec_for(tmp_path: Path, tiny_model: Path, **overrides: Any):
    train = jsonl_source(write_jsonl(tmp_path / "train.jsonl", ROWS))
    evals = jsonl_source(write_jsonl(tmp_path / "eval.jsonl", EVAL_ROWS))
    settings = dict(training_duration="2ba", context_length=32, precision="fp32", eval_data=evals, eval_prompts=["Say hello."])
    return make_spec(tmp_path, tiny_model, train, **{**settings, **overrides})


def run_stopped(spec, stop: StopSignal, trip: Callable[[dict[str, Any]], bool] = lambda report: False) -> list[dict[str, Any]]:
    """Run ``spec`` in-process; the stop is tripped when ``trip`` says so of a report (or by the test's patches)."""
    from tunedeck.training.recipe import run
    from tunedeck.training.report import Reporter

    reports: list[dict[str, Any]] = []

    def sink(report: dict[str, Any]) -> None:
        reports.append(report)
        if trip(report):
            stop.requested = True

    with pytest.raises(StopRequested):
        run(spec, Reporter(sink=sink), stop)
    return reports


def assert_killed_and_nothing_registered(spec, reports: list[dict[str, Any]]) -> None:
    from mlflow import MlflowClient

    run_id = next(r["fields"]["mlflow_run_id"] for r in reports if r["kind"] == "run" and "mlflow_run_id" in r["fields"])
    client = MlflowClient(tracking_uri=spec.mlflow_tracking_uri, registry_uri=spec.mlflow_tracking_uri)
    assert client.get_run(run_id).info.status == "KILLED"
    assert client.search_registered_models() == []
    assert not events(reports, "MODEL_REGISTERED")
    assert not [r for r in reports if r["kind"] == "run" and "registered_model_version" in r["fields"]]


def test_a_stop_during_a_checkpoint_save_finishes_the_save_then_stops(tmp_path, tiny_model, monkeypatch):
    from tunedeck.training import checkpoint

    stop = StopSignal()
    real_save = checkpoint.save_hf

    def save_hf(model, tokenizer, folder):
        stop.requested = True  # SIGTERM mid-save: inside safe points it only sets the flag
        real_save(model, tokenizer, folder)

    monkeypatch.setattr(checkpoint, "save_hf", save_hf)
    spec = spec_for(tmp_path, tiny_model)
    reports = run_stopped(spec, stop)
    (saved,) = events(reports, "CHECKPOINT_SAVED")
    folder = Path(saved["data"]["path"])
    assert {"checkpoint.json", "trainer_state.pt", "model.safetensors", "config.json"} <= {p.name for p in folder.iterdir()}
    assert (folder.parent / "latest-sharded-rank0.symlink").read_text().strip() == folder.name
    assert not [p for p in folder.parent.iterdir() if p.name.endswith(".tmp")]
    assert not events(reports, "EVAL_COMPLETED") and not events(reports, "EVAL_GENERATIONS")
    assert_killed_and_nothing_registered(spec, reports)


def test_a_stop_during_eval_loss_ends_it_between_micro_batches(tmp_path, tiny_model, monkeypatch):
    from tunedeck.training import evaluate

    stop, calls = StopSignal(), []
    real_loss = evaluate.loss_sum

    def loss_sum(model, batch):
        calls.append(batch.tokens)
        stop.requested = True
        return real_loss(model, batch)

    monkeypatch.setattr(evaluate, "loss_sum", loss_sum)
    spec = spec_for(tmp_path, tiny_model)
    reports = run_stopped(spec, stop)
    assert len(calls) == 1  # the eval set has more micro-batches: the next one never ran
    assert events(reports, "CHECKPOINT_SAVED") and not events(reports, "EVAL_COMPLETED")
    assert not [r for r in reports if r["kind"] == "metrics" and "eval/loss" in r["values"]]
    assert_killed_and_nothing_registered(spec, reports)


def test_a_stop_between_eval_and_generation(tmp_path, tiny_model):
    stop = StopSignal()
    spec = spec_for(tmp_path, tiny_model)
    reports = run_stopped(spec, stop, trip=lambda r: r["kind"] == "event" and r["type"] == "EVAL_COMPLETED")
    assert len(events(reports, "EVAL_COMPLETED")) == 1 and not events(reports, "EVAL_GENERATIONS")
    assert_killed_and_nothing_registered(spec, reports)


def test_a_stop_during_generation_cuts_it_short(tmp_path, tiny_model, monkeypatch):
    from transformers import AutoTokenizer, LogitsProcessor, LogitsProcessorList

    from tunedeck.training import evaluate

    stop, tokens = StopSignal(), []
    eos = AutoTokenizer.from_pretrained(tiny_model).eos_token_id

    class TripAfterThreeTokens(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            tokens.append(1)
            if len(tokens) == 3:
                stop.requested = True
            scores[:, eos] = -float("inf")  # never ends by itself: only the stop can cut it short
            return scores

    monkeypatch.setitem(evaluate.GENERATION, "logits_processor", LogitsProcessorList([TripAfterThreeTokens()]))
    spec = spec_for(tmp_path, tiny_model, eval_data=None)
    reports = run_stopped(spec, stop)
    assert 3 <= len(tokens) <= 4  # not the 100 new tokens asked for
    assert events(reports, "CHECKPOINT_SAVED") and not events(reports, "EVAL_GENERATIONS")
    assert_killed_and_nothing_registered(spec, reports)


def test_a_stop_after_training_never_exports(tmp_path, tiny_model):
    stop = StopSignal()
    spec = spec_for(tmp_path, tiny_model, eval_data=None, eval_prompts=[])
    reports = run_stopped(spec, stop, trip=lambda r: r["kind"] == "event" and r["type"] == "TRAIN_FINISHED")
    assert not (Path(spec.run_dir) / "model").exists()
    assert_killed_and_nothing_registered(spec, reports)


def test_a_stop_just_before_registration_registers_nothing(tmp_path, tiny_model, monkeypatch):
    from tunedeck.training.tracking import Tracker

    stop = StopSignal()
    real_upload = Tracker.log_model_folder

    def log_model_folder(self, folder):
        source = real_upload(self, folder)
        stop.requested = True  # the upload is done; registration is next
        return source

    monkeypatch.setattr(Tracker, "log_model_folder", log_model_folder)
    spec = spec_for(tmp_path, tiny_model, eval_data=None, eval_prompts=[])
    reports = run_stopped(spec, stop)
    assert (Path(spec.run_dir) / "model").is_dir() and events(reports, "TRAIN_FINISHED")
    assert_killed_and_nothing_registered(spec, reports)
