"""Hostile inputs: each is refused with a clear Problem naming the parameter (and file/line where one is
involved), never accepted, never a hang and never an exception out of the service.

Most cases go through the real RunService.validate (build_spec with the data check), the HTTP ones
through the real FastAPI app; a FIFO data path answers within 2 s and leaves /api/health free; and a
model whose weights do not match its config fails loading with the reason instead of training from
random weights.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pytest
from fastapi.testclient import TestClient

from tunedeck.inputs.validate import RunRequest
from tunedeck.service.app import create_app
from tunedeck.service.core import RunService
from tunedeck.service.store import Store

TOKEN = "test-token"
IFT = "INSTRUCTION_FINETUNE"
CHAT = "CHAT_COMPLETION"
CPT = "CONTINUED_PRETRAIN"
GOOD_ROW = {"prompt": "What is 2+2?", "response": "4"}
GOOD_CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def _rows(*rows: Any) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    """Every hostile file, folder and model this module needs, built once."""
    from safetensors.torch import load_file, save_file

    from tunedeck.training.tiny import build_tiny_model

    z = tmp_path_factory.mktemp("zoo")
    p: dict[str, Path] = {"root": z}
    p["good"] = _write(z / "good.jsonl", _rows(GOOD_ROW, GOOD_ROW))
    p["good_chat"] = _write(z / "chat.jsonl", _rows(GOOD_CHAT, GOOD_CHAT))
    p["fifo"] = z / "pipe.jsonl"
    os.mkfifo(p["fifo"])
    p["fifo_txt"] = z / "cpt-fifo" / "a.txt"
    p["fifo_txt"].parent.mkdir()
    os.mkfifo(p["fifo_txt"])
    p["fifo_in_folder"] = z / "folder-with-fifo"
    p["fifo_in_folder"].mkdir()
    os.mkfifo(p["fifo_in_folder"] / "rows.jsonl")
    p["socket"] = z / "sock.jsonl"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(p["socket"]))
    server.close()
    p["loop"] = z / "loop.jsonl"
    os.symlink(z / "loop2.jsonl", p["loop"])
    os.symlink(p["loop"], z / "loop2.jsonl")
    p["to_zero"] = z / "zero.jsonl"
    os.symlink("/dev/zero", p["to_zero"])
    p["to_fifo"] = z / "to-pipe.jsonl"
    os.symlink(p["fifo"], p["to_fifo"])
    p["txt"] = _write(z / "notes.txt", "a document")
    p["py"] = _write(z / "script.py", "print('hi')\n")
    p["empty_folder"] = z / "empty-folder"
    p["empty_folder"].mkdir()
    p["empty"] = _write(z / "empty.jsonl", "\n\n")
    p["deep"] = _write(z / "deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n")
    p["bigint"] = _write(z / "bigint.jsonl", '{"prompt": "p", "response": ' + "9" * 5000 + "}\n")
    p["binary"] = _write(z / "binary.jsonl", b'{"prompt": "a", "response": "b"}\n\xff\xfe\x00garbage\n')
    p["notjson"] = _write(z / "notjson.jsonl", _rows(GOOD_ROW, "{oops"))
    p["array"] = _write(z / "array.jsonl", _rows(["prompt", "response"]))
    p["missing"] = _write(z / "missing.jsonl", _rows({"prompt": "p"}))
    p["nonstr"] = _write(z / "nonstr.jsonl", _rows({"prompt": "p", "response": 4}))
    p["empty_response"] = _write(z / "empty-response.jsonl", _rows(GOOD_ROW, {"prompt": "p", "response": " "}))
    p["empty_assistant"] = _write(z / "empty-assistant.jsonl", _rows(GOOD_CHAT, {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]}))
    p["blank_assistant"] = _write(z / "blank-assistant.jsonl", _rows({"messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "More"}, {"role": "assistant", "content": " \n "}]}))
    p["huge_role"] = _write(z / "huge-role.jsonl", _rows({"messages": [{"role": "x" * 100_000, "content": "c"}]}))
    p["no_assistant"] = _write(z / "no-assistant.jsonl", _rows({"messages": [{"role": "user", "content": "Hi"}]}))
    p["messages_str"] = _write(z / "messages-str.jsonl", _rows({"messages": "hi"}))
    p["content_dict"] = _write(z / "content-dict.jsonl", _rows({"messages": [{"role": "user", "content": {"a": 1}}, {"role": "assistant", "content": "x"}]}))
    p["secret_keys"] = _write(z / "config.jsonl", _rows({"k" * 10_000: "secret-value-1234"}))
    p["latin1_txt"] = _write(z / "cpt-latin1" / "a.txt", b"caf\xe9\n")
    p["cpt_empty"] = _write(z / "cpt-empty" / "a.txt", "   \n")

    # Models: a tiny Llama, the same without a chat template, with a FIFO inside, with a BERT config
    # over the Llama weights, and with weights whose tensors match nothing of the Llama.
    tiny = build_tiny_model(z / "models" / "tiny", ["hello world", GOOD_ROW["prompt"]])
    p["model"] = tiny
    p["no_template"] = z / "models" / "no-template"
    shutil.copytree(tiny, p["no_template"])
    (p["no_template"] / "chat_template.jinja").unlink()
    p["model_fifo"] = z / "models" / "with-fifo"
    shutil.copytree(tiny, p["model_fifo"])
    os.mkfifo(p["model_fifo"] / "tokenizer.model")
    p["bert_config"] = z / "models" / "bert-config"
    shutil.copytree(tiny, p["bert_config"])
    (p["bert_config"] / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertLMHeadModel"], "is_decoder": True, "vocab_size": 512,
        "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
        "max_position_embeddings": 512,
    }))
    p["renamed"] = z / "models" / "renamed"
    shutil.copytree(tiny, p["renamed"])
    tensors = load_file(p["renamed"] / "model.safetensors")
    save_file({f"encoder.block_{k}": v for k, v in tensors.items()}, p["renamed"] / "model.safetensors")
    p["config_list"] = z / "models" / "config-list"
    shutil.copytree(tiny, p["config_list"])
    (p["config_list"] / "config.json").write_text("[1, 2, 3]")
    p["config_deep"] = z / "models" / "config-deep"
    shutil.copytree(tiny, p["config_deep"])
    (p["config_deep"] / "config.json").write_text("[" * 50_000 + "]" * 50_000)
    p["config_fifo"] = z / "models" / "config-fifo"
    shutil.copytree(tiny, p["config_fifo"])
    (p["config_fifo"] / "config.json").unlink()
    os.mkfifo(p["config_fifo"] / "config.json")

    # Checkpoints for custom_weights_path.
    p["ckpt_renamed"] = p["renamed"]
    p["ckpt_fifo"] = p["model_fifo"]
    p["symlink_nul"] = _write(z / "ckpt" / "latest.symlink", "ep0-ba1\x00../../etc")
    p["symlink_fifo"] = z / "ckpt" / "pipe.symlink"
    os.mkfifo(p["symlink_fifo"])
    return p


@pytest.fixture
def service(home):
    home.mkdir(parents=True, exist_ok=True)
    svc = RunService(Store(home / "tunedeck.db"))
    yield svc
    svc.store.close()


# Each case: (id, request fields (values may be callables of the zoo), field, text in the message, where)
# where: None, "file" (problem.file is the named zoo path) or ("file", zoo key, line).
Case = tuple[str, dict[str, Any], str, str, Any]


def z(key: str, suffix: str = "") -> Callable[[dict], str]:
    return lambda zoo: str(zoo[key]) + suffix


CASES: list[Case] = [
    # --- train_data_path: escapes, relative paths, odd characters, OS errors -----------------------
    ("volumes-dotdot", {"train_data_path": "dbfs:/Volumes/../../x"}, "train_data_path", "'..' may not appear", None),
    ("volumes-dotdot-deep", {"train_data_path": "dbfs:/Volumes/a/b/../../../../etc/x.jsonl"}, "train_data_path", "'..' may not appear", None),
    ("volumes-plain-dotdot", {"train_data_path": "/Volumes/main/../../../etc/passwd"}, "train_data_path", "'..' may not appear", None),
    ("dbfs-not-volumes", {"train_data_path": "dbfs:/tmp/x.jsonl"}, "train_data_path", "only dbfs:/Volumes", None),
    ("relative", {"train_data_path": "relative/train.jsonl"}, "train_data_path", "relative path", None),
    ("relative-dot", {"train_data_path": "./train.jsonl"}, "train_data_path", "relative path", None),
    ("relative-dotdot", {"train_data_path": "../train.jsonl"}, "train_data_path", "relative path", None),
    ("relative-bare", {"train_data_path": "train.jsonl"}, "train_data_path", "relative path", None),
    ("tilde-no-user", {"train_data_path": "~nosuchuser-xyz/x.jsonl"}, "train_data_path", "cannot expand", None),
    ("nul-byte", {"train_data_path": "/tmp/x\x00y.jsonl"}, "train_data_path", "control character", None),
    ("newline", {"train_data_path": "/tmp/x\ny.jsonl"}, "train_data_path", "control character", None),
    ("path-5000-chars", {"train_data_path": "/" + "a" * 5000}, "train_data_path", "characters long", None),
    ("name-too-long", {"train_data_path": "/tmp/" + "a" * 300 + ".jsonl"}, "train_data_path", "File name too long", None),
    ("fifo", {"train_data_path": z("fifo")}, "train_data_path", "named pipe", "file"),
    ("symlink-to-fifo", {"train_data_path": z("to_fifo")}, "train_data_path", "named pipe", "file"),
    ("socket", {"train_data_path": z("socket")}, "train_data_path", "socket", "file"),
    ("symlink-loop", {"train_data_path": z("loop")}, "train_data_path", "symbolic links", None),
    ("dev-zero", {"train_data_path": "/dev/zero"}, "train_data_path", "/proc, /sys or /dev", None),
    ("dev-null", {"train_data_path": "/dev/null"}, "train_data_path", "/proc, /sys or /dev", None),
    ("symlink-to-dev-zero", {"train_data_path": z("to_zero")}, "train_data_path", "/proc, /sys or /dev", None),
    ("proc-environ", {"train_data_path": "/proc/self/environ"}, "train_data_path", "/proc, /sys or /dev", None),
    ("proc-status", {"train_data_path": "/proc/self/status"}, "train_data_path", "/proc, /sys or /dev", None),
    ("etc-passwd", {"train_data_path": "/etc/passwd"}, "train_data_path", "rows from .jsonl files", None),
    ("txt-as-rows", {"train_data_path": z("txt")}, "train_data_path", "CONTINUED_PRETRAIN", "file"),
    ("python-file", {"train_data_path": z("py")}, "train_data_path", "is neither", "file"),
    ("empty-folder", {"train_data_path": z("empty_folder")}, "train_data_path", "no .jsonl", "file"),
    ("fifo-in-folder", {"train_data_path": z("fifo_in_folder")}, "train_data_path", "no .jsonl", "file"),
    ("missing-file", {"train_data_path": "/nonexistent/train.jsonl"}, "train_data_path", "does not exist", None),
    ("missing-volume", {"train_data_path": "dbfs:/Volumes/a/b/c/train.jsonl"}, "train_data_path", "TUNEDECK_VOLUMES", None),
    ("hf-not-cached", {"train_data_path": "org/name/train"}, "train_data_path", "not in the local cache", None),
    ("hf-dotdot", {"train_data_path": "org/../train"}, "train_data_path", "'..' is not a dataset name", None),
    ("uc-table-missing", {"train_data_path": "main.schema.table"}, "train_data_path", "table main.schema.table", None),
    ("empty-path", {"train_data_path": ""}, "train_data_path", "required", None),
    ("blank-path", {"train_data_path": "   "}, "train_data_path", "required", None),
    ("path-not-string", {"train_data_path": 42}, "train_data_path", "must be a string", None),
    # --- train_data_path: contents ----------------------------------------------------------------
    ("empty-file", {"train_data_path": z("empty")}, "train_data_path", "empty", ("file", "empty", None)),
    ("deep-json-line", {"train_data_path": z("deep")}, "train_data_path", "nested too deeply", ("file", "deep", 1)),
    ("5000-digit-int", {"train_data_path": z("bigint")}, "train_data_path", "not valid JSON", ("file", "bigint", 1)),
    ("binary-line", {"train_data_path": z("binary")}, "train_data_path", "not UTF-8", ("file", "binary", 2)),
    ("not-json-line", {"train_data_path": z("notjson")}, "train_data_path", "not valid JSON", ("file", "notjson", 2)),
    ("array-row", {"train_data_path": z("array")}, "train_data_path", "must be a JSON object", ("file", "array", 1)),
    ("missing-response", {"train_data_path": z("missing")}, "train_data_path", "missing 'response'", ("file", "missing", 1)),
    ("response-number", {"train_data_path": z("nonstr")}, "train_data_path", "must be a string", ("file", "nonstr", 1)),
    ("empty-response", {"train_data_path": z("empty_response")}, "train_data_path", "'response' is empty", ("file", "empty_response", 2)),
    ("secret-keys-not-echoed", {"train_data_path": z("secret_keys")}, "train_data_path", "missing 'prompt'", ("file", "secret_keys", 1)),
    ("chat-empty-assistant", {"train_data_path": z("empty_assistant"), "task_type": CHAT}, "train_data_path", "messages[1]: the assistant's 'content' is empty", ("file", "empty_assistant", 2)),
    ("chat-blank-assistant", {"train_data_path": z("blank_assistant"), "task_type": CHAT}, "train_data_path", "messages[3]: the assistant's 'content' is empty", ("file", "blank_assistant", 1)),
    ("chat-huge-role", {"train_data_path": z("huge_role"), "task_type": CHAT}, "train_data_path", "role must be one of", ("file", "huge_role", 1)),
    ("chat-no-assistant", {"train_data_path": z("no_assistant"), "task_type": CHAT}, "train_data_path", "no assistant message", ("file", "no_assistant", 1)),
    ("chat-messages-string", {"train_data_path": z("messages_str"), "task_type": CHAT}, "train_data_path", "non-empty list", ("file", "messages_str", 1)),
    ("chat-content-object", {"train_data_path": z("content_dict"), "task_type": CHAT}, "train_data_path", "'content' must be a string", ("file", "content_dict", 1)),
    ("ift-data-as-chat", {"train_data_path": z("good"), "task_type": CHAT}, "train_data_path", "INSTRUCTION_FINETUNE", ("file", "good", 1)),
    # --- eval_data_path ----------------------------------------------------------------------------
    ("eval-fifo", {"eval_data_path": z("fifo")}, "eval_data_path", "named pipe", "file"),
    ("eval-relative", {"eval_data_path": "eval.jsonl"}, "eval_data_path", "relative path", None),
    ("eval-volumes-dotdot", {"eval_data_path": "/Volumes/../x.jsonl"}, "eval_data_path", "'..' may not appear", None),
    ("eval-dev-zero", {"eval_data_path": "/dev/zero"}, "eval_data_path", "/proc, /sys or /dev", None),
    ("eval-not-json", {"eval_data_path": z("notjson")}, "eval_data_path", "not valid JSON", ("file", "notjson", 2)),
    # --- CONTINUED_PRETRAIN ------------------------------------------------------------------------
    ("cpt-only-fifo", {"train_data_path": lambda zoo: str(zoo["fifo_txt"].parent), "task_type": CPT}, "train_data_path", "none found", None),
    ("cpt-jsonl-file", {"train_data_path": z("good"), "task_type": CPT}, "train_data_path", "not a .txt file", "file"),
    ("cpt-dev-zero", {"train_data_path": "/dev/zero", "task_type": CPT}, "train_data_path", "/proc, /sys or /dev", None),
    ("cpt-proc-folder", {"train_data_path": "/proc/self", "task_type": CPT}, "train_data_path", "/proc, /sys or /dev", None),
    ("cpt-fifo-file", {"train_data_path": z("fifo_txt"), "task_type": CPT}, "train_data_path", "named pipe", "file"),
    ("cpt-not-utf8", {"train_data_path": lambda zoo: str(zoo["latin1_txt"].parent), "task_type": CPT}, "train_data_path", "not UTF-8", ("file", "latin1_txt", 1)),
    ("cpt-empty-docs", {"train_data_path": lambda zoo: str(zoo["cpt_empty"].parent), "task_type": CPT}, "train_data_path", "no non-empty .txt", None),
    # --- model -----------------------------------------------------------------------------------
    ("model-relative", {"model": "../models/tiny"}, "model", "absolute path", None),
    ("model-missing", {"model": "/nonexistent/model"}, "model", "not available", None),
    ("model-empty", {"model": ""}, "model", "not available", None),
    ("model-nul", {"model": "/tmp/m\x00"}, "model", "not available", None),
    ("model-5000-chars", {"model": "m" * 5000}, "model", "characters long", None),
    ("model-not-string", {"model": 123}, "model", "must be a string", None),
    ("model-config-list", {"model": z("config_list")}, "model", "not available", None),
    ("model-config-deep", {"model": z("config_deep")}, "model", "not available", None),
    ("model-config-fifo", {"model": z("config_fifo")}, "model", "not available", None),
    ("model-fifo-inside", {"model": z("model_fifo")}, "model", "named pipe", "file"),
    ("model-bert-config-llama-weights", {"model": z("bert_config")}, "model", "do not belong to the 'bert' architecture", "file"),
    ("model-renamed-tensors", {"model": z("renamed")}, "model", "none of their", "file"),
    ("chat-without-template", {"model": z("no_template"), "task_type": CHAT, "train_data_path": z("good_chat")}, "task_type", "INSTRUCTION_FINETUNE", "file"),
    ("context-above-model", {"context_length": 4096}, "context_length", "maximum context length", None),
    # --- custom_weights_path -----------------------------------------------------------------------
    ("weights-relative", {"custom_weights_path": "ckpt/ep1-ba10"}, "custom_weights_path", "relative path", None),
    ("weights-missing", {"custom_weights_path": "/nonexistent/ckpt"}, "custom_weights_path", "not a checkpoint folder", None),
    ("weights-dev-zero", {"custom_weights_path": "/dev/zero"}, "custom_weights_path", "not a checkpoint folder", None),
    ("weights-volumes-dotdot", {"custom_weights_path": "dbfs:/Volumes/../../ckpt"}, "custom_weights_path", "'..' may not appear", None),
    ("weights-renamed", {"custom_weights_path": z("ckpt_renamed")}, "custom_weights_path", "none of their", "file"),
    ("weights-fifo-inside", {"custom_weights_path": z("ckpt_fifo")}, "custom_weights_path", "named pipe", "file"),
    ("weights-symlink-nul", {"custom_weights_path": z("symlink_nul")}, "custom_weights_path", "does not name a checkpoint", None),
    ("weights-symlink-fifo", {"custom_weights_path": z("symlink_fifo")}, "custom_weights_path", "not a checkpoint folder", None),
    ("weights-name-too-long", {"custom_weights_path": "/tmp/" + "c" * 300}, "custom_weights_path", "File name too long", None),
    # --- register_to -----------------------------------------------------------------------------
    ("register-one-part", {"register_to": "main"}, "register_to", "is not '<catalog>.<schema>'", None),
    ("register-four-parts", {"register_to": "a.b.c.d"}, "register_to", "is not '<catalog>.<schema>'", None),
    ("register-slash", {"register_to": "a.b/c"}, "register_to", "is not '<catalog>.<schema>'", None),
    ("register-dotdot", {"register_to": "../x.y"}, "register_to", "is not '<catalog>.<schema>'", None),
    ("register-5000-chars", {"register_to": "a.b." + "c" * 5000}, "register_to", "characters long", None),
    ("register-300-chars", {"register_to": "a.b." + "c" * 300}, "register_to", "at most 255", None),
    ("register-long-part", {"register_to": "a.b." + "c" * 200}, "register_to", "at most 128", None),
    ("register-nul", {"register_to": "a.b\x00"}, "register_to", "is not '<catalog>.<schema>'", None),
    ("register-empty", {"register_to": ""}, "register_to", "is not '<catalog>.<schema>'", None),
    ("register-space", {"register_to": "a.b c"}, "register_to", "is not '<catalog>.<schema>'", None),
    ("register-unicode", {"register_to": "\u00e4.b"}, "register_to", "is not '<catalog>.<schema>'", None),
    ("register-not-string", {"register_to": ["a", "b"]}, "register_to", "must be a string", None),
    # --- experiment_path and created_by ---------------------------------------------------------------
    ("experiment-escape", {"experiment_path": "/../../../tmp/x"}, "experiment_path", "'..' part", None),
    ("experiment-inner-dotdot", {"experiment_path": "/Users/me/../../x"}, "experiment_path", "'..' part", None),
    ("experiment-double-slash", {"experiment_path": "/a//b"}, "experiment_path", "empty", None),
    ("experiment-dot", {"experiment_path": "/a/./b"}, "experiment_path", "'.'", None),
    ("experiment-nul", {"experiment_path": "/x\x00"}, "experiment_path", "control character", None),
    ("experiment-backslash", {"experiment_path": "/a\\..\\b"}, "experiment_path", "backslash", None),
    ("experiment-600-chars", {"experiment_path": "/" + "e" * 600}, "experiment_path", "at most 500", None),
    ("experiment-long-part", {"experiment_path": "/Users/" + "e" * 250}, "experiment_path", "longer than 200 bytes", None),
    ("experiment-root", {"experiment_path": "/"}, "experiment_path", "names no experiment", None),
    ("experiment-blank", {"experiment_path": "  "}, "experiment_path", "empty", None),
    ("experiment-leading-space", {"experiment_path": " /a"}, "experiment_path", "white space", None),
    ("experiment-not-string", {"experiment_path": {"a": 1}}, "experiment_path", "must be a string", None),
    ("created-by-dotdot", {"created_by": ".."}, "created_by", "not a user name", None),
    ("created-by-slash", {"created_by": "../../etc"}, "created_by", "not a user name", None),
    ("created-by-long", {"created_by": "u" * 500}, "created_by", "at most 128", None),
    ("created-by-nul", {"created_by": "me\x00"}, "created_by", "not a user name", None),
    # --- durations, learning rate, context length, task type -------------------------------------------
    ("epochs-1e10", {"training_duration": "10000000000ep"}, "training_duration", "limit of 1,000ep", None),
    ("batches-over", {"training_duration": "1000001ba"}, "training_duration", "limit of 1,000,000ba", None),
    ("tokens-over", {"training_duration": "2_000_000_000_000tok"}, "training_duration", "limit of 1,000,000,000,000tok", None),
    ("zero-epochs", {"training_duration": "0ep"}, "training_duration", "greater than zero", None),
    ("words", {"training_duration": "ten epochs"}, "training_duration", "not a duration", None),
    ("5000-digit-duration", {"training_duration": "1" * 5000 + "ep"}, "training_duration", "characters long", None),
    ("30-digit-duration", {"training_duration": "1" * 30 + "ep"}, "training_duration", "limit of 1,000ep", None),
    ("negative-duration", {"training_duration": "-1ep"}, "training_duration", "not a duration", None),
    ("fractional-duration", {"training_duration": "1.5ep"}, "training_duration", "not a duration", None),
    ("duration-list", {"training_duration": [1]}, "training_duration", "must be a string", None),
    ("lr-word", {"learning_rate": "fast"}, "learning_rate", "not a number", None),
    ("lr-zero", {"learning_rate": 0}, "learning_rate", "out of range", None),
    ("lr-five", {"learning_rate": 5}, "learning_rate", "out of range", None),
    ("lr-nan", {"learning_rate": "nan"}, "learning_rate", "out of range", None),
    ("lr-inf", {"learning_rate": "inf"}, "learning_rate", "out of range", None),
    ("lr-100-digits", {"learning_rate": "1" * 100}, "learning_rate", "not a number", None),
    ("lr-bool", {"learning_rate": True}, "learning_rate", "not a number", None),
    ("context-4", {"context_length": 4}, "context_length", "at least 8", None),
    ("context-1e9", {"context_length": 10**9}, "context_length", "limit of 1,048,576", None),
    ("context-word", {"context_length": "12abc"}, "context_length", "not a whole number", None),
    ("context-5000-digits", {"context_length": "1" * 5000}, "context_length", "not a whole number", None),
    ("context-float", {"context_length": 2.5}, "context_length", "not a whole number", None),
    ("task-bogus", {"task_type": "BOGUS"}, "task_type", "not a task type", None),
    ("task-number", {"task_type": 5}, "task_type", "must be", None),
    ("validate-inputs-string", {"validate_inputs": "yes"}, "validate_inputs", "true or false", None),
    # --- eval_prompts -------------------------------------------------------------------------------
    ("prompts-dict", {"eval_prompts": {"a": "b"}}, "eval_prompts", "an object (a dict)", None),
    ("prompts-numbers", {"eval_prompts": [1, 2]}, "eval_prompts", "non-string", None),
    ("prompts-101", {"eval_prompts": ["q"] * 101}, "eval_prompts", "at most 100", None),
    ("prompts-30000-chars", {"eval_prompts": ["x" * 30_000]}, "eval_prompts", "at most 20,000", None),
    ("prompts-empty-string", {"eval_prompts": [""]}, "eval_prompts", "empty", None),
    ("prompts-number", {"eval_prompts": 7}, "eval_prompts", "a number", None),
    # --- adapter ------------------------------------------------------------------------------------
    ("adapter-name", {"adapter": "bogus"}, "adapter", "not an adapter", None),
    ("adapter-rank-0", {"adapter": {"rank": 0}}, "adapter", "rank 0", None),
    ("adapter-rank-huge", {"adapter": {"rank": 10**20}}, "adapter", "1 to 1024", None),
    ("adapter-type", {"adapter": {"type": "ia3"}}, "adapter", "only 'lora'", None),
    ("adapter-unknown-key", {"adapter": {"foo": 1}}, "adapter", "unknown LoRA setting", None),
    ("adapter-module-path", {"adapter": {"target_modules": ["../x"]}}, "adapter", "target_modules", None),
    ("adapter-dropout", {"adapter": {"dropout": 1.5}}, "adapter", "dropout", None),
    ("adapter-quantize", {"adapter": {"quantize_base": "8bit"}}, "adapter", "quantize_base", None),
    ("adapter-alpha", {"adapter": {"alpha": -1}}, "adapter", "alpha", None),
    ("adapter-number", {"adapter": 5}, "adapter", "not an adapter", None),
]


def _request(zoo: dict[str, Path], fields: dict[str, Any]) -> RunRequest:
    values: dict[str, Any] = {"model": str(zoo["model"]), "train_data_path": str(zoo["good"]),
                              "register_to": "main.tests", "task_type": IFT}
    values.update({k: v(zoo) if callable(v) else v for k, v in fields.items()})
    return RunRequest(**values)


def test_the_corpus_is_large_and_its_ids_unique():
    assert len(CASES) >= 100
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_refused_naming_the_field(zoo, service, case):
    _, fields, field, text, where = case
    started = time.monotonic()
    problems = service.validate(_request(zoo, fields))
    assert time.monotonic() - started < 10, "validation must not hang"
    matching = [p for p in problems if p.field == field]
    assert matching, f"no problem on {field}: {problems}"
    problem = next((p for p in matching if text in p.message), None)
    assert problem is not None, f"{text!r} not in {[p.message for p in matching]}"
    assert len(problem.message) < 800, "a hostile value is never echoed whole"
    if where == "file":
        assert problem.file, problem
    elif isinstance(where, tuple):
        _, key, line = where
        assert problem.file == str(zoo[key]) and problem.line == line, problem


def test_a_good_request_is_accepted(zoo, service):
    """The corpus is refused for its hostile part, not because the baseline request is wrong."""
    assert service.validate(_request(zoo, {})) == []
    assert service.validate(_request(zoo, {"task_type": CHAT, "train_data_path": str(zoo["good_chat"]),
                                           "eval_prompts": ["Hi"], "training_duration": "1000ep"})) == []


def test_values_from_a_file_are_not_echoed(zoo, service):
    problems = service.validate(_request(zoo, {"train_data_path": str(zoo["secret_keys"])}))
    assert all("secret-value-1234" not in p.message and "k" * 100 not in p.message for p in problems)


def test_oversized_file_and_line_are_refused_without_reading_them(zoo, service, monkeypatch):
    from tunedeck.inputs import datasets

    monkeypatch.setenv("TUNEDECK_MAX_DATA_BYTES", "10")
    problems = service.validate(_request(zoo, {}))
    assert any(p.field == "train_data_path" and "TUNEDECK_MAX_DATA_BYTES" in p.message for p in problems), problems
    monkeypatch.delenv("TUNEDECK_MAX_DATA_BYTES")
    monkeypatch.setattr(datasets, "MAX_LINE_BYTES", 20)
    problems = service.validate(_request(zoo, {}))
    assert [(p.field, p.line) for p in problems if "longer than 20 bytes" in p.message] == [("train_data_path", 1), ("train_data_path", 2)]


def test_a_whole_filesystem_as_data_folder_is_refused_quickly(zoo, service, monkeypatch):
    """train_data_path='/' for CONTINUED_PRETRAIN must not walk the machine (nor /proc) file by file."""
    from tunedeck.inputs import paths

    started = time.monotonic()
    problems = service.validate(_request(zoo, {"train_data_path": "/", "task_type": CPT}))
    assert time.monotonic() - started < 10
    assert any(p.field == "train_data_path" for p in problems), problems
    deep = zoo["root"] / "walk"
    for i in range(5):
        (deep / f"d{i}" / "e").mkdir(parents=True, exist_ok=True)
        (deep / f"d{i}" / "e" / "doc.txt").write_text("text")
    monkeypatch.setattr(paths, "MAX_DATA_FOLDERS", 4)
    problems = service.validate(_request(zoo, {"train_data_path": str(deep), "task_type": CPT}))
    assert any(p.field == "train_data_path" and "too many subfolders" in p.message for p in problems), problems
    monkeypatch.setattr(paths, "MAX_DATA_FOLDERS", 100)
    monkeypatch.setattr(paths, "MAX_DATA_FILES", 3)
    problems = service.validate(_request(zoo, {"train_data_path": str(deep), "task_type": CPT}))
    assert any(p.field == "train_data_path" and "more than 3 data files" in p.message for p in problems), problems
    monkeypatch.setattr(paths, "MAX_DATA_FILES", 100)
    monkeypatch.setenv("TUNEDECK_MAX_DATA_BYTES", "10")  # each file is 4 bytes, the five 20
    problems = service.validate(_request(zoo, {"train_data_path": str(deep), "task_type": CPT}))
    assert any(p.field == "train_data_path" and "hold 20 bytes" in p.message for p in problems), problems


def test_huge_safetensors_headers_are_not_read(zoo, tmp_path):
    from tunedeck.inputs import catalog

    folder = tmp_path / "model"
    shutil.copytree(zoo["model"], folder)
    with open(folder / "model.safetensors", "r+b") as f:
        f.write((2**40).to_bytes(8, "little"))  # claims a 1 TiB header
    assert catalog.weights_problem(folder) is None  # unreadable: the worker's loading error says why
    for i in range(3):
        header = b"{" + b" " * (60 * 2**20 - 2) + b"}"  # valid, empty, 60 MiB: two exceed the 100 MiB budget
        (folder / f"extra-{i}.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(ValueError, match="too large"):
        catalog.tensor_names(folder)


def test_unreadable_path_is_a_problem_not_an_error(zoo, service, monkeypatch):
    """EACCES (not reproducible as root) from stat: a Problem on the field."""
    import tunedeck.inputs.paths as paths

    real = paths.stat_path

    def denied(path):
        if str(path).startswith("/secret"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(paths, "stat_path", denied)
    problems = service.validate(_request(zoo, {"train_data_path": "/secret/train.jsonl"}))
    assert any(p.field == "train_data_path" and "Permission denied" in p.message for p in problems), problems


# --- over HTTP ---------------------------------------------------------------------------------------


@pytest.fixture
def api(service, home):
    client = TestClient(create_app(service, TOKEN, home), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    return client


def _json_body(text: bytes) -> dict[str, Any]:
    return {"content": text, "headers": {"content-type": "application/json"}}


BASE = {"model": "m", "train_data_path": "/d/train.jsonl", "register_to": "main.tests"}

HTTP_CASES = [
    ("deep-nesting", "POST", "/api/runs", _json_body(b"[" * 100_000 + b"]" * 100_000), 422, "request", "nested more than 64"),
    ("deep-nesting-in-field", "POST", "/api/validate", _json_body(json.dumps({**BASE, "adapter": {"a": None}}).replace("null", "[" * 70 + "]" * 70).encode()), 422, "request", "nested"),
    ("body-2-mib", "POST", "/api/runs", _json_body(b" " * (2 << 20) + b"{}"), 413, "request", "larger than"),
    ("after-2-64", "GET", "/api/runs/x/events?after=18446744073709551616", {}, 422, "after", "less than or equal"),
    ("after-negative", "GET", "/api/runs/x/metrics?after=-1", {}, 422, "after", "greater than or equal"),
    ("after-word", "GET", "/api/runs/x/events?after=abc", {}, 422, "after", "integer"),
    ("limit-zero", "GET", "/api/runs/x/events?limit=0", {}, 422, "limit", "greater than or equal"),
    ("limit-huge", "GET", "/api/runs?limit=99999999999999999999999", {}, 422, "limit", "less than or equal"),
    ("status-bogus", "GET", "/api/runs?status=BOGUS", {}, 422, "status", "Input should be"),
    ("run-name-long", "GET", "/api/runs/" + "n" * 300, {}, 422, "name", "at most 256"),
    ("prompts-dict", "POST", "/api/runs", {"json": {**BASE, "eval_prompts": {"a": "b"}}}, 422, "eval_prompts", "valid list"),
    ("unknown-parameter", "POST", "/api/runs", {"json": {**BASE, "epochs": 3}}, 422, "epochs", "unknown parameter"),
    ("model-number", "POST", "/api/validate", {"json": {**BASE, "model": 5}}, 422, "model", "valid string"),
    ("missing-register", "POST", "/api/runs", {"json": {"model": "m", "train_data_path": "/d"}}, 422, "register_to", "required"),
    ("body-array", "POST", "/api/runs", {"json": [1, 2]}, 422, "request", "valid dictionary"),
    ("body-not-json", "POST", "/api/runs", _json_body(b"{nope"), 422, "request", "not valid JSON"),
    ("body-not-utf8", "POST", "/api/runs", _json_body(b'{"model": "\xff"}'), 400, None, None),
    ("unvalidated-escape", "POST", "/api/runs", {"json": {**BASE, "validate_inputs": False, "experiment_path": "/../../../tmp/x"}}, 422, "experiment_path", "'..'"),
    ("unvalidated-register", "POST", "/api/runs", {"json": {**BASE, "validate_inputs": False, "register_to": "a." + "b" * 5000}}, 422, "register_to", "characters long"),
    ("unvalidated-duration", "POST", "/api/runs", {"json": {**BASE, "validate_inputs": False, "training_duration": "10000000000ep"}}, 422, "training_duration", "limit"),
    ("unvalidated-relative", "POST", "/api/runs", {"json": {**BASE, "validate_inputs": False, "train_data_path": "train.jsonl"}}, 422, "train_data_path", "relative"),
    ("unvalidated-created-by", "POST", "/api/runs", {"json": {**BASE, "validate_inputs": False, "created_by": "../.."}}, 422, "created_by", "user name"),
    ("data-check-context", "POST", "/api/data-check", {"json": {"train_data_path": "/d", "context_length": 10**12}}, 422, "context_length", "less than or equal"),
]


@pytest.mark.parametrize("case", HTTP_CASES, ids=[c[0] for c in HTTP_CASES])
def test_hostile_http_request_is_a_4xx_naming_the_field(api, case):
    _, method, path, kwargs, status, field, text = case
    resp = api.request(method, path, **kwargs)
    assert resp.status_code == status, resp.text[:500]
    if field is not None:
        problems = resp.json()["detail"]["problems"]
        assert any(p["field"] == field and text in p["message"] for p in problems), problems
    assert len(resp.content) < 5000, "the rejected input is not echoed back"
    assert api.get("/api/health").status_code == 200  # and the service still answers
    assert api.get("/api/runs").json()["runs"] == []  # nothing was created


@pytest.mark.parametrize("path_key, text", [
    ("fifo", "named pipe"), ("socket", "socket"), ("to_zero", "/proc, /sys or /dev"), ("loop", "symbolic links"),
])
def test_data_check_refuses_special_files(api, zoo, path_key, text):
    resp = api.post("/api/data-check", json={"train_data_path": str(zoo[path_key]), "task_type": IFT})
    assert resp.status_code == 200
    body = resp.json()
    assert body["ok"] is False and any(text in p["message"] and p["field"] == "train_data_path" for p in body["problems"])


def test_data_check_shows_no_rows_of_files_that_are_not_training_data(api, zoo):
    for path in ("/etc/passwd", "/proc/self/environ", str(zoo["secret_keys"])):
        body = api.post("/api/data-check", json={"train_data_path": path, "task_type": IFT}).json()
        assert body["ok"] is False and not body.get("sample"), body
        assert "secret-value-1234" not in json.dumps(body)


def test_data_check_with_a_broken_model_folder_is_a_problem(api, zoo):
    resp = api.post("/api/data-check", json={"train_data_path": str(zoo["good"]), "task_type": IFT, "model": str(zoo["model_fifo"])})
    assert resp.status_code == 200
    body = resp.json()
    assert body["ok"] is False and body["problems"][0]["field"] == "model" and "named pipe" in body["problems"][0]["message"]


def test_fifo_data_path_answers_quickly_and_leaves_health_free(api, zoo):
    """More concurrent FIFO requests than the server's 40 worker threads: each answers in < 2 s and
    /api/health still answers (before the fix each one blocked a thread for ever)."""

    def check(_):
        started = time.monotonic()
        resp = api.post("/api/data-check", json={"train_data_path": str(zoo["fifo"]), "task_type": IFT})
        return resp.status_code, resp.json()["ok"], time.monotonic() - started

    with ThreadPoolExecutor(max_workers=45) as pool:
        results = list(pool.map(check, range(45)))
    assert all(status == 200 and ok is False for status, ok, _ in results)
    assert max(seconds for _, _, seconds in results) < 2.0
    started = time.monotonic()
    assert api.get("/api/health").status_code == 200
    assert time.monotonic() - started < 2.0
    started = time.monotonic()
    resp = api.post("/api/validate", json={**BASE, "train_data_path": str(zoo["fifo"])})
    assert time.monotonic() - started < 2.0
    assert any(p["field"] == "train_data_path" and "named pipe" in p["message"] for p in resp.json()["problems"])


# --- the worker: weights that do not match the config never train from random values ---------------------


@pytest.mark.parametrize("key, names", [("bert_config", "missing"), ("renamed", "encoder.block_")])
def test_model_with_mismatched_weights_fails_to_load_with_the_reason(zoo, tmp_path, key, names):
    from tunedeck.inputs.spec import DataSource, RunSpec
    from tunedeck.training.failures import TrainingFailure
    from tunedeck.training.models import load_model, pick_device

    spec = RunSpec(name="t", task_type=IFT, model_name="m", model_path=str(zoo[key]),
                   train_data=DataSource("jsonl", [str(zoo["good"])], str(zoo["good"])), register_to="a.b.c",
                   experiment_path="/x", run_dir=str(tmp_path), mlflow_tracking_uri="", mlflow_artifact_root="")
    with pytest.raises(TrainingFailure) as caught:
        load_model(Path(zoo[key]), spec, pick_device("fp32"))
    message = str(caught.value)
    assert message.startswith("model: the weights in") and "do not match" in message
    assert "weights are missing from the checkpoint" in message and names in message


def test_matching_weights_load(zoo, tmp_path):
    from tunedeck.inputs.spec import DataSource, RunSpec
    from tunedeck.training.models import load_model, pick_device

    spec = RunSpec(name="t", task_type=IFT, model_name="m", model_path=str(zoo["model"]),
                   train_data=DataSource("jsonl", [str(zoo["good"])], str(zoo["good"])), register_to="a.b.c",
                   experiment_path="/x", run_dir=str(tmp_path), mlflow_tracking_uri="", mlflow_artifact_root="")
    assert load_model(Path(zoo["model"]), spec, pick_device("fp32")) is not None
