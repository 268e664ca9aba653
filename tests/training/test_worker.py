"""The worker as the service runs it: a subprocess reporting JSON lines on a pipe."""

from __future__ import annotations

import json
import signal
import time

import pytest

from tunedeck.inputs.datasets import check_data

from .conftest import PAIRS, Worker, events, jsonl_source, make_spec, write_jsonl

pytestmark = pytest.mark.e2e


def test_instruction_finetune_memorises_and_registers(tmp_path, tiny_model):
    from mlflow import MlflowClient
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train = write_jsonl(tmp_path / "data" / "train.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    spec = make_spec(
        tmp_path, tiny_model, jsonl_source(train), eval_data=jsonl_source(train),
        eval_prompts=["Say hello."], training_duration="150ba", learning_rate=3e-3, data_prep_cluster_id="0123-abc",
    )
    worker = Worker(spec.run_dir)
    assert worker.wait(120) == 0, worker.log_text()
    reports = worker.reports

    # Events in the contract's order, none of the service's own.
    types = [e["type"] for e in events(reports)]
    assert types[:2] == ["DATA_VALIDATED", "MODEL_INITIALIZED"]
    assert types[-2:] == ["TRAIN_FINISHED", "MODEL_REGISTERED"]
    assert not {"CREATED", "STARTED", "COMPLETED", "FAILED", "STOPPED"} & set(types)
    updates = events(reports, "TRAIN_UPDATED")
    assert updates[0]["data"]["step"] == 1 and updates[-1]["data"]["step"] == 150
    assert updates[-1]["data"]["progress"] == 100.0
    assert "[ba 150/150]" in updates[-1]["message"] and "tok/s" in updates[-1]["message"]
    metrics = [r for r in reports if r["kind"] == "metrics" and "train/loss" in r["values"]]
    assert [m["step"] for m in metrics] == list(range(1, 151))
    assert any("eval/loss" in r["values"] for r in reports if r["kind"] == "metrics")
    generations = events(reports, "EVAL_GENERATIONS")
    assert len(generations) == 5 and generations[-1]["data"]["generations"][0]["prompt"] == "Say hello."
    assert events(reports, "EVAL_COMPLETED")[-1]["data"]["eval_loss"] < 0.1
    run_fields = {k: v for r in reports if r["kind"] == "run" for k, v in r["fields"].items()}
    assert run_fields["registered_model_version"] == 1 and run_fields["registered_model_name"] == "main.tests.tiny"
    assert run_fields["mlflow_run_id"] and run_fields["estimated_end_time"].endswith("+00:00")

    # Checkpoints: five evenly spaced, full HF folders, the "symlink" names the last one.
    checkpoints = spec.run_dir + "/checkpoints"
    saved = [e["data"]["checkpoint"] for e in events(reports, "CHECKPOINT_SAVED")]
    assert len(saved) == 5 and saved[-1] == "ep150-ba150"
    assert open(f"{checkpoints}/latest-sharded-rank0.symlink").read().strip() == "ep150-ba150"
    info = json.loads(open(f"{checkpoints}/ep150-ba150/checkpoint.json").read())
    assert (info["epoch"], info["batch"]) == (150, 150) and info["created_at"]

    # The exported model reproduces every response greedily.
    model = AutoModelForCausalLM.from_pretrained(spec.run_dir + "/model")
    tokenizer = AutoTokenizer.from_pretrained(spec.run_dir + "/model")
    for prompt, response in PAIRS:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        out = model.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True) == response

    # MLflow: falling loss history, params, the generations table, the model artifacts, version 1.
    client = MlflowClient(spec.mlflow_tracking_uri, registry_uri=spec.mlflow_tracking_uri)
    run = client.get_run(run_fields["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["training_duration"] == "150ba"
    params = run.data.params  # every create() argument reaches the run's params, as used
    assert (params["register_to"], params["experiment_path"]) == ("main.tests.tiny", "/Users/tester/test-run")
    assert params["eval_prompts"] == '["Say hello."]' and params["validate_inputs"] == "True"
    assert params["data_prep_cluster_id"] == "0123-abc"
    assert params["learning_rate"] == "0.003" and params["model"] and params["train_data_path"] == str(train)
    history = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)]
    assert len(history) == 150 and history[-1] < history[0] / 20
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "eval_generations.json"} <= artifacts
    assert "model/model.safetensors" in {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    version = client.get_model_version("main.tests.tiny", "1")
    assert version.run_id == run.info.run_id and version.source.endswith("/model")
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "/Users/tester/test-run"
    assert experiment.artifact_location.startswith((tmp_path / "mlartifacts").as_uri())


def test_bad_data_without_validation_fails_naming_file_and_line(tmp_path, tiny_model):
    train = tmp_path / "train.jsonl"
    train.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": "b"\n')
    spec = make_spec(tmp_path, tiny_model, jsonl_source(train), validate_inputs=False)
    worker = Worker(spec.run_dir)
    assert worker.wait(60) == 1
    failures = [r for r in worker.reports if r["kind"] == "failure"]
    assert len(failures) == 1
    expected = str(check_data(spec.train_data, "INSTRUCTION_FINETUNE", "train_data_path")[0])
    assert failures[0]["reason"] == expected
    assert f"{train}, line 2" in expected and "train_data_path" in expected
    assert not events(worker.reports, "MODEL_INITIALIZED")


def test_context_length_above_the_model_maximum_fails(tmp_path, tiny_model):
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a", "response": "b"}])
    spec = make_spec(tmp_path, tiny_model, jsonl_source(train), context_length=4096)
    worker = Worker(spec.run_dir)
    assert worker.wait(60) == 1
    (failure,) = [r for r in worker.reports if r["kind"] == "failure"]
    assert "context_length" in failure["reason"] and "4,096" in failure["reason"] and "1,024" in failure["reason"]


def test_sigterm_stops_quickly_without_a_new_checkpoint(tmp_path, tiny_model):
    from mlflow import MlflowClient

    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    spec = make_spec(tmp_path, tiny_model, jsonl_source(train), training_duration="100000ba")
    worker = Worker(spec.run_dir)
    assert worker.wait_for(lambda r: r.get("type") == "TRAIN_UPDATED", timeout=60), worker.log_text()
    time.sleep(0.3)
    worker.process.send_signal(signal.SIGTERM)
    # stops at the next safe point; how fast is measured by benchmarks/faults.py, not asserted here
    assert worker.wait(30) == 143, worker.log_text()
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not [r for r in worker.reports if r["kind"] == "failure"]
    run_id = next(r["fields"]["mlflow_run_id"] for r in worker.reports if r["kind"] == "run" and "mlflow_run_id" in r["fields"])
    assert MlflowClient(spec.mlflow_tracking_uri).get_run(run_id).info.status == "KILLED"
