"""The form's validation state: one function of the whole form (``ui/_validation.validate``).

The problems come from the real checks (``inputs.datasets`` as the service runs them, and a real
service where the form talks to one); models are real tiny models built by the test.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shutil
import subprocess
import sys

import pytest

from tunedeck.inputs import datasets
from tunedeck.inputs.paths import resolve_data
from tunedeck.ui._validation import EN_DASH, Fix, FormState, Report, line_ranges, preview_code, resolve_model, validate

from tests.helpers import PAIRS, write_jsonl

API_WORDS = re.compile(r"\b(train_data_path|eval_data_path|task_type|register_to|training_duration|learning_rate|"
                       r"context_length|CHAT_COMPLETION|INSTRUCTION_FINETUNE|CONTINUED_PRETRAIN)\b")


def chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


@pytest.fixture(scope="module")
def tiny_512(tmp_path_factory):
    """A real tiny Llama whose maximum context is 512 (not the 8,192 a form would guess)."""
    from tunedeck.training.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-512", [f"{q} {a}" for q, a in PAIRS],
                            max_position_embeddings=512)


@pytest.fixture
def data(tmp_path):
    """Chat train data, chat eval data (4 rows) and instruction eval data (4 rows)."""
    return {
        "train": write_jsonl(tmp_path / "train.jsonl", [chat(q, a) for q, a in PAIRS]),
        "eval_chat": write_jsonl(tmp_path / "eval.jsonl", [chat(q, a) for q, a in PAIRS[:4]]),
        "eval_instruction": write_jsonl(tmp_path / "eval-instruction.jsonl",
                                        [{"prompt": q, "response": a} for q, a in PAIRS[:4]]),
    }


def service_problems(state: FormState):
    """The data problems the service reports at create() for this state (its own functions, run here)."""
    found = []
    for field in ("train_data_path", "eval_data_path"):
        path = getattr(state, field)
        if path:
            source, problems = resolve_data(path, state.task_type, field)
            found += problems + (datasets.check_data(source, state.task_type, field) if source else [])
    return tuple(found)


def texts(v) -> dict[str, list[str]]:
    return {field: [i.text() for i in issues] for field, issues in v.by_field().items()}


# -- the validation-state function ---------------------------------------------------------------------------
def test_switching_task_after_an_eval_error_leaves_no_error(data):
    chat_task = FormState(model="m", train_data_path=str(data["train"]), eval_data_path=str(data["eval_chat"]),
                          register_to="main.demo", task_type="CHAT_COMPLETION")
    instruction = dataclasses.replace(chat_task, task_type="INSTRUCTION_FINETUNE", strict=True)
    reported = Report(instruction, "create", problems=service_problems(instruction))
    assert sum(p.field == "eval_data_path" for p in reported.problems) == 4  # one a row, as the service reports them

    v = validate(instruction, {}, [reported])
    shown = texts(v)
    assert set(shown) == {"train_data_path", "eval_data_path", "model"}  # "m" is no model of this machine
    [eval_issue] = v.by_field()["eval_data_path"]  # four rows, one problem
    assert eval_issue.lines == (1, 2, 3, 4) and f"lines 1{EN_DASH}4" in eval_issue.text()
    assert eval_issue.fix == Fix("task_type", "CHAT_COMPLETION", "Switch Task to Chat completion")

    # back to Chat completion: what the service said about the Instruction task is gone, all of it
    back = dataclasses.replace(instruction, task_type="CHAT_COMPLETION")
    assert set(texts(validate(back, {}, [reported]))) == {"model"}
    # another eval file: its old error goes, the train data's (same file, same task) stays
    other_eval = dataclasses.replace(instruction, eval_data_path=str(data["eval_instruction"]))
    assert set(texts(validate(other_eval, {}, [reported]))) == {"train_data_path", "model"}
    # another model: every data problem depends on it
    assert set(texts(validate(dataclasses.replace(instruction, model="n"), {}, [reported]))) == {"model"}
    # and an unrelated field leaves them be
    assert texts(validate(dataclasses.replace(instruction, learning_rate="1e-4"), {}, [reported])) == shown


def test_each_problem_once_with_its_rows_grouped(data):
    state = FormState(model="m", train_data_path=str(data["train"]), eval_data_path=str(data["eval_instruction"]),
                      register_to="main.demo")
    problems = service_problems(state)
    check = Report(state, "check", field="eval_data_path", result={
        "ok": False, "rows": 0, "problems": [dict(p.to_dict(), field="train_data_path") for p in problems]})
    both = [Report(state, "create", problems=problems), check]  # create() and Check data found the same lines
    [issue] = validate(state, {}, both).by_field()["eval_data_path"]
    assert issue.lines == (1, 2, 3, 4)
    assert issue.text().count("this looks like") == 1 and issue.text().endswith(f"lines 1{EN_DASH}4)")
    assert line_ranges([7, 1, 2, 3, 9, 10]) == f"lines 1{EN_DASH}3, 7, 9{EN_DASH}10" and line_ranges([5]) == "line 5"


def test_messages_use_the_forms_labels_and_offer_a_fix(data):
    state = FormState(model="m", train_data_path=str(data["eval_instruction"]), register_to="main.demo",
                      eval_data_path=str(data["eval_chat"]), task_type="INSTRUCTION_FINETUNE")
    v = validate(state, {}, [Report(state, "create", problems=service_problems(state))])
    train, evaluation = v.by_field().get("train_data_path", []), v.by_field()["eval_data_path"]
    assert [i.text() for i in evaluation] == [
        f"Eval data: this looks like Chat completion data ('messages'): switch Task to Chat completion "
        f"(eval.jsonl, lines 1{EN_DASH}4)"]
    assert train == []  # instruction rows for the Instruction task
    for issue in v.issues:
        assert not API_WORDS.search(issue.text()), issue.text()
    duration = validate(dataclasses.replace(state, duration="0"), {}).by_field()["training_duration"]
    assert [i.text() for i in duration] == ["Duration must be greater than 0 (0 epochs trains nothing)"]


def test_zero_duration_is_refused_naming_the_field():
    for typed, unit, expected in (("0", "ep", "Duration must be greater than 0 (0 epochs trains nothing)"),
                                  ("0", "ba", "Duration must be greater than 0 (0 batches trains nothing)"),
                                  ("", "ep", "Duration is required: a whole number of epochs"),
                                  ("-3", "ep", "Duration must be a whole number of epochs, found '-3'")):
        v = validate(FormState(duration=typed, duration_unit=unit), {})
        assert [i.text() for i in v.by_field()["training_duration"]] == [expected]
        assert "training_duration" not in v.params and v.left_out["training_duration"] == "invalid"
        assert "# training_duration: left out, Duration is invalid" in preview_code(v)
    assert validate(FormState(duration="3", duration_unit="ep"), {}).params["training_duration"] == "3ep"


@pytest.mark.parametrize("field, typed", [
    ("learning_rate", "abc"), ("learning_rate", "2"), ("duration", "0"), ("duration", "1e3"),
    ("context_length", "lots"), ("context_length", "4"), ("register_to", "just-one-part"),
    ("adapter_rank", "zero"), ("adapter_alpha", "-1"),
])
def test_the_preview_never_holds_an_invalid_value(field, typed):
    state = dataclasses.replace(FormState(train_data_path="t.jsonl", register_to="main.demo", adapter="lora"), **{field: typed})
    v = validate(state, {})
    assert v.issues, "the field is invalid"
    code = preview_code(v)
    assert typed not in re.sub(r"#.*", "", code), code  # not in the code (comments name no values either)
    assert re.search(r"# \w+: left out, [\w -]+ is invalid", code)
    call = ast.parse(code).body[-1].value  # still Python
    assert {kw.arg for kw in call.keywords} == set(v.params)
    missing = preview_code(validate(FormState(), {}))
    assert "# model: missing, fill in Model above" in missing and "# train_data_path: missing" in missing


def test_a_typed_model_folder_is_read_from_its_config(tiny_512, tmp_path, monkeypatch):
    info, problem = resolve_model(str(tiny_512), {})
    config = json.loads((tiny_512 / "config.json").read_text())
    assert problem is None and info.max_context_length == 512 == config["max_position_embeddings"]
    assert info.parameters and 50_000 < info.parameters < 1_000_000  # hidden 64, 2 layers, 512-token vocabulary
    assert info.default_learning_rate == 1e-3  # params.default_learning_rate of a model that small
    v = validate(FormState(model=str(tiny_512), context_length="1024"), {})
    assert v.default_context == 512
    assert [i.text() for i in v.by_field()["context_length"]] == ["Context length: 1,024 is above tiny-512's maximum of 512"]
    assert v.by_field()["context_length"][0].fix == Fix("context_length", "512", "Set Context length to 512")
    monkeypatch.chdir(tiny_512.parent)  # a relative folder, as typed in the notebook's working directory
    assert resolve_model("./tiny-512", {})[0].max_context_length == 512
    # a Hugging Face id in the local cache (HF_HUB_CACHE), and one that is not there
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    shutil.copytree(tiny_512, cache / "models--acme--tiny-512" / "snapshots" / "abc123")
    (cache / "models--acme--tiny-512" / "refs").mkdir()
    (cache / "models--acme--tiny-512" / "refs" / "main").write_text("abc123")
    hf, problem = resolve_model("acme/tiny-512", {})
    assert problem is None and hf.max_context_length == 512 and hf.source == "Hugging Face cache"
    assert resolve_model("acme/absent", {})[0] is None and "not in the local Hugging Face cache" in resolve_model("acme/absent", {})[1]
    assert "has no config.json" in resolve_model(str(tmp_path), {})[1]


def test_reading_a_typed_model_loads_no_torch(tiny_512):
    code = ("import sys; from tunedeck.ui._validation import resolve_model; "
            f"info, _ = resolve_model({str(tiny_512)!r}, {{}}); print(info.max_context_length, "
            "[m for m in ('torch', 'transformers', 'tokenizers', 'safetensors') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(None, 1)
    assert out == ["512", "[]\n"]


# -- the form on a real service -------------------------------------------------------------------------------
def errors(form) -> dict[str, str]:
    return {field: box.value for field, box in form._errors.items() if box.value}


@pytest.fixture
def models_here(service_home, tiny_512):
    from tunedeck import config

    shutil.copytree(tiny_512, config.models_root() / "tiny-512")
    return service_home


def test_form_stale_eval_error_goes_when_the_task_switches(models_here, data):
    from tunedeck.ui.form import TrainingForm

    form = TrainingForm(model="tiny-512", train_data_path=str(data["train"]), eval_data_path=str(data["eval_chat"]),
                        register_to="main.state", task_type="INSTRUCTION_FINETUNE", training_duration="1ba")
    try:
        assert "(max context 512)" in dict((v, k) for k, v in form.model_w.options)["tiny-512"]
        assert form.submit() is None  # the real service refuses: chat rows for the Instruction task
        shown = errors(form)
        assert set(shown) == {"train_data_path", "eval_data_path"}
        assert shown["eval_data_path"].count("class='td-issue'") == 1 and f"lines 1{EN_DASH}4" in shown["eval_data_path"]
        assert "2 problem(s)" in form.status_w.value
        assert not API_WORDS.search(re.sub(r"<[^>]+>", "", "".join(shown.values())))
        [fix] = form._fix_boxes["eval_data_path"].children
        assert fix.description == "Switch Task to Chat completion"
        fix.click()  # one click: Task changes, and everything that depends on it is checked again
        assert form.task_w.value == "CHAT_COMPLETION"
        assert errors(form) == {} and "problem" not in form.status_w.value and form._general.value == ""
        assert all(not box.children for box in form._fix_boxes.values())
        assert form.validation().ready
        # 0 is refused, naming the field; the preview shows neither it nor an invalid learning rate
        form.duration_w.value = "0"
        form.lr_w.value = "abc"
        assert "Duration must be greater than 0" in errors(form)["training_duration"]
        assert "abc" not in form.preview.code and "training_duration=" not in form.preview.code
        assert "# learning_rate: left out, Learning rate is invalid" in form.preview.code
    finally:
        form.close()


def test_check_data_covers_eval_data_and_sends_absolute_paths(models_here, data, monkeypatch):
    from tunedeck.ui.form import TrainingForm

    monkeypatch.chdir(data["train"].parent)
    form = TrainingForm(model="", train_data_path="train.jsonl", eval_data_path="eval-instruction.jsonl",
                        register_to="main.state")
    try:
        form.model_w.value = "__typed__"  # no model: the service checks the format without counting tokens
        results = form.check_data()
        assert results["train_data_path"]["ok"] is True  # a relative path would be refused by the service
        assert results["eval_data_path"]["ok"] is False
        assert "ok" in form.check_out.value and "problems found" in form.check_eval_out.value
        [issue] = form.validation().by_field()["eval_data_path"]
        assert issue.fix == Fix("task_type", "INSTRUCTION_FINETUNE", "Switch Task to Instruction")
        assert issue.lines == (1, 2, 3, 4)
        assert form.evaluation_w.selected_index == 0  # the folded section with the error opens
        form.eval_data_w.value = "eval.jsonl"  # another path: the old answer is gone at once
        assert errors(form) == {} and form.check_eval_out.value == ""
        assert "ok" in form.check_out.value  # the train data's answer still holds
        calls = len(form._reports)
        form.task_w.value = "INSTRUCTION_FINETUNE"  # checked data are checked again for the new task
        [train] = form.validation().by_field()["train_data_path"]
        assert train.fix == Fix("task_type", "CHAT_COMPLETION", "Switch Task to Chat completion")
        assert train.lines == (1, 2, 3, 4, 5) and "problems found" in form.check_out.value
        assert "eval_data_path" in errors(form) and calls == len(form._reports)  # one answer a file, the new ones
        form._fix_boxes["train_data_path"].children[0].click()
        assert form.task_w.value == "CHAT_COMPLETION" and errors(form) == {}
        assert "ok" in form.check_out.value and "ok" in form.check_eval_out.value
    finally:
        form.close()


def test_form_takes_a_model_folder_path(models_here, tiny_512):
    from tunedeck.ui.form import TrainingForm

    form = TrainingForm(model=str(tiny_512), train_data_path="/d/t.jsonl", register_to="main.state")
    try:
        assert form.model_w.value == "__typed__" and form.model_text_w.value == str(tiny_512)
        assert "max context 512 tokens" in form.model_help.value and "parameters" in form.model_help.value
        assert "not in get_models" not in form.model_help.value
        assert form.context_w.placeholder == "default 512" and "at most 512" in form.context_help.value
        assert "?" not in form.context_help.value
        assert form.params()["model"] == str(tiny_512)
        form.model_text_w.value = "acme/not-cached"
        assert "not in the local Hugging Face cache" in errors(form)["model"]
        assert "model=" not in form.preview.code and "# model: left out" in form.preview.code
    finally:
        form.close()
