"""The training form without a browser: defaults, field checks, the code preview, Start."""

from __future__ import annotations

import ast
import os

import pytest

from tunedeck.types import LoRA, RunStatus
from tunedeck.ui.form import TrainingForm, render_data_check
from tunedeck.ui.monitor import RunMonitor

from tests.ui.fakes import invalid


def create_call(code: str) -> dict:
    """The keyword arguments of the fm.create(...) call in the preview, evaluated as Python."""
    tree = ast.parse(code)
    call = tree.body[-1].value
    assert ast.unparse(call.func) == "fm.create"
    return {kw.arg: _value(kw.value) for kw in call.keywords}


def _value(node: ast.expr):
    """A literal, or fm.LoRA(...) of literals (the one call the preview may hold)."""
    if isinstance(node, ast.Call):
        assert ast.unparse(node.func) == "fm.LoRA" and not node.args
        return LoRA(**{kw.arg: ast.literal_eval(kw.value) for kw in node.keywords})
    return ast.literal_eval(node)


def run_preview(code: str, fake) -> dict:
    """Run the preview as the user would paste it (against the fake service): what reached create_run."""
    exec(compile(code, "<preview>", "exec"), {})
    return fake.created[-1]


def errors(form: TrainingForm) -> dict[str, str]:
    return {field: box.value for field, box in form._errors.items() if box.value}


def test_defaults_are_shown_and_only_changes_reach_the_call(make_form):
    form = make_form(model="tiny-chat", train_data_path="/d/train.jsonl", register_to="main.demo")
    assert form.model_w.value == "tiny-chat"
    assert [label for label, _ in form.model_w.options] == [
        "tiny-chat  (max context 1,024)", "big-chat  (max context 8,192)", "another model: a local folder or Hugging Face id…"]
    assert form.task_w.value == "CHAT_COMPLETION" and form.duration_w.value == "1" and form.unit_w.value == "ep"
    assert form.context_w.value == "" and form.context_w.placeholder == "default 1,024"  # default min(8192, max)
    assert "at most 1,024" in form.context_help.value
    assert form.lr_w.placeholder == "default 0.001"  # blank learning rate = the model's default, shown
    assert form.validate_w.value is True
    assert form.evaluation_w.selected_index is None and form.advanced_w.selected_index is None  # folded
    assert form.params() == {"model": "tiny-chat", "train_data_path": "/d/train.jsonl", "register_to": "main.demo"}
    assert create_call(form.preview.code) == form.params()
    assert form.preview.code.startswith("from tunedeck import foundation_model as fm\n")
    assert errors(form) == {}


def test_every_parameter_reaches_the_preview(make_form):
    form = make_form(model="tiny-chat", train_data_path="t.jsonl", register_to="main.demo")
    form.task_w.value = "INSTRUCTION_FINETUNE"
    form.eval_data_w.value = " e.jsonl "
    form.prompts_w.value = 'What is "2+2"?\n\n<img src=x onerror=alert(1)>\n'
    form.weights_w.value = "/runs/a/checkpoints/latest-sharded-rank0.symlink"
    form.duration_w.value = "40"
    form.unit_w.value = "ba"
    form.lr_w.value = "3e-4"
    form.context_w.value = "512"
    form.experiment_w.value = "/Users/me/x"
    form.cluster_w.value = "c-1"
    form.validate_w.value = False
    form.method_w.value = "qlora"
    form.rank_w.value = "32"
    form.targets_w.value = "attention"
    expected = {
        "model": "tiny-chat", "train_data_path": "t.jsonl", "register_to": "main.demo",
        "task_type": "INSTRUCTION_FINETUNE", "eval_data_path": "e.jsonl",
        "eval_prompts": ['What is "2+2"?', "<img src=x onerror=alert(1)>"],
        "custom_weights_path": "/runs/a/checkpoints/latest-sharded-rank0.symlink", "training_duration": "40ba",
        "learning_rate": 3e-4, "context_length": 512, "experiment_path": "/Users/me/x",
        "data_prep_cluster_id": "c-1", "validate_inputs": False,
        "adapter": LoRA(rank=32, target_modules="attention", quantize_base="4bit"),
    }
    assert form.params() == expected
    assert create_call(form.preview.code) == expected  # the preview is valid Python for the same call


