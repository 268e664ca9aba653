"""Readers and checkers for the three training-data formats.

Light on purpose (stdlib + json; pyarrow/pandas only when a parquet file is read): the service calls
``check_data`` before it accepts a run, the worker calls ``load_examples`` (or ``read_examples``) to
train, and both must describe a bad row the same way -- file, line and the create() parameter name.

    INSTRUCTION_FINETUNE  JSONL/parquet rows {"prompt": str, "response": str}
    CHAT_COMPLETION       JSONL/parquet rows {"messages": [{"role": ..., "content": str}, ...]}
    CONTINUED_PRETRAIN    a folder of .txt files (kind "txt"), one document per file

A Delta table (kind "delta", a ``<catalog>.<schema>.<table>`` name: inputs/tables.py) holds the same rows
as columns (``text`` for CONTINUED_PRETRAIN); its problems say "table main.demo.train, row 3" where a
file's say file and line.

Files are opened with ``paths.open_regular`` (regular files only, never a blocking open, at most
TUNEDECK_MAX_DATA_BYTES) and read a line at a time, a line being at most MAX_LINE_BYTES. A problem never
quotes a row: it names the file, the line and what is wrong, quoting at most a key or a role (cut to 40
characters), so pointing the data check at a file that is not training data reveals nothing of it;
only data that passes the check is ever shown (the data check's sample row).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tunedeck.errors import InvalidInputError, Problem
from tunedeck.inputs import tables
from tunedeck.inputs.paths import PathError, open_regular, short
from tunedeck.inputs.spec import DataSource

__all__ = ["Example", "check_data", "load_examples", "read_examples"]

ROLES = ("system", "user", "assistant")
_ROW_KINDS = ("jsonl", "parquet", tables.KIND)
MAX_LINE_BYTES = 32 * 1024**2  # one JSONL row; a longer line is refused, never read whole


@dataclass(frozen=True)
class Example:
    """One row (or document) and where it came from, so later errors can still name the file and line."""

    row: dict[str, Any]
    file: str
    line: int | None


class _Stop(Exception):
    """Raised internally once enough problems are collected."""


class _Collector:
    def __init__(self, field: str, limit: int):
        self.field = field
        self.limit = max(1, limit)
        self.problems: list[Problem] = []

    def add(self, message: str, file: str | None = None, line: int | None = None) -> None:
        self.problems.append(Problem(self.field, message, file, line))
        if len(self.problems) >= self.limit:
            raise _Stop


def check_data(source: DataSource, task_type: str, field: str, max_problems: int = 5) -> list[Problem]:
    """Every problem with the data (up to ``max_problems``), without raising. Empty list = fine."""
    collector = _Collector(field, max_problems)
    try:
        for _ in _examples(source, task_type, collector):
            pass
    except _Stop:
        pass
    return collector.problems


def read_examples(source: DataSource, task_type: str, field: str, max_problems: int = 5) -> list[Example]:
    """All rows with their file and line; raises InvalidInputError naming the first bad ones."""
    collector = _Collector(field, max_problems)
    try:
        examples = list(_examples(source, task_type, collector))
    except _Stop:
        examples = []
    if collector.problems:
        raise InvalidInputError(collector.problems)
    return examples


def load_examples(source: DataSource, task_type: str, field: str) -> list[dict[str, Any]]:
    """Rows for INSTRUCTION_FINETUNE / CHAT_COMPLETION, ``{"text": ...}`` documents for CONTINUED_PRETRAIN."""
    return [e.row for e in read_examples(source, task_type, field)]


# --- dispatch -------------------------------------------------------------------------------------


def _examples(source: DataSource, task_type: str, c: _Collector) -> Iterator[Example]:
    task = (task_type or "").upper()
    if not source.files:
        c.add(f"no data files found at {source.origin!r}")
        return
    if task == "CONTINUED_PRETRAIN":
        yield from _documents(source, c)
        return
    if task not in ("INSTRUCTION_FINETUNE", "CHAT_COMPLETION"):
        c.add(f"unknown task type {task_type!r}")
        return
    if source.kind not in _ROW_KINDS:
        c.add(
            f"{task} reads JSONL rows, but {source.origin!r} is a {source.kind!r} source "
            "(a folder of .txt files is CONTINUED_PRETRAIN data: pass task_type='CONTINUED_PRETRAIN')",
            source.files[0],
        )
        return
    if source.kind == tables.KIND:
        yield from _table_examples(source, task, c)
        return
    count = 0
    for file in source.files:
        rows = _jsonl_rows(file, c) if source.kind == "jsonl" else _parquet_rows(file, c)
        for line, row in rows:
            message = _row_problem(row, task)
            if message:
                c.add(message if source.kind == "jsonl" else f"row {line}: {message}", file, line)
                continue
            count += 1
            yield Example(_clean_row(row, task), file, line)
    if count == 0 and not c.problems:
        c.add(f"{source.origin!r} holds no rows", source.files[0])


# --- JSONL / parquet rows ---------------------------------------------------------------------------


def _open(file: str, c: _Collector):
    """The file opened safely (regular files only, never blocking, size-limited), or None with a problem."""
    try:
        return open_regular(file)
    except PathError as error:
        c.add(str(error).replace(f"{file} ", "this ", 1) if str(error).startswith(f"{file} ") else str(error), file)
    except OSError as error:
        c.add(f"cannot read the file: {error.strerror or error}", file)
    return None


def _jsonl_rows(file: str, c: _Collector) -> Iterator[tuple[int, Any]]:
    f = _open(file, c)
    if f is None:
        return
    seen = False
    with f:
        number = 0
        while True:
            try:
                raw = f.readline(MAX_LINE_BYTES + 1)
            except OSError as error:
                c.add(f"cannot read the file: {error.strerror or error}", file, number + 1)
                return
            if not raw:
                break
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                seen = True
                c.add(f"the line is longer than {MAX_LINE_BYTES:,} bytes: a row must be smaller", file, number)
                while raw and not raw.endswith(b"\n"):  # skip the rest of that line
                    raw = f.readline(1024 * 1024)
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                seen = True
                c.add(f"not UTF-8 text ({error.reason} at byte {error.start} of the line)", file, number)
                continue
            if number == 1:
                text = text.lstrip("\ufeff")  # a UTF-8 byte order mark
            if not text.strip():  # a blank line (often the last one) is not a row
                continue
            seen = True
            try:
                row = json.loads(text)
            except json.JSONDecodeError as error:
                c.add(f"not valid JSON ({error.msg} at column {error.colno})", file, number)
                continue
            except RecursionError:
                c.add("not valid JSON for a row: nested too deeply", file, number)
                continue
            except ValueError as error:  # e.g. an integer of more than 4300 digits
                c.add(f"not valid JSON ({str(error)[:200]})", file, number)
                continue
            if not isinstance(row, dict):
                c.add(f"each line must be a JSON object, found {_json_type(row)}", file, number)
                continue
            yield number, row
    if not seen:
        c.add("the file is empty", file)


def _parquet_rows(file: str, c: _Collector) -> Iterator[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    f = _open(file, c)
    if f is None:
        return
    number = 0
    with f:
        try:
            if pq is not None:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
                    for row in batch.to_pylist():
                        number += 1
                        yield number, row
            else:
                try:
                    import pandas as pd
                except ImportError:
                    c.add("reading parquet files needs pyarrow (pip install pyarrow)", file)
                    return
                for row in pd.read_parquet(f).to_dict(orient="records"):
                    number += 1
                    yield number, _plain(row)
        except _Stop:
            raise
        except ImportError as error:
            c.add(f"reading parquet files needs pyarrow ({error})", file)
            return
        except Exception as error:  # noqa: BLE001 - pyarrow raises many kinds for a corrupt or hostile file
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            c.add(f"cannot read the parquet file: {detail}", file, number + 1 if number else None)
            return
    if number == 0:
        c.add("the file is empty", file)


def _row_problem(row: dict[str, Any], task: str) -> str | None:
    """Why a row does not fit the task, with a hint when it looks like another task's data."""
    if task == "INSTRUCTION_FINETUNE":
        if "messages" in row and "prompt" not in row:
            return "this looks like CHAT_COMPLETION data ('messages'): pass task_type='CHAT_COMPLETION'"
        for key in ("prompt", "response"):
            if key not in row:
                return f"missing {key!r} (INSTRUCTION_FINETUNE rows need 'prompt' and 'response'; found {_keys(row)})"
            if not isinstance(row[key], str):
                return f"{key!r} must be a string, found {_json_type(row[key])}"
        if not row["response"].strip():
            return "'response' is empty: there is nothing to learn from this row"
        return None
    # CHAT_COMPLETION
    if "messages" not in row:
        if "prompt" in row and "response" in row:
            return "this looks like INSTRUCTION_FINETUNE data ('prompt'/'response'): pass task_type='INSTRUCTION_FINETUNE'"
        return f'missing \'messages\' (CHAT_COMPLETION rows are {{"messages": [{{"role", "content"}}, ...]}}; found {_keys(row)})'
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        return f"'messages' must be a non-empty list, found {_json_type(messages)}"
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return f"messages[{i}] must be an object with 'role' and 'content', found {_json_type(m)}"
        role = m.get("role")
        if role not in ROLES:
            found = short(role, 40) if isinstance(role, str) else _json_type(role)
            return f"messages[{i}]: role must be one of {', '.join(ROLES)}, found {found}"
        if not isinstance(m.get("content"), str):
            return f"messages[{i}]: 'content' must be a string, found {_json_type(m.get('content'))}"
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant message: the loss is computed on assistant turns, so this row teaches nothing"
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and not m["content"].strip():
            return f"messages[{i}]: the assistant's 'content' is empty: there is nothing to learn from this turn"
    return None


