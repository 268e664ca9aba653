"""The recipe in-process, for the other task types and for starting from custom weights."""

from __future__ import annotations

import pytest

from tunedeck.inputs.spec import DataSource

from .conftest import CHATS, PAIRS, events, jsonl_source, make_spec, run_in_process, write_jsonl

pytestmark = pytest.mark.e2e


def test_chat_completion_trains(tmp_path, tiny_model):
    train = write_jsonl(tmp_path / "chat.jsonl", CHATS)
    spec = make_spec(
        tmp_path, tiny_model, jsonl_source(train), task_type="CHAT_COMPLETION",
        training_duration="40ba", learning_rate=3e-3, eval_prompts=["Say hello."],
    )
    result, reports = run_in_process(spec)
    assert result.losses[-1] < result.losses[0] / 5
    (generations,) = [e for e in events(reports, "EVAL_GENERATIONS") if e["data"]["step"] == 40]
    assert generations["data"]["generations"][0]["generation"] == "Hello there!"
    assert (result.model_dir / "config.json").is_file() and result.registered_model_version == 1


def test_continued_pretrain_trains(tmp_path, tiny_model):
    folder = tmp_path / "docs"
    folder.mkdir()
    texts = ["Once upon a time there was a small language model. " * 6, "The quick brown fox jumps over the lazy dog. " * 6]
    for i, text in enumerate(texts):
        (folder / f"doc{i}.txt").write_text(text)
    source = DataSource("txt", sorted(str(p) for p in folder.iterdir()), str(folder))
    spec = make_spec(
        tmp_path, tiny_model, source, task_type="CONTINUED_PRETRAIN", training_duration="3ep",
        learning_rate=3e-3, context_length=32, batch_tokens=64,
    )
    result, reports = run_in_process(spec)
    data = events(reports, "DATA_VALIDATED")[0]["data"]["train"]
    assert data["rows"] == 2 and data["row_tokens"] == 32
    assert data["loss_tokens"] == data["tokens"] - data["examples"]  # every token but each block's first
    init = events(reports, "MODEL_INITIALIZED")[0]["data"]
    assert init["rows_per_step"] == 2 and init["total_steps"] == 3 * init["steps_per_epoch"]
    assert result.losses[-1] < result.losses[0] * 0.7


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