def test_defaults_prefill_every_field(make_form):
    form = make_form(model="big-chat", train_data_path="t", register_to="a.b.c", task_type="continued_pretrain",
                     eval_prompts=["p1", "p2"], training_duration="1_000tok", learning_rate="1e-5", context_length=2048,
                     validate_inputs=False, eval_data_path="e", custom_weights_path="w", experiment_path="/x",
                     data_prep_cluster_id="c", adapter={"rank": 4})
    p = form.params()
    assert p["adapter"] == LoRA(rank=4) and form.method_w.value == "lora" and form.rank_w.value == "4"
    assert p["task_type"] == "CONTINUED_PRETRAIN" and p["training_duration"] == "1000tok"
    assert p["eval_prompts"] == ["p1", "p2"] and p["learning_rate"] == 1e-5 and p["context_length"] == 2048
    with pytest.raises(TypeError, match="unknown parameter"):
        TrainingForm(epochs=3)


def test_changing_the_model_rechecks_the_context_length(make_form):
    form = make_form(model="tiny-chat")
    assert form.context_w.placeholder == "default 1,024"
    form.model_w.value = "big-chat"
    assert form.context_w.placeholder == "default 8,192" and "at most 8,192" in form.context_help.value
    assert "max context 8,192" in form.model_help.value and "5e-05" in form.lr_w.placeholder
    form.context_w.value = "4000"
    assert errors(form) == {} and form.params()["context_length"] == 4000
    form.model_w.value = "tiny-chat"  # the context length is checked again against the smaller model
    assert "Context length: 4,000 is above tiny-chat&#x27;s maximum of 1,024" in errors(form)["context_length"]
    assert "context_length" not in form.params() and "# context_length: left out" in form.preview.code
    [fix] = form._fix_boxes["context_length"].children
    assert fix.description == "Set Context length to 1,024"
    fix.click()
    assert form.context_w.value == "1024" and errors(form) == {}
    form.context_w.value = ""
    assert "context_length" not in form.params()  # blank is the default: create() needs no argument
    form.context_w.value = "256"
    assert form.params()["context_length"] == 256


def test_format_errors_show_next_to_their_field_as_you_type(make_form):
    form = make_form(model="tiny-chat", train_data_path="t", register_to="main.demo")
    form.lr_w.value = "fast"
    form.register_w.value = "just-one-part"
    shown = errors(form)
    assert set(shown) == {"learning_rate", "register_to"}
    assert "is not a number" in shown["learning_rate"]
    form.lr_w.value = "2"
    assert "out of range" in errors(form)["learning_rate"]
    form.lr_w.value = ""
    form.register_w.value = "main.demo"
    assert errors(form) == {}


def test_required_fields_are_flagged_on_start_not_before(make_form, fake):
    form = make_form()
    assert errors(form) == {}
    assert form.submit() is None
    assert set(errors(form)) == {"train_data_path", "register_to"}
    assert "fix the fields" in form.status_w.value
    assert fake.created == []


def test_service_problems_go_next_to_their_fields(make_form, fake):
    fake.create_error = invalid(
        ("train_data_path", "line is not JSON: <b>oops</b>", "/d/train.jsonl", 3),
        ("context_length", "too long"),
        ("something_else", "odd"),
    )
    form = make_form(model="tiny-chat", train_data_path="/d/train.jsonl", register_to="main.demo")
    assert form.submit() is None
    shown = errors(form)
    assert "line is not JSON: &lt;b&gt;oops&lt;/b&gt; (train.jsonl, line 3)" in shown["train_data_path"]
    assert "too long" in shown["context_length"]
    assert form.advanced_w.selected_index == 0  # the folded section with the error opens
    assert "something_else: odd" in form._general.value
    assert "3 problem(s)" in form.status_w.value
    form.train_w.value = "/d/other.jsonl"  # editing a field clears what the service said about it
    assert "train_data_path" not in errors(form)


