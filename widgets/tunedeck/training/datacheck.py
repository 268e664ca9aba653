"""The form's "Check data": what the data looks like to the model, before a run is created.

Loads only the tokenizer (never the weights), so it answers in about a second for an HF folder. The
token counts are those the trainer will see (same tokenization and loss masking as training).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from tunedeck.errors import InvalidInputError
from tunedeck.inputs.catalog import folder_problem
from tunedeck.inputs.datasets import check_data, read_examples
from tunedeck.inputs.params import check_task_type, default_context_length
from tunedeck.inputs.spec import DataSource

MAX_ROWS = 20_000  # tokenizing more only makes the form slower, not the answer better


def data_check(
    source: DataSource,
    task_type: str,
    model_path: str | Path,
    gguf_file: str | None = None,
    context_length: int | None = None,
    *,
    field: str = "train_data_path",
    model_cache_dir: str | Path | None = None,
    max_rows: int = MAX_ROWS,
) -> dict[str, Any]:
    """Rows, token counts (min/median/max), how many exceed the context length, a sample row and the
    first bad lines. ``ok`` is False when there are problems; ``message`` is one line for the form."""
    task = check_task_type(task_type)
    problems = check_data(source, task, field)
    result: dict[str, Any] = {
        "ok": not problems,
        "task_type": task,
        "problems": [p.to_dict() for p in problems],
        "rows": 0,
        "tokens": None,
        "context_length": context_length,
        "too_long": 0,
        "sample": None,
        "checked_rows": 0,
    }
    if problems:
        result["message"] = f"{len(problems)} problem(s): {problems[0]}"
        return result
    try:
        examples = read_examples(source, task, field)
    except InvalidInputError as error:  # only if the files changed since check_data
        result.update(ok=False, problems=[p.to_dict() for p in error.problems], message=str(error.problems[0]))
        return result

    from tunedeck.training.tokenize import TokenizationError, tokenize_document_blocks, tokenize_examples

    why = folder_problem(Path(model_path))
    if why:
        return _model_failure(result, why, model_path)
    try:
        tokenizer, maximum = _tokenizer(Path(model_path), gguf_file, model_cache_dir)
    except Exception as error:  # noqa: BLE001 - any folder can be named as the model: say why it cannot be read
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        return _model_failure(result, f"cannot load the tokenizer from {model_path} ({type(error).__name__}: {detail})", model_path)
    context = int(context_length or default_context_length(maximum))
    result["context_length"] = context
    result["rows"] = len(examples)
    result["sample"] = examples[0].row if task != "CONTINUED_PRETRAIN" else {"text": examples[0].row["text"][:500]}
    checked = examples[:max_rows]
    result["checked_rows"] = len(checked)
    try:
        if task == "CONTINUED_PRETRAIN":
            lengths = [len(b) for d in checked for b in tokenize_document_blocks(tokenizer, [d.row["text"]], 10**12)]
        else:
            untruncated = tokenize_examples(tokenizer, checked, task, 10**12)
            lengths = [len(e) for e in untruncated.examples]
    except (TokenizationError, ValueError, TypeError, KeyError, IndexError) as error:  # a template that breaks on these rows
        result.update(ok=False, message=str(error)[:500])
        result["problems"] = [{"field": field, "message": str(error)[:500], "file": None, "line": None}]
        return result
    if not lengths:
        message = "the data tokenizes to no tokens with this model's tokenizer"
        result.update(ok=False, message=message)
        result["problems"] = [{"field": field, "message": message, "file": None, "line": None}]
        return result
    too_long = sum(1 for n in lengths if n > context)
    result["too_long"] = too_long
    result["tokens"] = {
        "min": min(lengths),
        "median": int(statistics.median(lengths)),
        "max": max(lengths),
        "total": sum(lengths),
    }
    unit = "documents" if task == "CONTINUED_PRETRAIN" else "rows"
    t = result["tokens"]
    message = (
        f"ok: {len(examples):,} {unit}; tokens min {t['min']:,} / median {t['median']:,} / max {t['max']:,} "
        f"(context {context:,})"
    )
    if too_long:
        message += (
            f"; {too_long:,} longer than the context will be split into blocks"
            if task == "CONTINUED_PRETRAIN"
            else f"; {too_long:,} longer than the context will be truncated"
        )
    if len(checked) < len(examples):
        message += f" (tokens counted on the first {len(checked):,})"
    result["message"] = message
    return result


def _model_failure(result: dict[str, Any], message: str, model_path: str | Path) -> dict[str, Any]:
    result.update(ok=False, message=f"model: {message}", rows=0, sample=None)
    result["problems"] = [{"field": "model", "message": message, "file": str(model_path), "line": None}]
    return result


def _tokenizer(model_path: Path, gguf_file: str | None, cache_dir: str | Path | None):
    """The tokenizer and the model's maximum context length; a converted GGUF cache is used if present."""
    from transformers import AutoConfig, AutoTokenizer

    folder = model_path
    if gguf_file and cache_dir and (Path(cache_dir) / "config.json").is_file():
        folder, gguf_file = Path(cache_dir), None
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    config = AutoConfig.from_pretrained(folder, **kwargs)
    maximum = int(getattr(config, "max_position_embeddings", None) or tokenizer.model_max_length or 2048)
    return tokenizer, maximum
