"""The form's "Check data": what the data looks like to the model, before a run is created.

Loads only the tokenizer (never the weights), so it answers in about a second for an HF folder. The
token counts are those the trainer will see (same tokenization and loss masking as training).

The service never imports this module (it would load transformers into the service): it runs
``python -m tunedeck.training.datacheck --serve`` as a helper process and asks it one JSON line at a
time (service/datacheck.py). Without ``--serve`` it answers the one request on stdin and exits.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import sys
from pathlib import Path
from typing import IO, Any

from tunedeck.errors import InvalidInputError
from tunedeck.inputs.catalog import folder_problem
from tunedeck.inputs.datasets import check_data, read_examples
from tunedeck.inputs.params import check_task_type, default_context_length
from tunedeck.inputs.spec import DataSource

MAX_ROWS = 20_000  # tokenizing more only makes the form slower, not the answer better
IDLE_EXIT_SECONDS = 600.0  # a --serve helper with no request for this long exits (the service starts another)


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
        return _model_failure(
            result, f"cannot load the tokenizer from {model_path} ({type(error).__name__}: {detail})", model_path
        )
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
    """The tokenizer and the model's maximum context length; a converted GGUF cache is used if present.

    The last few are kept while their files are unchanged: the service's helper process answers many
    checks, and reading a tokenizer out of a GGUF file takes ~13 s here (an HF folder ~0.05 s)."""
    from transformers import AutoConfig, AutoTokenizer

    folder = model_path
    if gguf_file and cache_dir and (Path(cache_dir) / "config.json").is_file():
        folder, gguf_file = Path(cache_dir), None
    key = (str(folder), gguf_file, _stamp(folder, gguf_file))
    if key in _TOKENIZERS:
        return _TOKENIZERS[key]
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    config = AutoConfig.from_pretrained(folder, **kwargs)
    maximum = int(getattr(config, "max_position_embeddings", None) or tokenizer.model_max_length or 2048)
    while len(_TOKENIZERS) >= _KEEP_TOKENIZERS:
        _TOKENIZERS.pop(next(iter(_TOKENIZERS)))
    _TOKENIZERS[key] = (tokenizer, maximum)
    return tokenizer, maximum


_KEEP_TOKENIZERS = 2
_TOKENIZERS: dict[tuple, tuple[Any, int]] = {}


def _stamp(folder: Path, gguf_file: str | None) -> tuple:
    """Size and modification time of the files a tokenizer is read from (a changed file is read again)."""
    names = [gguf_file] if gguf_file else ["config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                                            "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt"]
    stamp: list[tuple[str, int | None, int | None]] = []
    for name in names:
        try:
            info = (folder / name).stat()
            stamp.append((name, info.st_size, info.st_mtime_ns))
        except OSError:
            stamp.append((name, None, None))
    return tuple(stamp)


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """One request of the service's helper protocol: ``source`` (a DataSource as a dict), ``task_type``,
    ``model_path``, ``gguf_file``, ``model_cache_dir``, ``context_length``; or, with ``"kind": "estimate"``,
    the run estimate of training/probe.py (the same warm helper: transformers is already loaded)."""
    if request.get("kind") == "estimate":
        from tunedeck.training import probe

        return probe.answer(request)
    try:
        source = DataSource(**request["source"])
        return data_check(
            source, request["task_type"], request["model_path"], gguf_file=request.get("gguf_file"),
            context_length=request.get("context_length"), model_cache_dir=request.get("model_cache_dir"),
        )
    except Exception as error:  # noqa: BLE001 - the helper answers every request, and says why it could not
        message = f"the data check failed: {type(error).__name__}: {str(error)[:300]}"
        return {
            "ok": False,
            "message": message,
            "problems": [{"field": "train_data_path", "message": message, "file": None, "line": None}],
        }


def serve(stdin: IO[bytes], stdout: IO[str], idle_exit: float = IDLE_EXIT_SECONDS) -> None:
    """Answer one JSON request a line until stdin closes (the service is gone) or none comes for ``idle_exit`` s."""
    fd, pending = stdin.fileno(), b""
    while True:
        while b"\n" not in pending:
            ready, _, _ = select.select([fd], [], [], idle_exit)
            chunk = os.read(fd, 1 << 20) if ready else b""
            if not chunk:
                return
            pending += chunk
        line, pending = pending.split(b"\n", 1)
        try:
            request = json.loads(line)
        except ValueError:
            request = None
        result = answer(request) if isinstance(request, dict) else {"ok": False, "message": "not a JSON request", "problems": []}
        stdout.write(json.dumps(result, default=str) + "\n")
        stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """``python -m tunedeck.training.datacheck [--serve]``: JSON requests on stdin, JSON answers on stdout."""
    args = sys.argv[1:] if argv is None else argv
    # Answers go to the real stdout; anything a library prints goes to stderr instead of into the protocol.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    if "--serve" in args:
        serve(sys.stdin.buffer, out)
    else:
        out.write(json.dumps(answer(json.loads(sys.stdin.read())), default=str) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
