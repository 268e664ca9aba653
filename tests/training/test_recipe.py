"""The recipe in-process, for the other task types and for starting from custom weights."""

from __future__ import annotations

import pytest

from tunedeck.inputs.spec import DataSource

from .conftest import CHATS, PAIRS, events, jsonl_source, make_spec, run_in_process, write_jsonl

pytestmark = pytest.mark.e2e


def test_chat_completion_trains(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train = write_jsonl(tmp_path / "chat.jsonl", CHATS)
    spec = make_spec(
        tmp_path, tiny_model, jsonl_source(train), task_type="CHAT_COMPLETION",
        training_duration="60ba", learning_rate=3e-3, eval_prompts=["Say hello."],
    )
    result, reports = run_in_process(spec)
    assert result.losses[-1] < result.losses[0] / 5
    assert len(events(reports, "EVAL_GENERATIONS")) == 5
    assert result.registered_model_version == 1
    # The assistant turns were learned, end of turn included: greedy replies stop at <|im_end|>.
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    for chat in CHATS:
        text = tokenizer.apply_chat_template(chat["messages"][:2], tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        out = model.generate(ids, max_new_tokens=20, do_sample=False)
        assert tokenizer.decode(out[0, ids.shape[1] :]) == chat["messages"][2]["content"] + "<|im_end|>"


def test_continued_pretrain_trains(tmp_path, tiny_model):
    folder = tmp_path / "docs"
    folder.mkdir()
    texts = ["Once upon a time there was a small language model. " * 6, "The quick brown fox jumps over the lazy dog. " * 6]
    for i, text in enumerate(texts):
        (folder / f"doc{i}.txt").write_text(text)
    source = DataSource("txt", sorted(str(p) for p in folder.iterdir()), str(folder))
    spec = make_spec(
        tmp_path, tiny_model, source, task_type="CONTINUED_PRETRAIN", training_duration="10ep",
        learning_rate=3e-3, context_length=32, batch_tokens=64,
    )
    result, reports = run_in_process(spec)
    data = events(reports, "DATA_VALIDATED")[0]["data"]["train"]
    assert data["rows"] == 2 and data["row_tokens"] == 32
    assert data["loss_tokens"] == data["tokens"] - data["examples"]  # every token but each block's first
    init = events(reports, "MODEL_INITIALIZED")[0]["data"]
    assert init["rows_per_step"] == 2 and init["total_steps"] == 10 * init["steps_per_epoch"]
    assert result.losses[-1] < result.losses[0] * 0.6


def test_second_run_starts_from_the_first_runs_checkpoint(tmp_path, tiny_model):
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    first, _ = run_in_process(
        make_spec(tmp_path / "a", tiny_model, jsonl_source(train), training_duration="40ba", learning_rate=3e-3)
    )
    checkpoint = first.checkpoints[-1].path
    second, reports = run_in_process(
        make_spec(
            tmp_path / "b", tiny_model, jsonl_source(train), training_duration="1ba",
            custom_weights_path=str(checkpoint), learning_rate=1e-6,
        )
    )
    assert second.losses[0] < first.losses[0] / 5  # it did not start from the random base weights
    assert second.losses[0] == pytest.approx(first.losses[-1], rel=0.5)
    assert second.registered_model_version == 1  # each run here has its own MLflow store


def test_custom_weights_of_another_architecture_are_refused(tmp_path, tiny_model):
    from tunedeck.training.failures import TrainingFailure
    from tunedeck.training.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other", hidden_size=32)
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a", "response": "b"}])
    spec = make_spec(tmp_path, tiny_model, jsonl_source(train), custom_weights_path=str(other))
    with pytest.raises(TrainingFailure, match=r"custom_weights_path: .* does not match .*hidden_size 32 vs 64"):
        run_in_process(spec)


def test_corrupt_weights_fail_naming_the_model_folder(tmp_path, tiny_model):
    import shutil

    from tunedeck.training.failures import TrainingFailure

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a", "response": "b"}])
    with pytest.raises(TrainingFailure, match=rf"^model: could not load the model weights from {broken} \(SafetensorError"):
        run_in_process(make_spec(tmp_path, broken, jsonl_source(train)))


def test_bf16_precision_on_cpu_trains_with_autocast(tmp_path, tiny_model):
    """TUNEDECK_PRECISION=bf16 reaches the worker through the spec: bf16 autocast, float32 weights, and it learns."""
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    spec = make_spec(tmp_path, tiny_model, jsonl_source(train), training_duration="30ba", learning_rate=3e-3, precision="bf16")
    result, reports = run_in_process(spec)
    assert "bfloat16 autocast, float32 weights" in events(reports, "MODEL_INITIALIZED")[0]["message"]
    assert result.losses[-1] < result.losses[0] / 3
