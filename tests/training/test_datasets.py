"""Data readers: every malformed input names the create() parameter, the file and the line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunedeck.errors import InvalidInputError
from tunedeck.inputs.datasets import check_data, load_examples
from tunedeck.inputs.spec import DataSource

from .conftest import CHATS, write_jsonl

IFT = "INSTRUCTION_FINETUNE"
CHAT = "CHAT_COMPLETION"
CPT = "CONTINUED_PRETRAIN"
GOOD_IFT = {"prompt": "Q?", "response": "A."}


def jsonl(tmp_path: Path, lines: list[str], name: str = "train.jsonl") -> DataSource:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return DataSource("jsonl", [str(path)], str(path))


def only(problems):
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.parametrize(
    "task, line, expected",
    [
        (IFT, '{"prompt": "Q?", "response": "A."', "not valid JSON"),
        (IFT, '["prompt", "response"]', "must be a JSON object, found a list"),
        (IFT, '{"prompt": "Q?"}', "missing 'response'"),
        (IFT, '{"prompt": "Q?", "response": 42}', "'response' must be a string, found a number"),
        (IFT, '{"prompt": null, "response": "A"}', "'prompt' must be a string, found null"),
        (IFT, '{"prompt": "Q?", "response": "  "}', "'response' is empty"),
        (IFT, json.dumps(CHATS[0]), "pass task_type='CHAT_COMPLETION'"),
        (CHAT, json.dumps(GOOD_IFT), "pass task_type='INSTRUCTION_FINETUNE'"),
        (CHAT, '{"text": "hello"}', "missing 'messages'"),
        (CHAT, '{"messages": "hi"}', "'messages' must be a non-empty list, found a string"),
        (CHAT, '{"messages": []}', "'messages' must be a non-empty list"),
        (CHAT, '{"messages": [{"role": "bot", "content": "x"}]}', "messages[0]: role must be one of system, user, assistant, found 'bot'"),
        (CHAT, '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ["a"]}]}', "messages[1]: 'content' must be a string"),
        (CHAT, '{"messages": [{"role": "user", "content": "x"}]}', "no assistant message"),
        (CHAT, '{"messages": ["hi"]}', "messages[0] must be an object"),
    ],
)
def test_bad_row_names_field_file_and_line(tmp_path, task, line, expected):
    good = json.dumps(GOOD_IFT if task == IFT else CHATS[1])
    source = jsonl(tmp_path, [good, "", line, good])  # the bad row is on line 3 (line 2 is blank)
    problem = only(check_data(source, task, "train_data_path"))
    assert problem.field == "train_data_path"
    assert problem.file == source.files[0]
    assert problem.line == 3
    assert expected in problem.message
    assert f"{source.files[0]}, line 3" in str(problem)


def test_good_rows_load_and_blank_lines_are_skipped(tmp_path):
    source = jsonl(tmp_path, [json.dumps(c) for c in CHATS[:2]] + ["", "   "])
    assert check_data(source, CHAT, "train_data_path") == []
    rows = load_examples(source, CHAT, "train_data_path")
    assert rows == [{"messages": c["messages"]} for c in CHATS[:2]]


def test_extra_keys_are_dropped_from_loaded_rows(tmp_path):
    source = jsonl(tmp_path, [json.dumps({"prompt": "Q", "response": "A", "id": 7})])
    assert load_examples(source, IFT, "train_data_path") == [{"prompt": "Q", "response": "A"}]


def test_empty_file(tmp_path):
    source = jsonl(tmp_path, ["", ""])
    problem = only(check_data(source, IFT, "eval_data_path"))
    assert (problem.field, problem.file, problem.line) == ("eval_data_path", source.files[0], None)
    assert "empty" in problem.message


def test_not_utf8(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"prompt": "caf\xe9", "response": "x"}\n')
    problem = only(check_data(DataSource("jsonl", [str(path)], str(path)), IFT, "train_data_path"))
    assert "not UTF-8" in problem.message and problem.file == str(path)


def test_stops_after_max_problems_and_load_raises_them(tmp_path):
    source = jsonl(tmp_path, ["{bad"] * 20)
    assert [p.line for p in check_data(source, IFT, "train_data_path", max_problems=3)] == [1, 2, 3]
    with pytest.raises(InvalidInputError) as caught:
        load_examples(source, IFT, "train_data_path")
    assert len(caught.value.problems) == 5
    assert caught.value.problems[0].line == 1 and "train_data_path" in str(caught.value)


def test_problems_across_several_files_name_each_file(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [GOOD_IFT])
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps(GOOD_IFT) + "\n" + '{"prompt": 1, "response": "x"}\n')
    problem = only(check_data(DataSource("jsonl", [str(a), str(b)], "data/"), IFT, "train_data_path"))
    assert (problem.file, problem.line) == (str(b), 2)


def test_no_files(tmp_path):
    problem = only(check_data(DataSource("jsonl", [], "missing/"), IFT, "train_data_path"))
    assert "no data files" in problem.message and "missing/" in problem.message


def test_parquet_rows_use_row_numbers(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b", "c"], "response": ["x", "y", ""]}), path)
    source = DataSource("parquet", [str(path)], "org/name/train")
    problem = only(check_data(source, IFT, "train_data_path"))
    assert (problem.file, problem.line) == (str(path), 3)
    assert problem.message.startswith("row 3:") and "empty" in problem.message

    chat_path = tmp_path / "chat.parquet"
    pq.write_table(pa.Table.from_pylist([{"messages": c["messages"]} for c in CHATS[:3]]), chat_path)
    rows = load_examples(DataSource("parquet", [str(chat_path)], "org/chat/train"), CHAT, "train_data_path")
    assert rows == [{"messages": c["messages"]} for c in CHATS[:3]]


def test_continued_pretrain_reads_txt_documents(tmp_path):
    (tmp_path / "a.txt").write_text("First document.")
    (tmp_path / "b.txt").write_text("")
    files = [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    assert load_examples(DataSource("txt", files, str(tmp_path)), CPT, "train_data_path") == [{"text": "First document."}]


def test_continued_pretrain_problems(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    problem = only(check_data(DataSource("txt", [str(tmp_path / "empty.txt")], str(tmp_path)), CPT, "train_data_path"))
    assert "no non-empty .txt file" in problem.message and problem.file == str(tmp_path / "empty.txt")

    source = jsonl(tmp_path, [json.dumps(GOOD_IFT)])
    problem = only(check_data(source, CPT, "train_data_path"))
    assert "folder of .txt files" in problem.message and problem.file == source.files[0]

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"line one\nline two \xff\n")
    problem = only(check_data(DataSource("txt", [str(bad)], str(tmp_path)), CPT, "train_data_path"))
    assert "not UTF-8" in problem.message and (problem.file, problem.line) == (str(bad), 2)


def test_txt_folder_under_a_row_task_suggests_continued_pretrain(tmp_path):
    (tmp_path / "a.txt").write_text("text")
    problem = only(check_data(DataSource("txt", [str(tmp_path / "a.txt")], str(tmp_path)), IFT, "train_data_path"))
    assert "CONTINUED_PRETRAIN" in problem.message


def test_module_stays_light():
    code = "import sys, tunedeck.inputs.datasets; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
