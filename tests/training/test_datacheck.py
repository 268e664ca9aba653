"""The form's data check: counts with the model's tokenizer, long rows, first bad lines."""

from __future__ import annotations

from tunedeck.training.datacheck import data_check
from tunedeck.training.tokenize import tokenize_prompt_response

from .conftest import PAIRS, jsonl_source, write_jsonl


def test_counts_tokens_and_rows_over_the_context(tmp_path, tiny_model, tiny_tokenizer):
    rows = [{"prompt": p, "response": r} for p, r in PAIRS] + [{"prompt": "word " * 50, "response": "long"}]
    source = jsonl_source(write_jsonl(tmp_path / "train.jsonl", rows))
    result = data_check(source, "INSTRUCTION_FINETUNE", tiny_model, context_length=20)
    lengths = sorted(len(tokenize_prompt_response(tiny_tokenizer, r["prompt"], r["response"])) for r in rows)
    assert result["ok"] and result["rows"] == 7 and result["problems"] == []
    assert result["tokens"]["min"] == lengths[0] and result["tokens"]["max"] == lengths[-1]
    assert result["tokens"]["median"] == lengths[3]
    assert result["too_long"] == 1 and result["context_length"] == 20
    assert result["sample"] == rows[0]
    assert result["message"].startswith("ok: 7 rows; tokens min ") and "1 longer than the context" in result["message"]


def test_default_context_is_the_models_maximum(tmp_path, tiny_model):
    source = jsonl_source(write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a", "response": "b"}]))
    assert data_check(source, "INSTRUCTION_FINETUNE", tiny_model)["context_length"] == 1024


def test_reports_the_first_bad_lines(tmp_path, tiny_model):
    path = tmp_path / "chat.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\n{"messages": []}\n')
    result = data_check(jsonl_source(path), "CHAT_COMPLETION", tiny_model)
    assert not result["ok"] and result["tokens"] is None
    assert [(p["file"], p["line"]) for p in result["problems"]] == [(str(path), 1), (str(path), 2)]
    assert "INSTRUCTION_FINETUNE" in result["problems"][0]["message"]
    assert result["message"].startswith("2 problem(s)")