def _clean_row(row: dict[str, Any], task: str) -> dict[str, Any]:
    if task == "INSTRUCTION_FINETUNE":
        return {"prompt": row["prompt"], "response": row["response"]}
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in row["messages"]]}


# --- Delta tables (Unity Catalog names) -------------------------------------------------------------


def _table_examples(source: DataSource, task: str, c: _Collector) -> Iterator[Example]:
    """The table's rows checked as JSONL rows are, each place said as 'table <name>, row <n>' (no file)."""
    count = number = 0
    try:
        for number, row in enumerate(tables.table_rows(source, tables.COLUMNS[task]), start=1):
            where = f"table {source.origin}, row {number}"
            if task == "CONTINUED_PRETRAIN":
                text = row.get("text")
                if not isinstance(text, str):
                    c.add(f"{where}: 'text' must be a string, found {_json_type(text)}")
                    continue
                if not text.strip():  # as an empty .txt file: nothing to learn, not an error
                    continue
                count += 1
                yield Example({"text": text}, where, None)
                continue
            message = _row_problem(row, task)
            if message:
                c.add(f"{where}: {message}")
                continue
            count += 1
            yield Example(_clean_row(row, task), where, None)
    except tables.TableError as error:
        c.add(f"table {source.origin}: cannot read " + (f"the rows after row {number}" if number else "its rows") + f": {error}")
        return
    if count == 0 and not c.problems:
        what = "no row" if task != "CONTINUED_PRETRAIN" else "no non-empty 'text'"
        version = f" (version {source.version})" if source.version is not None else ""
        c.add(f"table {source.origin}{version} holds {what}: there is nothing to train on")


