"""Exact resume: a run stopped at step k and resumed from its latest resume point trains steps k+1..N
exactly as a run that never stopped (same losses, same final weights), in full fine-tuning and LoRA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tunedeck.inputs.params import parse_adapter
from tunedeck.training.checkpoint import RESUME, TRAINER_STATE, latest_resume_point, resume_info
from tunedeck.training.failures import StopRequested, StopSignal, TrainingFailure

from .conftest import PAIRS, events, jsonl_source, make_spec, run_in_process, write_jsonl

pytestmark = pytest.mark.e2e

# 24 short examples, two per row of 32 tokens, 2 rows a step: 6 steps an epoch, checkpoints at 6, 12 and 18.
ROWS = [{"prompt": f"{p} ({i})", "response": r} for i in range(4) for p, r in PAIRS]
SETTINGS = dict(training_duration="3ep", context_length=32, batch_tokens=64, learning_rate=3e-3, precision="fp32")
LORA = dict(SETTINGS, adapter=parse_adapter({"rank": 4, "dropout": 0.0}), learning_rate=1e-2)


def run_stopped_at(spec, step: int) -> list[dict[str, Any]]:
    """Run ``spec`` and stop it when the metrics of ``step`` are reported (as SIGTERM would)."""
    from tunedeck.training.recipe import run
    from tunedeck.training.report import Reporter

    stop, reports = StopSignal(), []

    def sink(report: dict[str, Any]) -> None:
        reports.append(report)
        if report["kind"] == "metrics" and report["step"] == step:
            stop.requested = True

    with pytest.raises(StopRequested):
        run(spec, Reporter(sink=sink), stop)
    return reports


def train_losses(reports: list[dict[str, Any]]) -> dict[int, float]:
    return {r["step"]: r["values"]["train/loss"] for r in reports if r["kind"] == "metrics" and "train/loss" in r["values"]}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def assert_resume_is_exact(tmp_path: Path, tiny_model: Path, settings: dict[str, Any], stop_at: int, every: float | None, expect: int) -> tuple:
    train = jsonl_source(write_jsonl(tmp_path / "train.jsonl", ROWS))
    whole, whole_reports = run_in_process(make_spec(tmp_path / "whole", tiny_model, train, resume_every_seconds=None, **settings))
    assert whole.losses == [train_losses(whole_reports)[s] for s in range(1, len(whole.losses) + 1)]
    assert len(whole.losses) == 18

    spec = make_spec(tmp_path / "cut", tiny_model, train, resume_every_seconds=every, **settings)
    first = run_stopped_at(spec, stop_at)
    point = latest_resume_point(spec.run_dir)
    assert point is not None
    done = resume_info(point)["step"]
    assert done == expect
    run_id = next(r["fields"]["mlflow_run_id"] for r in first if r["kind"] == "run" and "mlflow_run_id" in r["fields"])

    spec.resume_from, spec.resume_mlflow_run_id = str(point), run_id
    resumed, reports = run_in_process(spec)
    again = train_losses(reports)
    assert sorted(again) == list(range(done + 1, 19))  # steps <= the saved one are not trained again
    for step in range(done + 1, 19):
        assert again[step] == pytest.approx(whole.losses[step - 1], abs=1e-5), step
    assert resumed.losses == pytest.approx(whole.losses, abs=1e-5)  # the saved losses come back too
    (event,) = events(reports, "TRAIN_RESUMED")
    assert event["data"]["step"] == done and f"at step {done} of 18" in event["message"]
    assert [c.step for c in resumed.checkpoints] == [6, 12, 18]  # those saved before the stop stay listed
    assert resumed.mlflow_run_id == run_id  # one MLflow run for the whole training run
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=spec.mlflow_tracking_uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert {m.step for m in client.get_metric_history(run_id, "train/loss")} == set(range(1, 19))
    # Only the last resume point keeps a trainer state, and none reaches the exported model.
    assert latest_resume_point(spec.run_dir) == resumed.checkpoints[-1].path
    assert not (resumed.checkpoints[0].path / TRAINER_STATE).exists()
    assert not (Path(spec.run_dir) / RESUME).exists()
    assert not list(resumed.model_dir.rglob(TRAINER_STATE))
    return whole, resumed


def test_full_fine_tuning_resumes_from_a_snapshot_exactly(tmp_path, tiny_model):
    """Stopped in epoch 2, after checkpoint ep2-ba12: snapshots every step give the resume point (step 13)."""
    whole, resumed = assert_resume_is_exact(tmp_path, tiny_model, SETTINGS, stop_at=14, every=1e-9, expect=13)
    a, b = weights(whole.model_dir), weights(resumed.model_dir)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_lora_resumes_from_a_checkpoint_exactly(tmp_path, tiny_model):
    """No snapshots: the resume point is checkpoint ep2-ba12, an adapter folder with the adapter's optimizer state."""
    whole, resumed = assert_resume_is_exact(tmp_path, tiny_model, LORA, stop_at=14, every=None, expect=12)
    point_adapter = json.loads((resumed.checkpoints[0].path / "checkpoint.json").read_text())["adapter"]
    assert point_adapter["rank"] == 4
    a, b = weights(whole.model_dir), weights(resumed.model_dir)  # the merged models
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_a_snapshot_is_replaced_not_listed_and_holds_the_state(tmp_path, tiny_model):
    train = jsonl_source(write_jsonl(tmp_path / "train.jsonl", ROWS))
    spec = make_spec(tmp_path, tiny_model, train, resume_every_seconds=1e-9, **SETTINGS)
    reports = run_stopped_at(spec, 5)
    run_dir = Path(spec.run_dir)
    snapshot = run_dir / RESUME
    assert latest_resume_point(run_dir) == snapshot
    info = json.loads((snapshot / "resume.json").read_text())
    assert info["step"] == 4  # the step whose metrics tripped the stop wrote nothing new
    assert info["fingerprint"]["total_steps"] == 18 and info["fingerprint"]["packed_rows"] == 12
    state = torch.load(snapshot / TRAINER_STATE, weights_only=True)
    assert state["step"] == 4 and len(state["losses"]) == 4 and state["optimizer"]["state"]
    assert state["scheduler"]["last_epoch"] == 4
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".resume")]
    assert not (run_dir / "checkpoints").exists()  # a snapshot is no checkpoint
    assert not events(reports, "CHECKPOINT_SAVED")


