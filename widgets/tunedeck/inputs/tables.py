"""Unity Catalog tables as training data: ``<catalog>.<schema>.<table>`` is a Delta table on this machine.

The reference reads ``train_data_path="main.demo.train"`` from Unity Catalog; tunedeck maps the name onto
a local catalog root, ``config.tables_root()`` (TUNEDECK_TABLES, default ``$TUNEDECK_HOME/tables``): the
table is the Delta table in ``<root>/<catalog>/<schema>/<table>`` (a folder with a ``_delta_log``).

Tables are read through deltalake (delta-rs), imported only inside the functions that open a table, never
as raw parquet files: a Delta table's rows are not the parquet files in its folder. A version's rows are
its active files (the log's adds less its removes: a DELETE or an overwrite leaves the old files in
place), less the rows its deletion vectors delete (Databricks turns those on for new tables), with
columns named through column mapping where the table uses it. deltalake's DataFusion reader applies all
of that; its pyarrow dataset refuses tables with deletion vectors, so it is not used. One partition
(``target_partitions=1``) makes the row order the same on every read: a row number in a message points
at the same row each time, and a run trains on its rows in the same order as any other run on that
table version.

The service resolves a name (``resolve_table``: the folder, the table's current version, its columns
against the task) when it checks a request, before anything is stored: the version current then
(``DataSource.version``) is the run's for good (``service/core.py`` pin_data_versions keeps it in the
run's folder, and each launch, an autoresume's too, reads that version; a run created without checks
pins the version current at its first launch). The worker reads exactly that version and logs it to
MLflow (``train_data_version``), so rows written to the table while the run waits or trains do not
change what it trains on. The row checks are
``inputs/datasets.py``'s, the same as for JSONL, with the place said as ``table main.demo.train, row 3``
instead of a file and line.

    INSTRUCTION_FINETUNE  string columns ``prompt`` and ``response``
    CHAT_COMPLETION       ``messages``: array<struct<role: string, content: string>>
    CONTINUED_PRETRAIN    a string column ``text``, one document a row (the reference reads only .txt
                          files for it; a column of documents means the same thing, so it is accepted)

Other columns are ignored and never read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunedeck import config
from tunedeck.errors import Problem
from tunedeck.inputs.paths import TABLE_NAME, PathError, is_folder, max_data_bytes, short
from tunedeck.inputs.spec import DataSource

__all__ = ["COLUMNS", "KIND", "TableError", "resolve_table", "table_folder", "table_rows"]

KIND = "delta"
COLUMNS = {
    "INSTRUCTION_FINETUNE": ("prompt", "response"),
    "CHAT_COMPLETION": ("messages",),
    "CONTINUED_PRETRAIN": ("text",),
}
BATCH_ROWS = 1024
NEEDS = "reading Unity Catalog tables needs deltalake and pyarrow (pip install 'tunedeck[train]')"
_FILE_SUFFIXES = ("jsonl", "json", "ndjson", "parquet", "txt", "csv")
_PSEUDO_ROOTS = ("/proc", "/sys", "/dev")


class TableError(Exception):
    """The table cannot be read (deltalake's reason, first line, cut short)."""


def table_folder(name: str) -> Path:
    """Where the table ``name`` is on this machine (it may not exist); PathError for a name that is none.
    Unity Catalog names are case-insensitive and stored in lower case: ``Main.Demo.Train`` is the folder
    ``main/demo/train`` unless ``Main/Demo/Train`` itself exists."""
    match = TABLE_NAME.match(name.strip()) if isinstance(name, str) else None
    if match is None:
        raise PathError(f"{short(name)} is not a table name '<catalog>.<schema>.<table>'")
    exact = config.tables_root().joinpath(*match.groups())
    lower = config.tables_root().joinpath(*(part.lower() for part in match.groups()))
    return lower if lower != exact and not is_folder(exact) and is_folder(lower) else exact


def resolve_table(name: str, task_type: str, field: str) -> tuple[DataSource | None, list[Problem]]:
    """The table as a DataSource pinned to its current version, or why it cannot be one: no catalog root,
    no such catalog / schema / table, not a Delta table, unreadable, without the task's columns, empty."""
    name = name.strip()

    def problem(message: str) -> tuple[None, list[Problem]]:
        return None, [Problem(field, f"table {name}{message}")]

    try:
        folder = table_folder(name)
    except PathError as exc:
        return None, [Problem(field, str(exc))]
    root = config.tables_root()
    where = "TUNEDECK_TABLES" if os.environ.get("TUNEDECK_TABLES") else "TUNEDECK_TABLES, default $TUNEDECK_HOME/tables"
    if not is_folder(root):
        return problem(
            f": the local catalog root {root} does not exist (tables are read from <root>/<catalog>/<schema>/<table>, "
            f"the root being {where}); write the table there, or point TUNEDECK_TABLES at your catalog root"
        )
    catalog, schema, table = folder.relative_to(root).parts
    if not is_folder(root / catalog):
        return problem(f" does not exist: there is no catalog {catalog!r} in {root} ({where}){_file_hint(name)}")
    if not is_folder(root / catalog / schema):
        return problem(f" does not exist: catalog {catalog!r} has no schema {schema!r} ({root / catalog}){_file_hint(name)}")
    if not is_folder(folder):
        known = _tables_in(root / catalog / schema)
        listing = f"; its tables: {', '.join(known)}" if known else "; it holds no Delta table"
        return problem(
            f" does not exist: schema {catalog}.{schema} has no table {table!r} ({root / catalog / schema}{listing})"
            + _file_hint(name)
        )
    if not is_folder(folder / "_delta_log"):
        return problem(f": {folder} is not a Delta table (it has no _delta_log folder)")
    real = os.path.realpath(folder)
    if any(real == p or real.startswith(p + "/") for p in _PSEUDO_ROOTS):
        return problem(f": {folder} leads to {real}, on a system pseudo-filesystem (/proc, /sys, /dev): not read")
    try:
        dt = _open(folder)
        version = int(dt.version())
        columns = {field.name: field.type for field in dt.schema().fields}
        files = dt.file_uris()
        size = _size(dt)
    except ImportError as exc:
        return problem(f": {NEEDS}: {exc}")
    except Exception as exc:  # noqa: BLE001 - deltalake raises its own errors and OSError/ValueError for a bad log
        return problem(f": cannot read it as a Delta table: {_reason(exc)}")
    task = (task_type or "").upper()
    wrong = _column_problem(columns, task)
    if wrong:
        return problem(wrong)
    if not files:
        return problem(f" is empty: version {version} has no rows")
    if size > max_data_bytes():
        return problem(
            f": its data files hold {size:,} bytes; at most {max_data_bytes():,} are read (TUNEDECK_MAX_DATA_BYTES)"
        )
    return DataSource(KIND, [str(folder)], name, version), []


def table_rows(source: DataSource, columns: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """The rows of the source's table version, only ``columns``, in the same order on every read.
    TableError when deltalake cannot read it (vacuumed files, a corrupt file, an unsupported feature)."""
    try:
        import pyarrow as pa
        from deltalake import QueryBuilder

        dt = _open(Path(source.files[0]), source.version)
        names = [field.name for field in dt.schema().fields]
        selected = ", ".join(f"{_quote(_column(names, c) or c)} AS {_quote(c)}" for c in columns)
        query = QueryBuilder({"datafusion.execution.target_partitions": "1",
                              "datafusion.execution.batch_size": str(BATCH_ROWS)})
        reader = query.register("rows", dt).execute(f'SELECT {selected} FROM "rows"')
    except ImportError as exc:
        raise TableError(f"{NEEDS}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - deltalake's errors, OSError for a missing version or file
        raise TableError(_reason(exc)) from None
    while True:
        try:
            batch = next(reader, None)
            if batch is None:
                return
            rows = pa.record_batch(batch).to_pylist()
        except Exception as exc:  # noqa: BLE001 - a parquet file that cannot be decoded, a file vacuumed meanwhile
            raise TableError(_reason(exc)) from None
        yield from rows


# --- helpers ----------------------------------------------------------------------------------------


def _open(folder: Path, version: int | None = None) -> Any:
    from deltalake import DeltaTable

    return DeltaTable(str(folder), version=version)


def _size(dt: Any) -> int:
    """Bytes of the version's active data files (from the log, nothing is read)."""
    import pyarrow as pa

    sizes = pa.table(dt.get_add_actions(flatten=True)).column("size_bytes").to_pylist()
    return sum(int(s or 0) for s in sizes)


def _column(names: list[str], wanted: str) -> str | None:
    """The table's column for ``wanted``: that name, else the one name equal to it but for case (Spark and
    Unity Catalog match column names regardless of case: a table written with 'Prompt' has a 'prompt')."""
    if wanted in names:
        return wanted
    same = [n for n in names if n.lower() == wanted]
    return same[0] if len(same) == 1 else None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _column_problem(all_columns: dict[str, Any], task: str) -> str | None:
    """Why the table's columns cannot hold the task's rows (a hint when they are another task's data)."""
    names = list(all_columns)
    columns = {w: all_columns[c] for task_columns in COLUMNS.values() for w in task_columns if (c := _column(names, w))}
    found = ", ".join(f"{n[:40]} {_type(t)[:80]}" for n, t in list(all_columns.items())[:8]) or "none"
    if len(all_columns) > 8:
        found += f", ... ({len(all_columns)} columns)"
    if task not in COLUMNS:
        return f": unknown task type {task!r}"
    needed = COLUMNS[task]
    missing = [c for c in needed if c not in columns]
    if missing:
        hint = ""
        for other, other_columns in COLUMNS.items():
            if other != task and all(c in columns for c in other_columns):
                hint = f": this looks like {other} data ({', '.join(map(repr, other_columns))}): pass task_type='{other}'"
                break
        shape = {
            "INSTRUCTION_FINETUNE": "string columns 'prompt' and 'response'",
            "CHAT_COMPLETION": "a column 'messages' of array<struct<role: string, content: string>>",
            "CONTINUED_PRETRAIN": "a string column 'text', one document a row",
        }[task]
        return f" has no column {missing[0]!r}{hint} ({task} reads {shape}; its columns: {found})"
    if task == "CHAT_COMPLETION":
        messages = columns["messages"]
        element: Any = getattr(messages, "element_type", None) if getattr(messages, "type", None) == "array" else None
        fields = {f.name: f.type for f in element.fields} if getattr(element, "type", None) == "struct" else None
        if fields is None or "role" not in fields or "content" not in fields:
            return (f": column 'messages' is {_type(messages)}; CHAT_COMPLETION reads "
                    "array<struct<role: string, content: string>>")
        for key in ("role", "content"):
            if _type(fields[key]) != "string":
                return f": column 'messages' has {key} of type {_type(fields[key])}; it must be string"
        return None
    for column in needed:
        if _type(columns[column]) != "string":
            return f": column {column!r} is {_type(columns[column])}; {task} reads it as string"
    return None


def _type(t: Any) -> str:
    """A Delta type as Unity Catalog writes it: string, array<struct<role: string, ...>>, map<string, long>."""
    kind = getattr(t, "type", None)
    if kind == "array":
        return f"array<{_type(t.element_type)}>"
    if kind == "struct":
        return "struct<" + ", ".join(f"{f.name}: {_type(f.type)}" for f in t.fields) + ">"
    if kind == "map":
        return f"map<{_type(t.key_type)}, {_type(t.value_type)}>"
    return str(kind) if kind is not None else type(t).__name__


def _tables_in(folder: Path, limit: int = 10) -> list[str]:
    try:
        names = sorted(p.name for p in folder.iterdir() if is_folder(p / "_delta_log"))
    except OSError:
        return []
    return names[:limit] + ([f"... ({len(names)} tables)"] if len(names) > limit else [])


def _file_hint(name: str) -> str:
    suffix = name.rsplit(".", 1)[-1].lower()
    if suffix in _FILE_SUFFIXES:
        return f" (if {name!r} is a file, pass its absolute path: a name '<a>.<b>.<c>' is read as a table)"
    return ""


def _reason(exc: BaseException) -> str:
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return detail[:300] + ("..." if len(detail) > 300 else "")
