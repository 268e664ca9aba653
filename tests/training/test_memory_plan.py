"""The worker plans memory before loading weights: refuses a run that cannot fit, with what would."""

from __future__ import annotations

import pytest

from tunedeck.inputs.params import parse_adapter
from tunedeck.training.failures import TrainingFailure

from .conftest import CHATS, events, jsonl_source, make_spec, run_in_process, write_jsonl

pytestmark = pytest.mark.e2e


def test_a_run_that_cannot_fit_is_refused_before_loading_weights(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("TUNEDECK_MEMORY_LIMIT", str(1 << 20))  # a 1 MiB machine
    train = write_jsonl(tmp_path / "chat.jsonl", CHATS)
    reports: list = []
    with pytest.raises(TrainingFailure, match=r"^memory: this run needs ~.* and 1 MiB is available") as failure:
        from tunedeck.training.recipe import run
        from tunedeck.training.report import Reporter

        run(make_spec(tmp_path, tiny_model, jsonl_source(train), task_type="CHAT_COMPLETION"), Reporter(sink=reports.append))
    assert not events(reports, "MODEL_INITIALIZED")  # refused before the weights were loaded
    assert "GiB" in str(failure.value) or "MiB" in str(failure.value)


def test_the_plan_is_reported_and_followed(tmp_path, tiny_model):
    train = write_jsonl(tmp_path / "chat.jsonl", CHATS)
    _, reports = run_in_process(make_spec(
        tmp_path, tiny_model, jsonl_source(train), task_type="CHAT_COMPLETION", training_duration="1ba",
        adapter=parse_adapter("lora"),
    ))
    init = events(reports, "MODEL_INITIALIZED")[0]
    plan = init["data"]["memory"]
    assert 0 < plan["needed_bytes"] < plan["available_bytes"]
    assert plan["activation_checkpointing"] is False  # a tiny model needs none
    assert init["data"]["micro_batch_tokens"] == plan["micro_batch_tokens"]
    assert "Memory: ~" in init["message"]


def _llama_7b_folder(tmp_path):
    import json

    folder = tmp_path / "llama-7b-config-only"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
    }))
    return folder


@pytest.mark.parametrize("gib, adapter, storage", [
    (40, "lora", False),  # float32 base (27 GB) fits in 40 GiB
    (20, "lora", True),   # it does not in 20: held in bf16 (13.5 GB), computed in float32
])
def test_lora_base_is_held_in_bf16_only_when_float32_does_not_fit(tmp_path, monkeypatch, gib, adapter, storage):
    import torch

    from tunedeck.inputs import memory
    from tunedeck.training.memory_plan import fit_run

    monkeypatch.setattr(memory, "available_memory", lambda: gib << 30)
    monkeypatch.setattr(memory, "resident_memory", lambda: 0)
    fit = fit_run(_llama_7b_folder(tmp_path), adapter=parse_adapter(adapter), autocast=False, context_length=512,
                  row_tokens=256, device=torch.device("cpu"), micro_batch_tokens=1024, dense_mask=True)
    assert fit.bf16_storage is storage
    assert fit.plan.needed < fit.plan.available
    assert ("frozen base held in bf16" in fit.describe()) is storage


def test_7b_full_fine_tuning_is_refused_on_24_gib_naming_what_would_fit(tmp_path, monkeypatch):
    import torch

    from tunedeck.inputs import memory
    from tunedeck.training.memory_plan import fit_run

    monkeypatch.setattr(memory, "available_memory", lambda: 22 << 30)
    monkeypatch.setattr(memory, "resident_memory", lambda: 0)
    with pytest.raises(TrainingFailure) as refused:
        fit_run(_llama_7b_folder(tmp_path), adapter=None, autocast=False, context_length=512, row_tokens=256,
                device=torch.device("cpu"), micro_batch_tokens=1024, dense_mask=True)
    message = str(refused.value)
    assert message.startswith("memory: this run needs ~") and "GiB is available" in message
    assert "adapter='lora'" in message


def test_long_rows_switch_activation_checkpointing_on(tmp_path, monkeypatch):
    import torch

    from tunedeck.inputs import memory
    from tunedeck.training.memory_plan import fit_run

    monkeypatch.setattr(memory, "available_memory", lambda: 24 << 30)
    monkeypatch.setattr(memory, "resident_memory", lambda: 0)
    short = fit_run(_llama_7b_folder(tmp_path), adapter=parse_adapter("lora"), autocast=True, context_length=256,
                    row_tokens=256, device=torch.device("cpu"), micro_batch_tokens=256, dense_mask=True)
    long = fit_run(_llama_7b_folder(tmp_path), adapter=parse_adapter("lora"), autocast=True, context_length=2048,
                   row_tokens=2048, device=torch.device("cpu"), micro_batch_tokens=1024, dense_mask=True)
    assert short.plan.activation_checkpointing is False
    assert long.plan.activation_checkpointing is True