def test_resume_with_other_data_or_settings_is_refused(tmp_path, tiny_model):
    train_file = write_jsonl(tmp_path / "train.jsonl", ROWS)
    spec = make_spec(tmp_path, tiny_model, jsonl_source(train_file), resume_every_seconds=1e-9, **SETTINGS)
    run_stopped_at(spec, 3)
    spec.resume_from = str(latest_resume_point(spec.run_dir))

    write_jsonl(train_file, [*ROWS[:-1], {"prompt": ROWS[-1]["prompt"], "response": "Something else."}])
    with pytest.raises(TrainingFailure, match=r"resume_from: .* other data or settings \(.*data_sha256 .* then, .* now\)"):
        run_in_process(spec)
    write_jsonl(train_file, ROWS[:-3])
    with pytest.raises(TrainingFailure, match=r"total_steps 18 then, 15 now; .*examples 24 then, 21 now"):
        run_in_process(spec)

    write_jsonl(train_file, ROWS)
    spec.training_duration = "4ep"
    with pytest.raises(TrainingFailure, match=r"total_steps 18 then, 24 now"):
        run_in_process(spec)
    spec.training_duration, spec.learning_rate = "3ep", 1e-3
    with pytest.raises(TrainingFailure, match=r"learning_rate 0.003 then, 0.001 now"):
        run_in_process(spec)
    spec.learning_rate, spec.adapter = 3e-3, parse_adapter({"rank": 4})
    with pytest.raises(TrainingFailure, match=r"holds full weights but this run trains a LoRA adapter"):
        run_in_process(spec)


def test_resume_from_a_folder_without_trainer_state_is_refused(tmp_path, tiny_model):
    train = jsonl_source(write_jsonl(tmp_path / "train.jsonl", ROWS))
    spec = make_spec(tmp_path, tiny_model, train, resume_from=str(tiny_model), **SETTINGS)
    with pytest.raises(TrainingFailure, match=r"resume_from: .* is not a resume point \(no trainer_state.pt"):
        run_in_process(spec)


def test_each_epochs_rows_are_the_same_in_every_process(tmp_path, tiny_tokenizer):
    """What resume relies on instead of saving a data position: step N always trains on the same rows."""
    from tunedeck.training.data import make_split, tokenize_source

    source = jsonl_source(write_jsonl(tmp_path / "train.jsonl", ROWS))

    def rows(epoch: int) -> list[list[list[int]]]:  # a fresh read, tokenization and packing each time
        split = make_split(tokenize_source(source, "INSTRUCTION_FINETUNE", "train_data_path", tiny_tokenizer, 64),
                           "train_data_path", 64, 128)
        return [[e.input_ids for e in row] for row in split.rows(epoch)]

    assert rows(0) == rows(0) and rows(3) == rows(3)
    assert rows(0) != rows(1)  # each epoch is shuffled differently