# --- CONTINUED_PRETRAIN documents ------------------------------------------------------------------


def _documents(source: DataSource, c: _Collector) -> Iterator[Example]:
    if source.kind == tables.KIND:
        yield from _table_examples(source, "CONTINUED_PRETRAIN", c)
        return
    if source.kind != "txt":
        c.add(
            f"CONTINUED_PRETRAIN reads a folder of .txt files, but {source.origin!r} is a {source.kind!r} source "
            "(prompt/response rows are INSTRUCTION_FINETUNE data, messages rows CHAT_COMPLETION data)",
            source.files[0],
        )
        return
    found = 0
    for file in source.files:
        if not file.endswith(".txt"):
            continue
        f = _open(file, c)
        if f is None:
            continue
        try:
            with f:
                raw = f.read()
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            c.add(f"not UTF-8 text ({error.reason})", file, raw[: error.start].count(b"\n") + 1)
            continue
        except OSError as error:
            c.add(f"cannot read the file: {error.strerror or error}", file)
            continue
        if text.strip():
            found += 1
            yield Example({"text": text}, file, None)
    if found == 0 and not c.problems:
        c.add(f"no non-empty .txt file in {source.origin!r}", source.files[0])


# --- helpers ----------------------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _keys(row: dict[str, Any]) -> str:
    keys = list(row)[:6]
    return "keys " + ", ".join(short(k, 40) for k in keys) if keys else "no keys"


def _plain(value: Any) -> Any:
    """numpy arrays/scalars from pandas -> plain Python, so row checks see lists and strings."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