def test_unexpected_errors_are_a_message_not_a_traceback(make_form, fake):
    fake.create_error = ConnectionError("refused")
    form = make_form(model="tiny-chat", train_data_path="t", register_to="main.demo")
    assert form.submit() is None
    assert "could not start: ConnectionError: refused" in form.status_w.value
    assert "Traceback" not in form.status_w.value
    assert not form.start_w.disabled


def test_start_creates_the_run_and_opens_its_monitor_below(make_form, fake):
    form = make_form(model="tiny-chat", train_data_path="t", register_to="main.demo", training_duration="40ba",
                     eval_prompts=["hi"])
    run = form.submit()
    assert run is not None and run.status is RunStatus.PENDING
    # a relative data path goes out absolute, resolved in the notebook's working directory (the service's differs)
    assert fake.created[-1] == {"model": "tiny-chat", "train_data_path": os.path.abspath("t"), "register_to": "main.demo",
                                "training_duration": "40ba", "eval_prompts": ["hi"], "task_type": "CHAT_COMPLETION",
                                "validate_inputs": True, "created_by": fake.created[-1]["created_by"]}
    assert isinstance(form.monitors.children[0], RunMonitor) and form.monitors.children[0].run_name == run.name
    assert run.name in form.status_w.value
    second = form.submit()
    assert [m.run_name for m in form.monitors.children] == [second.name, run.name]  # newest first
    form._close_monitor(form.monitors.children[0])
    assert [m.run_name for m in form.monitors.children] == [run.name]


def test_data_check_shows_rows_tokens_and_bad_lines(make_form, fake):
    fake.data_check_result = {
        "ok": False, "rows": 1204, "tokens": {"min": 12, "median": 87, "max": 1930, "total": 99000},
        "context_length": 1024, "too_long": 3, "sample": {"messages": [{"role": "user", "content": "<script>x</script>"}]},
        "problems": [{"field": "train_data_path", "message": "not JSON", "file": "/d/t.jsonl", "line": 7}],
    }
    form = make_form(model="tiny-chat", train_data_path="/d/t.jsonl", register_to="main.demo")
    result = form.check_data()
    assert fake.calls[-1] == ("data_check", {"train_data_path": "/d/t.jsonl", "task_type": "CHAT_COMPLETION", "model": "tiny-chat", "context_length": 1024})
    html = form.check_out.value
    assert result["train_data_path"]["rows"] == 1204
    for text in ("1,204 rows", "tokens min 12 / median 87 / max 1,930", "context length 1,024", "3 rows longer",
                 "a sample row", "&lt;script&gt;"):
        assert text in html, text
    assert "<script>" not in html
    # the bad line is shown once, next to the field, not a second time in the summary
    assert "Train data: not JSON (t.jsonl, line 7)" in errors(form)["train_data_path"]
    assert "not JSON" not in html
    form.train_w.value = "/d/other.jsonl"
    assert form.check_out.value == ""  # a stale answer is not left under a changed path


def test_data_check_renders_what_is_there():
    assert "ok" in render_data_check({"ok": True})
    assert "problems found" in render_data_check({"ok": False, "message": "no such file"})
    assert "no such file" in render_data_check({"ok": False, "message": "no such file"})
    odd = render_data_check({"ok": True, "tokens": None, "bad_lines": ["x", {"line_number": 2, "error": "e"}]})
    assert "line 2: e" in odd


def test_without_a_service_the_form_still_opens(fake, sent, monkeypatch):
    from tunedeck.errors import ServiceUnavailableError

    def down():
        raise ServiceUnavailableError("no service")

    monkeypatch.setattr(fake, "models", down)
    form = TrainingForm(model="tiny-chat")
    try:
        assert "could not list models: no service" in errors(form)["model"]
        assert form.model_w.value == "__typed__" and form.model_text_w.value == "tiny-chat"  # kept as typed
        assert form.state().model == "tiny-chat"
    finally:
        form.close()


