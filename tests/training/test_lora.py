"""LoRA adapters in the recipe: they learn, checkpoint small, continue, and export a merged model."""

from __future__ import annotations

import json

import pytest
import torch

from tunedeck.inputs.params import parse_adapter
from tunedeck.training.failures import TrainingFailure

from .conftest import CHATS, events, jsonl_source, make_spec, run_in_process, write_jsonl

pytestmark = pytest.mark.e2e

ALL_LINEAR = parse_adapter({"rank": 16, "dropout": 0.0})  # the default layers: every linear one


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("lora")
    train = write_jsonl(tmp / "chat.jsonl", CHATS)
    spec = make_spec(
        tmp, tiny_model, jsonl_source(train), task_type="CHAT_COMPLETION", training_duration="60ba",
        learning_rate=1e-2, adapter=ALL_LINEAR, eval_data=jsonl_source(train), eval_prompts=["Say hello."],
        precision="fp32",
    )
    result, reports = run_in_process(spec)
    return spec, result, reports


def test_lora_run_learns_and_registers_a_merged_model(lora_run, tiny_model):
    """On a random tiny model (frozen random embeddings and head) LoRA learns slowly; a bare PEFT loop
    does the same (6.27 -> 5.00 in 60 steps at 1e-2 here). That the taught answers come back is shown
    on the real SmolLM2 (tests/e2e/test_lora_smollm2.py)."""
    from transformers import AutoModelForCausalLM

    spec, result, reports = lora_run
    assert result.losses[-1] < 0.85 * result.losses[0]
    init = events(reports, "MODEL_INITIALIZED")[0]
    assert init["data"]["adapter"]["rank"] == 16
    assert 0 < init["data"]["trainable_parameters"] < init["data"]["parameters"] / 2
    assert "LoRA r=16" in init["message"]
    evals = [e["data"]["eval_loss"] for e in events(reports, "EVAL_COMPLETED")]
    assert len(evals) == 5 and evals[-1] < evals[0] - 0.2 and evals[-1] < 0.85 * result.losses[0]
    assert len(events(reports, "EVAL_GENERATIONS")) == 5
    # The registered folder is plain transformers: the adapter is merged in, no PEFT involved.
    assert not (result.model_dir / "adapter_config.json").exists()
    assert (result.model_dir / "adapter" / "adapter_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert not hasattr(model, "peft_config")
    # ... it differs from the base, which is untouched on disk.
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = torch.tensor([[1, 5, 9, 33, 70, 2, 8, 100, 41]])
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, base(input_ids=ids).logits, atol=1e-2)


def test_lora_checkpoints_hold_only_the_adapter_and_name_their_base(lora_run, tiny_model):
    spec, result, _ = lora_run
    for saved in result.checkpoints:
        files = {p.name for p in saved.path.iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files
        assert "model.safetensors" not in files
        adapter_config = json.loads((saved.path / "adapter_config.json").read_text())
        assert adapter_config["base_model_name_or_path"] == str(tiny_model)
        assert json.loads((saved.path / "checkpoint.json").read_text())["adapter"]["rank"] == 16
    adapter_bytes = (result.checkpoints[-1].path / "adapter_model.safetensors").stat().st_size
    model_bytes = (result.model_dir / "model.safetensors").stat().st_size
    assert adapter_bytes < model_bytes


def test_merged_model_equals_base_plus_adapter(lora_run):
    """The registered (merged) weights compute what base + adapter compute, and plain transformers
    loads a LoRA checkpoint with its base in one call."""
    from transformers import AutoModelForCausalLM

    _, result, _ = lora_run
    with_adapter = AutoModelForCausalLM.from_pretrained(result.checkpoints[-1].path)
    assert hasattr(with_adapter, "peft_config")
    merged = AutoModelForCausalLM.from_pretrained(result.model_dir)
    ids = torch.tensor([[1, 5, 9, 33, 70, 2, 8, 100, 41]])
    with torch.no_grad():
        a = with_adapter(input_ids=ids).logits
        b = merged(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_continue_from_a_lora_checkpoint(lora_run, tmp_path, tiny_model):
    """custom_weights_path at a LoRA checkpoint trains that adapter on (its settings, its base)."""
    spec, first, first_reports = lora_run
    middle = first.checkpoints[0]
    eval_at_middle = events(first_reports, "EVAL_COMPLETED")[0]["data"]["eval_loss"]
    second, reports = run_in_process(make_spec(
        tmp_path, tiny_model, spec.train_data, task_type="CHAT_COMPLETION", training_duration="5ba",
        learning_rate=1e-2, custom_weights_path=str(middle.path), precision="fp32",
    ))
    init = events(reports, "MODEL_INITIALIZED")[0]["data"]
    # The checkpoint's own settings, its layers as PEFT resolved them: every linear one.
    assert init["adapter"]["rank"] == 16
    assert sorted(init["adapter"]["target_modules"]) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert [r for r in reports if r["kind"] == "run" and r["fields"].get("adapter")]
    # It starts exactly where the first run was at that checkpoint (eval data = train data, no dropout).
    assert second.losses[0] == pytest.approx(eval_at_middle, rel=1e-4)
    assert second.losses[0] < first.losses[0] - 0.5
    assert (second.model_dir / "adapter" / "adapter_config.json").is_file()


def test_attention_only_lora_adapts_the_attention_projections(tmp_path, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    train = write_jsonl(tmp_path / "chat.jsonl", CHATS)
    result, reports = run_in_process(make_spec(
        tmp_path, tiny_model, jsonl_source(train), task_type="CHAT_COMPLETION", training_duration="2ba",
        adapter=parse_adapter({"target_modules": "attention"}), precision="fp32",
    ))
    init = events(reports, "MODEL_INITIALIZED")[0]["data"]
    assert init["adapter"]["target_modules"] == "attention"
    assert "attention projections" in events(reports, "MODEL_INITIALIZED")[0]["message"]
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), result.checkpoints[-1].path)
    assert sorted(adapted.peft_config["default"].target_modules) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert init["learning_rate"] == pytest.approx(5e-3)  # LoRA's default for a model this small
    assert result.registered_model_version == 1


def test_qlora_without_cuda_fails_before_loading_with_a_clear_reason(tmp_path, tiny_model):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the CPU refusal does not apply")
    train = write_jsonl(tmp_path / "chat.jsonl", CHATS)
    spec = make_spec(
        tmp_path, tiny_model, jsonl_source(train), task_type="CHAT_COMPLETION", adapter=parse_adapter("qlora"),
    )
    with pytest.raises(TrainingFailure, match=r"adapter: quantize_base='4bit' \(QLoRA\) needs a CUDA GPU"):
        run_in_process(spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA's 4-bit base needs a CUDA GPU; this machine has none")
def test_qlora_trains_on_cuda(tmp_path, tiny_model):
    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes")
    train = write_jsonl(tmp_path / "chat.jsonl", CHATS)
    result, reports = run_in_process(make_spec(
        tmp_path, tiny_model, jsonl_source(train), task_type="CHAT_COMPLETION", training_duration="30ba",
        learning_rate=1e-2, adapter=parse_adapter({"rank": 16, "quantize_base": "4bit"}),
    ))
    assert result.losses[-1] < result.losses[0] / 2
    assert events(reports, "MODEL_INITIALIZED")[0]["data"]["adapter"]["quantize_base"] == "4bit"
