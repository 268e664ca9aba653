"""Unity Catalog table names as train/eval data: Delta tables under the local catalog root (inputs/tables.py),
written here with deltalake, resolved and row-checked as JSONL is, each problem naming the table and row."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PAIRS

pa = pytest.importorskip("pyarrow")
deltalake = pytest.importorskip("deltalake")
pq = pytest.importorskip("pyarrow.parquet")

from tunedeck.errors import InvalidInputError, Problem  # noqa: E402
from tunedeck.inputs.datasets import check_data, read_examples  # noqa: E402
from tunedeck.inputs.paths import resolve_data  # noqa: E402

IFT, CHAT, CPT = "INSTRUCTION_FINETUNE", "CHAT_COMPLETION", "CONTINUED_PRETRAIN"
IFT_ROWS = [{"prompt": p, "response": r} for p, r in PAIRS]
CHAT_ROWS = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]} for p, r in PAIRS]


def write_table(name: str, rows: list[dict], schema=None, **kwargs) -> Path:
    """A Delta table at <TUNEDECK_HOME>/tables/<catalog>/<schema>/<table> (the default catalog root)."""
    from tunedeck import config

    folder = config.tables_root().joinpath(*name.split("."))
    folder.parent.mkdir(parents=True, exist_ok=True)
    deltalake.write_deltalake(str(folder), pa.Table.from_pylist(rows, schema=schema), **kwargs)
    return folder


def resolve(name: str, task: str = IFT, field: str = "train_data_path"):
    return resolve_data(name, task, field)


def only_problem(name: str, task: str = IFT, field: str = "train_data_path") -> Problem:
    source, problems = resolve(name, task, field)
    if source is not None:
        problems = check_data(source, task, field)
    assert len(problems) == 1, problems
    assert problems[0].field == field and problems[0].file is None and problems[0].line is None
    return problems[0]


# --- tables that train ---------------------------------------------------------------------------------------------------


def test_a_prompt_response_table_resolves_to_its_version_and_reads_its_rows_in_order(home):
    folder = write_table("main.demo.train", [{**r, "id": i} for i, r in enumerate(IFT_ROWS)])
    source, problems = resolve("main.demo.train")
    assert problems == []
    assert (source.kind, source.files, source.origin, source.version) == ("delta", [str(folder)], "main.demo.train", 0)
    examples = read_examples(source, IFT, "train_data_path")
    assert [e.row for e in examples] == IFT_ROWS  # the task's columns only, in the order written
    assert [e.file for e in examples[:2]] == ["table main.demo.train, row 1", "table main.demo.train, row 2"]
    assert all(e.line is None for e in examples)


def test_a_messages_table_is_chat_data(home):
    write_table("main.demo.chat", [{**r, "source": "web"} for r in CHAT_ROWS])
    source, problems = resolve("main.demo.chat", CHAT)
    assert problems == []
    assert [e.row for e in read_examples(source, CHAT, "train_data_path")] == CHAT_ROWS


def test_a_text_table_is_continued_pretraining_documents_and_blank_rows_are_skipped(home):
    write_table("main.demo.docs", [{"text": "Zorbania has three moons."}, {"text": "  "}, {"text": "Quillhaven."}])
    source, problems = resolve("main.demo.docs", CPT)
    assert problems == []
    assert [e.row for e in read_examples(source, CPT, "train_data_path")] == [
        {"text": "Zorbania has three moons."}, {"text": "Quillhaven."}]


def test_deleted_rows_stay_deleted_though_their_parquet_file_is_still_in_the_folder(home):
    """A DELETE leaves the old file in place (a 'remove' in the log): reading the folder's parquet files
    would train on the deleted row; reading through deltalake does not, with deletion vectors enabled
    too (Databricks' default for new tables; pyarrow datasets refuse such tables)."""
    for name, config in (("main.demo.deleted", None), ("main.demo.dv", {"delta.enableDeletionVectors": "true"})):
        folder = write_table(name, IFT_ROWS, configuration=config)
        deltalake.DeltaTable(str(folder)).delete(f"prompt = '{PAIRS[1][0]}'")
        raw = sum(pq.read_table(f).num_rows for f in folder.glob("*.parquet"))
        assert raw > len(IFT_ROWS) - 1  # the deleted row is still in a file of the folder
        source, problems = resolve(name)
        assert problems == [] and source.version == 1
        assert [e.row for e in read_examples(source, IFT, "train_data_path")] == IFT_ROWS[:1] + IFT_ROWS[2:]


def test_a_run_reads_the_version_it_was_accepted_with(home):
    folder = write_table("main.demo.growing", IFT_ROWS[:3])
    source, _ = resolve("main.demo.growing")
    deltalake.write_deltalake(str(folder), pa.Table.from_pylist(IFT_ROWS[3:]), mode="append")
    assert len(read_examples(source, IFT, "train_data_path")) == 3  # pinned to version 0
    again, _ = resolve("main.demo.growing")
    assert again.version == 1 and len(read_examples(again, IFT, "train_data_path")) == 6


def test_names_are_case_insensitive_as_in_unity_catalog(home):
    folder = write_table("main.demo.train", IFT_ROWS)
    source, problems = resolve("Main.DEMO.Train")
    assert problems == [] and source.files == [str(folder)] and source.origin == "Main.DEMO.Train"


def test_column_names_match_regardless_of_case_as_in_spark(home):
    write_table("main.demo.spark", [{"Prompt": p, "RESPONSE": r} for p, r in PAIRS])
    source, problems = resolve("main.demo.spark")
    assert problems == []
    assert [e.row for e in read_examples(source, IFT, "train_data_path")] == IFT_ROWS


def test_tunedeck_tables_points_the_catalog_root_elsewhere(home, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEDECK_TABLES", str(tmp_path / "catalog"))
    folder = write_table("lake.sales.train", IFT_ROWS)
    assert folder == tmp_path / "catalog" / "lake" / "sales" / "train"
    source, problems = resolve("lake.sales.train")
    assert problems == [] and source.files == [str(folder)]


# --- the same row checks as JSONL, placed by table and row ----------------------------------------------------------------


def test_bad_rows_are_named_by_table_and_row_with_the_jsonl_checks(home):
    rows = [dict(IFT_ROWS[0]), {"prompt": None, "response": "r"}, {"prompt": "p", "response": " "}, dict(IFT_ROWS[1])]
    write_table("main.demo.bad", rows)
    source, _ = resolve("main.demo.bad", field="eval_data_path")
    problems = check_data(source, IFT, "eval_data_path")
    assert [str(p) for p in problems] == [
        "eval_data_path: table main.demo.bad, row 2: 'prompt' must be a string, found null",
        "eval_data_path: table main.demo.bad, row 3: 'response' is empty: there is nothing to learn from this row",
    ]
    with pytest.raises(InvalidInputError, match=r"table main\.demo\.bad, row 2"):
        read_examples(source, IFT, "eval_data_path")


def test_bad_chat_rows_are_named_by_table_and_row(home):
    rows = [CHAT_ROWS[0], {"messages": [{"role": "user", "content": "hi"}]},
            {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}, {"messages": []}]
    write_table("main.demo.badchat", rows)
    source, _ = resolve("main.demo.badchat", CHAT)
    assert [p.message for p in check_data(source, CHAT, "train_data_path")] == [
        "table main.demo.badchat, row 2: no assistant message: the loss is computed on assistant turns, "
        "so this row teaches nothing",
        "table main.demo.badchat, row 3: messages[0]: role must be one of system, user, assistant, found 'robot'",
        "table main.demo.badchat, row 4: 'messages' must be a non-empty list, found a list",
    ]


def test_a_table_whose_every_text_is_null_says_so(home):
    write_table("main.demo.nulltext", [{"text": None}], schema=pa.schema([("text", pa.string())]))
    message = only_problem("main.demo.nulltext", CPT).message
    assert message == "table main.demo.nulltext, row 1: 'text' must be a string, found null"


# --- what cannot be read: each names the field and the table, before any run exists ----------------------------------------


def test_no_catalog_root(home):
    message = only_problem("main.demo.train").message
    assert message.startswith("table main.demo.train: the local catalog root ")
    assert str(home / "tables") in message and "TUNEDECK_TABLES" in message


def test_no_catalog_no_schema_no_table(home):
    write_table("main.demo.train", IFT_ROWS)
    assert "there is no catalog 'dev'" in only_problem("dev.demo.train").message
    assert "catalog 'main' has no schema 'other'" in only_problem("main.other.train").message
    message = only_problem("main.demo.test", field="eval_data_path").message
    assert message.startswith("table main.demo.test does not exist: schema main.demo has no table 'test'")
    assert "its tables: train" in message
    hint = only_problem("main.demo.jsonl").message  # e.g. a relative file 'main.demo.jsonl' that is not there
    assert "if 'main.demo.jsonl' is a file, pass its absolute path" in hint


def test_a_folder_that_is_not_a_delta_table(home):
    from tunedeck import config

    (config.tables_root() / "main" / "demo" / "plain").mkdir(parents=True)
    assert "is not a Delta table (it has no _delta_log folder)" in only_problem("main.demo.plain").message


def test_a_table_that_leads_to_a_pseudo_filesystem_is_not_read(home):
    """As data files: nothing under /proc, /sys or /dev is read (here a table on /dev/shm, through a symlink)."""
    import shutil
    import tempfile

    from tunedeck import config

    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm")
    target = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        (target / "_delta_log").mkdir()
        schema = config.tables_root() / "main" / "demo"
        schema.mkdir(parents=True)
        (schema / "shm").symlink_to(target)
        assert "on a system pseudo-filesystem (/proc, /sys, /dev): not read" in only_problem("main.demo.shm").message
    finally:
        shutil.rmtree(target)


def test_a_corrupt_log_is_a_problem_not_an_exception(home):
    folder = write_table("main.demo.corrupt", IFT_ROWS)
    for entry in (folder / "_delta_log").glob("*.json"):
        entry.write_text("{not json\n")
    assert only_problem("main.demo.corrupt").message.startswith("table main.demo.corrupt: cannot read it as a Delta table: ")


def test_wrong_columns_name_the_table_the_missing_column_and_the_task_that_fits(home):
    write_table("main.demo.train", IFT_ROWS)
    message = only_problem("main.demo.train", CHAT).message
    assert message.startswith("table main.demo.train has no column 'messages': this looks like INSTRUCTION_FINETUNE data")
    assert "pass task_type='INSTRUCTION_FINETUNE'" in message and "its columns: prompt string, response string" in message
    write_table("main.demo.questions", [{"question": p, "answer": r} for p, r in PAIRS])
    message = only_problem("main.demo.questions").message
    assert message.startswith("table main.demo.questions has no column 'prompt' (INSTRUCTION_FINETUNE reads string columns")
    assert "question string, answer string" in message
    assert "has no column 'text'" in only_problem("main.demo.questions", CPT).message


def test_wrong_column_types(home):
    write_table("main.demo.numbers", [{"prompt": 1, "response": "r"}])
    assert only_problem("main.demo.numbers").message == (
        "table main.demo.numbers: column 'prompt' is long; INSTRUCTION_FINETUNE reads it as string")
    write_table("main.demo.flat", [{"messages": ["hi", "there"]}])
    assert only_problem("main.demo.flat", CHAT).message == (
        "table main.demo.flat: column 'messages' is array<string>; CHAT_COMPLETION reads "
        "array<struct<role: string, content: string>>")
    write_table("main.demo.intcontent", [{"messages": [{"role": "user", "content": 3}]}])
    assert "has content of type long" in only_problem("main.demo.intcontent", CHAT).message


def test_an_empty_table(home):
    schema = pa.schema([("prompt", pa.string()), ("response", pa.string())])
    write_table("main.demo.empty", [], schema=schema)
    assert only_problem("main.demo.empty").message == "table main.demo.empty is empty: version 0 has no rows"
    folder = write_table("main.demo.emptied", IFT_ROWS)
    deltalake.DeltaTable(str(folder)).delete()
    assert only_problem("main.demo.emptied").message == "table main.demo.emptied is empty: version 1 has no rows"


def test_a_data_file_gone_after_the_table_was_resolved(home):
    folder = write_table("main.demo.vacuumed", IFT_ROWS)
    source, _ = resolve("main.demo.vacuumed")
    for f in folder.glob("*.parquet"):
        f.unlink()
    message = check_data(source, IFT, "train_data_path")[0].message
    assert message.startswith("table main.demo.vacuumed: cannot read its rows: ")


# --- the notebook side and the light layers ----------------------------------------------------------------------------


def test_create_passes_a_table_name_through_and_a_local_file_of_that_name_as_a_path(home, tmp_path, monkeypatch):
    from tunedeck import foundation_model as fm

    monkeypatch.chdir(tmp_path)
    assert fm._data_path("main.demo.train") == "main.demo.train"
    (tmp_path / "main.demo.jsonl").write_text("{}\n")
    assert fm._data_path("main.demo.jsonl") == str(tmp_path / "main.demo.jsonl")


def test_deltalake_is_imported_only_when_a_table_is_read():
    code = ("import sys, tunedeck, tunedeck.inputs.validate, tunedeck.inputs.datasets, tunedeck.inputs.tables; "
            "print(sorted(m for m in ('deltalake', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
