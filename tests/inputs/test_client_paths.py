"""foundation_model.create()/check_inputs() send absolute paths: a relative local path is resolved against
the caller's working directory, which the service (refusing relative paths) cannot know."""

from __future__ import annotations

import pytest

from tunedeck import foundation_model as fm


class Recorder:
    def __init__(self):
        self.sent = []

    def create_run(self, params):
        self.sent.append(params)
        return None

    def validate(self, params):
        self.sent.append(params)
        return []


@pytest.fixture
def client(monkeypatch, tmp_path):
    recorder = Recorder()
    monkeypatch.setattr(fm, "get_client", lambda: recorder)
    monkeypatch.chdir(tmp_path)
    return recorder


def test_relative_local_paths_become_absolute(client, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("{}\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    fm.create(model="model", train_data_path="data/train.jsonl", register_to="main.t",
              eval_data_path="./data/eval.jsonl", custom_weights_path="ckpt/latest-sharded-rank0.symlink")
    sent = client.sent[-1]
    assert sent["model"] == str(tmp_path / "model")
    assert sent["train_data_path"] == str(tmp_path / "data" / "train.jsonl")
    assert sent["eval_data_path"] == str(tmp_path / "data" / "eval.jsonl")  # missing: the service says so, by its full path
    assert sent["custom_weights_path"] == str(tmp_path / "ckpt" / "latest-sharded-rank0.symlink")
    fm.check_inputs("model", "data/train.jsonl", "main.t", eval_data_path="e.jsonl")
    assert client.sent[-1]["train_data_path"] == str(tmp_path / "data" / "train.jsonl")
    assert client.sent[-1]["eval_data_path"] == str(tmp_path / "e.jsonl")


def test_names_and_remote_paths_are_sent_as_given(client, tmp_path):
    fm.create(model="SmolLM2-135M-Instruct", train_data_path="mosaicml/dolly_hhrlhf/train", register_to="main.t",
              eval_data_path="dbfs:/Volumes/main/x/y/eval.jsonl")
    sent = client.sent[-1]
    assert sent["model"] == "SmolLM2-135M-Instruct"
    assert sent["train_data_path"] == "mosaicml/dolly_hhrlhf/train"
    assert sent["eval_data_path"] == "dbfs:/Volumes/main/x/y/eval.jsonl"
    fm.create(model="m", train_data_path="/abs/train.jsonl", register_to="main.t")
    assert client.sent[-1]["train_data_path"] == "/abs/train.jsonl"
    fm.create(model="m", train_data_path="main.schema.table", register_to="main.t")
    assert client.sent[-1]["train_data_path"] == "main.schema.table"


def test_tilde_is_the_callers_home(client, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    fm.create(model="m", train_data_path="~/train.jsonl", register_to="main.t")
    assert client.sent[-1]["train_data_path"] == str(tmp_path / "me" / "train.jsonl")


def test_eval_prompts_dict_is_not_turned_into_its_keys(client):
    fm.create(model="m", train_data_path="/t.jsonl", register_to="main.t", eval_prompts={"a": "b"})
    assert client.sent[-1]["eval_prompts"] == {"a": "b"}  # sent as is: the service refuses it by name
    fm.create(model="m", train_data_path="/t.jsonl", register_to="main.t", eval_prompts=("q1", "q2"))
    assert client.sent[-1]["eval_prompts"] == ["q1", "q2"]
