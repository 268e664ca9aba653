"""The whole path through the public API: create -> service -> worker -> MLflow -> registry."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tunedeck import InvalidInputError, RunStatus
from tunedeck import foundation_model as fm

from tests.helpers import PAIRS, wait_for, write_jsonl

pytestmark = pytest.mark.e2e


def test_instruction_finetune_learns_the_pairs_and_registers_the_model(e2e_home, tmp_path):
    import mlflow
    import torch
    from mlflow import MlflowClient
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": p + "\n", "response": r} for p, r in PAIRS])
    evaluation = write_jsonl(tmp_path / "eval.jsonl", [{"prompt": p + "\n", "response": r} for p, r in PAIRS[:2]])
    run = fm.create(
        model="tiny-llama", train_data_path=str(train), eval_data_path=str(evaluation),
        register_to="main.tests", task_type="INSTRUCTION_FINETUNE", training_duration="150ba",
        learning_rate=3e-3, context_length=64, eval_prompts=["What is the capital of Zorbania?\n"],
    )
    assert run.status in (RunStatus.PENDING, RunStatus.QUEUED)
    events = fm.get_events(run, follow=True)
    types = [e.type for e in events]
    assert types[-1] == "COMPLETED", events[-1].message
    for expected in ("CREATED", "STARTED", "DATA_VALIDATED", "MODEL_INITIALIZED", "TRAIN_UPDATED",
                     "CHECKPOINT_SAVED", "EVAL_COMPLETED", "EVAL_GENERATIONS", "TRAIN_FINISHED", "MODEL_REGISTERED"):
        assert expected in types
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))

    run = fm.get(run.name)
    assert run.status is RunStatus.COMPLETED and run.progress == 100
    assert run.registered_model_name == f"main.tests.{run.name}" and run.registered_model_version == 1

    # The exported Hugging Face model reproduces what it was taught, greedily.
    model = AutoModelForCausalLM.from_pretrained(os.path.join(run.run_dir, "model"))
    tok = AutoTokenizer.from_pretrained(os.path.join(run.run_dir, "model"))
    for prompt, response in PAIRS:
        ids = tok(prompt + "\n", return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
        assert tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip() == response

    # MLflow: loss falls over the run; the registry holds the version.
    client = MlflowClient(tracking_uri=f"sqlite:///{e2e_home / 'mlflow.db'}", registry_uri=f"sqlite:///{e2e_home / 'mlflow.db'}")
    history = client.get_metric_history(run.mlflow_run_id, "train/loss")
    assert len(history) >= 100
    first = sum(m.value for m in history[:5]) / 5
    last = sum(m.value for m in history[-5:]) / 5
    assert last < first / 4
    mv = client.get_model_version(run.registered_model_name, "1")
    assert mv.run_id == run.mlflow_run_id
    assert client.get_experiment(run.mlflow_experiment_id).name == run.experiment_path
    mlflow.set_tracking_uri(f"sqlite:///{e2e_home / 'mlflow.db'}")

    # Checkpoints: ep#-ba# folders plus the latest symlink; continue from them.
    checkpoints = fm.get_checkpoints(run)
    assert checkpoints and checkpoints[-1].is_latest and checkpoints[-1].batch == 150
    assert all(c.name == f"ep{c.epoch}-ba{c.batch}" for c in checkpoints)
    latest = os.path.join(run.run_dir, "checkpoints", "latest-sharded-rank0.symlink")
    follow_up = fm.create(model="tiny-llama", train_data_path=str(train), register_to="main.tests.follow-up",
                          task_type="INSTRUCTION_FINETUNE", training_duration="3ba", custom_weights_path=latest,
                          context_length=64, learning_rate=1e-5)
    events = fm.get_events(follow_up, follow=True)
    assert events[-1].type == "COMPLETED", events[-1].message
    first_loss = next(e.data["loss"] for e in events if e.type == "TRAIN_UPDATED")
    assert first_loss < history[0].value / 4  # it started from the trained weights, not from scratch
    assert fm.get(follow_up).registered_model_name == "main.tests.follow-up"
    assert fm.list().to_pandas()["name"].tolist()[:2] == [follow_up.name, run.name]


def test_chat_and_continued_pretraining_train_end_to_end(e2e_home, tmp_path):
    chat = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}, {"role": "assistant", "content": r}]}
        for p, r in PAIRS
    ])
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, (p, r) in enumerate(PAIRS):
        (docs / f"doc{i}.txt").write_text(f"{p} {r}\n" * 3)
    runs = [
        fm.create(model="tiny-llama", train_data_path=str(chat), register_to="main.tests", training_duration="40ba",
                  learning_rate=3e-3, context_length=64),
        fm.create(model="tiny-llama", train_data_path=str(docs), register_to="main.tests", task_type="CONTINUED_PRETRAIN",
                  training_duration="40ba", learning_rate=3e-3, context_length=64),
    ]
    assert fm.get(runs[1]).status is RunStatus.QUEUED  # one run trains at a time on this CPU
    for run in runs:
        events = fm.get_events(run, follow=True)
        assert events[-1].type == "COMPLETED", events[-1].message
        losses = [e.data["loss"] for e in events if e.type == "TRAIN_UPDATED"]
        assert losses[-1] < losses[0] * 0.7


def test_cancel_stops_within_five_seconds_and_the_service_keeps_serving(e2e_home, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    run = fm.create(model="tiny-llama", train_data_path=str(train), register_to="main.tests",
                    task_type="INSTRUCTION_FINETUNE", training_duration="1000000ba", context_length=64)
    wait_for(lambda: any(e.type == "TRAIN_UPDATED" for e in fm.get_events(run)), timeout=120)
    started = time.monotonic()
    assert fm.cancel(run) == 1
    wait_for(lambda: fm.get(run).status is RunStatus.STOPPED, timeout=10, interval=0.05)
    assert time.monotonic() - started < 5.0
    assert fm.get_events(run)[-1].type == "STOPPED"
    assert run.name in [r.name for r in fm.list()]
    fm.delete(run)
    assert run.name not in [r.name for r in fm.list()]


def test_a_worker_killed_every_time_is_resumed_twice_then_fails_with_its_reason(e2e_home, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    run = fm.create(model="tiny-llama", train_data_path=str(train), register_to="main.tests",
                    task_type="INSTRUCTION_FINETUNE", training_duration="100000ba", context_length=64)
    killed: set[int] = set()
    for _ in range(3):  # the first worker and both autoresumes (TUNEDECK_AUTORESUME defaults to 2)
        started = wait_for(lambda: next((e for e in fm.get_events(run) if e.type == "STARTED" and e.data["pid"] not in killed), None))
        wait_for(lambda: fm.get(run).status is RunStatus.RUNNING)
        os.kill(started.data["pid"], signal.SIGKILL)  # as the kernel's OOM killer would
        killed.add(started.data["pid"])
    wait_for(lambda: fm.get(run).status.is_terminal(), timeout=30)
    run = fm.get(run)
    assert run.status is RunStatus.FAILED
    events = fm.get_events(run)
    assert "SIGKILL" in events[-1].message and "after 2 resume(s)" in events[-1].message
    assert ["attempt 1 of 2" in e.message for e in events if e.data.get("autoresume")] == [True, False]


def test_corrupt_weights_fail_the_run_with_the_loading_error(e2e_home, tmp_path):
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(e2e_home / "models" / "tiny-llama", broken)
    (broken / "model.safetensors").write_bytes(b"this is not a safetensors file")
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    run = fm.create(model=str(broken), train_data_path=str(train), register_to="main.tests",
                    task_type="INSTRUCTION_FINETUNE", training_duration="2ba")
    events = fm.get_events(run, follow=True)
    assert events[-1].type == "FAILED"
    assert "safetensors" in events[-1].message.lower() or "model" in events[-1].message.lower()


def test_without_validation_bad_data_fails_the_run_naming_file_and_line(e2e_home, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n')
    with pytest.raises(InvalidInputError) as err:
        fm.create(model="tiny-llama", train_data_path=str(bad), register_to="main.tests", task_type="INSTRUCTION_FINETUNE")
    assert err.value.problems[0].line == 2 and err.value.problems[0].file == str(bad)
    run = fm.create(model="tiny-llama", train_data_path=str(bad), register_to="main.tests",
                    task_type="INSTRUCTION_FINETUNE", validate_inputs=False)
    events = fm.get_events(run, follow=True)
    assert events[-1].type == "FAILED"
    assert str(bad) in events[-1].message and "line 2" in events[-1].message and "response" in events[-1].message