def test_form_snapshot_is_the_code(make_form):
    form = make_form(model="tiny-chat", train_data_path="<b>t</b>", register_to="main.demo")
    bundle = form._repr_mimebundle_()
    assert "fm.create(" in bundle["text/plain"]
    assert "&lt;b&gt;t&lt;/b&gt;" in bundle["text/html"] and "<b>t</b>" not in bundle["text/html"]


def test_a_double_click_starts_one_run(make_form, fake):
    form = make_form(model="tiny-chat", train_data_path="t", register_to="main.demo")
    form._on_start_click(form.start_w)
    form._on_start_click(form.start_w)  # queued behind the first create()
    assert len(fake.created) == 1


def test_full_fine_tuning_is_the_default_and_adds_nothing(make_form):
    form = make_form(model="tiny-chat", train_data_path="t", register_to="main.demo")
    assert form.method_w.value == "full"
    assert "adapter" not in form.params() and "adapter" not in form.preview.code
    assert form.lora_w.layout.display == "none"  # rank, alpha, target modules only for LoRA / QLoRA
    assert "far less memory: the way to fine-tune 1B-70B models" in form.method_help.value
    assert "adapter merged in" in form.method_help.value


def test_lora_reaches_the_preview_and_start_sends_it(make_form, fake):
    form = make_form(model="tiny-chat", train_data_path="t", register_to="main.demo")
    form.method_w.value = "lora"
    assert form.lora_w.layout.display is None
    assert form.params()["adapter"] == "lora"
    assert '    adapter="lora",\n' in form.preview.code  # the defaults: just the name
    assert form.alpha_w.placeholder == "32" and "blank = 2 × rank (32)" in form.alpha_help.value
    assert form.lr_w.placeholder == "default 0.005 for LoRA"  # params.default_learning_rate(147_776, adapter)
    form.rank_w.value = "32"
    assert form.alpha_w.placeholder == "64"
    assert '    adapter=fm.LoRA(rank=32),\n' in form.preview.code
    form.targets_w.value = "attention"
    assert '    adapter=fm.LoRA(rank=32, target_modules="attention"),\n' in form.preview.code
    assert create_call(form.preview.code) == form.params()
    assert errors(form) == {}

    run = form.submit()
    assert run is not None
    sent = fake.created[-1]
    assert sent["adapter"] == {"type": "lora", "rank": 32, "alpha": None, "dropout": 0.0,
                               "target_modules": "attention", "quantize_base": None}
    assert run_preview(form.preview.code, fake) == sent  # pasted, the preview does what Start did
    assert "adapter=fm.LoRA(rank=32" in form._repr_mimebundle_()["text/plain"]  # and the snapshot shows it


def test_qlora_and_typed_settings_reach_the_preview_as_python(make_form, fake):
    form = make_form(model="tiny-chat", train_data_path="t", register_to="main.demo")
    form.method_w.value = "qlora"
    assert form.params()["adapter"] == "qlora" and '    adapter="qlora",\n' in form.preview.code
    assert "CUDA" in form.method_help.value
    form.alpha_w.value = "64"
    form.targets_w.value = "custom"
    assert form.modules_w.layout.display is None
    form.modules_w.value = " q_proj, v_proj ,, "
    expected = LoRA(alpha=64, target_modules=("q_proj", "v_proj"), quantize_base="4bit")
    assert form.params()["adapter"] == expected
    assert 'adapter=fm.LoRA(alpha=64, target_modules=("q_proj", "v_proj"), quantize_base="4bit")' in form.preview.code
    form.modules_w.value = "q_proj"
    assert 'target_modules=("q_proj",)' in form.preview.code  # a one-name tuple, not a parenthesized string
    assert create_call(form.preview.code)["adapter"] == LoRA(alpha=64, target_modules=("q_proj",), quantize_base="4bit")
    form.submit()
    sent = fake.created[-1]
    assert sent["adapter"]["target_modules"] == ["q_proj"] and sent["adapter"]["quantize_base"] == "4bit"
    assert run_preview(form.preview.code, fake) == sent


def test_bad_lora_settings_show_next_to_their_field_and_block_start(make_form, fake):
    form = make_form(model="tiny-chat", train_data_path="t", register_to="main.demo")
    form.method_w.value = "lora"
    form.rank_w.value = "abc"
    shown = errors(form)
    assert set(shown) == {"adapter_rank"}
    assert "rank &#x27;abc&#x27; must be a whole number from 1 to 1024" in shown["adapter_rank"]
    assert "Traceback" not in shown["adapter_rank"]
    assert form.advanced_w.selected_index == 0  # the folded section with the error opens
    assert form.alpha_w.placeholder == "2 × rank"
    ast.parse(form.preview.code)  # still Python while wrong
    assert form.submit() is None
    assert "fix the fields" in form.status_w.value and fake.created == []
    for rank in ("0", "2000", "16.5"):
        form.rank_w.value = rank
        assert "must be a whole number" in errors(form)["adapter_rank"], rank
    form.rank_w.value = "8"
    form.alpha_w.value = "-1"
    form.targets_w.value = "custom"
    form.modules_w.value = "q-proj"
    shown = errors(form)
    assert set(shown) == {"adapter_alpha", "adapter_target_modules"}
    assert "must be a number above 0" in shown["adapter_alpha"]
    assert "list of layer names" in shown["adapter_target_modules"]
    form.alpha_w.value = "nan"
    assert "must be a number above 0" in errors(form)["adapter_alpha"]
    ast.parse(form.preview.code)
    form.alpha_w.value = ""
    form.modules_w.value = ""
    assert "list of layer names" in errors(form)["adapter_target_modules"]  # custom with no names
    form.modules_w.value = "q_proj,k_proj"
    assert errors(form) == {}


def test_switching_back_to_full_fine_tuning_removes_the_adapter(make_form, fake):
    form = make_form(model="tiny-chat", train_data_path="t", register_to="main.demo")
    form.method_w.value = "lora"
    form.rank_w.value = "0"
    assert "adapter_rank" in errors(form)
    form.method_w.value = "full"
    assert "adapter" not in form.params() and "adapter" not in form.preview.code
    assert errors(form) == {}  # hidden settings neither show errors nor block Start
    assert form.lora_w.layout.display == "none"
    assert form.lr_w.placeholder == "default 0.001"
    form.submit()
    assert "adapter" not in fake.created[-1]


def test_form_takes_an_adapter_like_create(make_form):
    form = make_form(model="tiny-chat", adapter=LoRA(rank=8, dropout=0.1, target_modules="q_proj"))
    assert (form.method_w.value, form.rank_w.value, form.alpha_w.value) == ("lora", "8", "")
    assert (form.targets_w.value, form.modules_w.value) == ("custom", "q_proj")
    assert form.params()["adapter"] == LoRA(rank=8, dropout=0.1, target_modules=("q_proj",))  # dropout kept
    assert "fm.LoRA(rank=8, dropout=0.1" in form.preview.code
    assert make_form(adapter="QLoRA").params()["adapter"] == "qlora"
    assert make_form(adapter={"rank": 16, "alpha": 8.0, "target_modules": "attention"}).params()["adapter"] == LoRA(alpha=8, target_modules="attention")
    bad = make_form(model="tiny-chat", adapter="dora")
    assert bad.method_w.value == "full"
    assert "is not an adapter" in errors(bad)["adapter"] and "showing full fine-tuning" in errors(bad)["adapter"]


def test_service_problems_with_the_adapter_show_by_the_method(make_form, fake):
    fake.create_error = invalid(("adapter", "QLoRA needs CUDA with bitsandbytes"))
    form = make_form(model="tiny-chat", train_data_path="t", register_to="main.demo")
    form.method_w.value = "qlora"
    assert form.submit() is None
    assert "QLoRA needs CUDA" in errors(form)["adapter"]
    assert form.advanced_w.selected_index == 0
    form.rank_w.value = "8"  # editing a LoRA setting clears what the service said about the adapter
    assert "adapter" not in errors(form)
