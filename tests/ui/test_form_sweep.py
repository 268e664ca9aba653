"""The form's Sweep: comma-separated Learning rates, Durations (and LoRA ranks), each value checked as the
single field is, the tunedeck.sweep call in the preview, and Start creating one run per cell with their
comparison view under the form. With Sweep off nothing changes.

The service here is the in-memory FakeClient (tests/ui/fakes.py); the browser test
tests/browser/test_compare.py runs a sweep on the real service.
"""

from __future__ import annotations

import ast


from tunedeck.errors import Problem
from tunedeck.types import LoRA
from tunedeck.ui._validation import FormState, validate
from tunedeck.ui.compare import RunComparison
from tunedeck.ui.form import TrainingForm
from tunedeck.ui.monitor import RunMonitor

BASE = {"model": "tiny-chat", "train_data_path": "/d/train.jsonl", "register_to": "main.demo"}


def errors(form: TrainingForm) -> dict[str, str]:
    return {field: box.value for field, box in form._errors.items() if box.value}


def sweep_call(code: str) -> dict:
    """The keyword arguments of the preview's tunedeck.sweep(...) call (and that it compares the runs)."""
    tree = ast.parse(code)
    assign, last = tree.body[-2], tree.body[-1]
    assert ast.unparse(last) == "tunedeck.compare(runs)"
    assert isinstance(assign, ast.Assign) and ast.unparse(assign.value.func) == "tunedeck.sweep"
    out = {}
    for kw in assign.value.keywords:
        node = kw.value
        if isinstance(node, ast.Call):  # fm.LoRA(...)
            out[kw.arg] = LoRA(**{k.arg: ast.literal_eval(k.value) for k in node.keywords})
        else:
            out[kw.arg] = ast.literal_eval(node)
    return out


def sweep_form(make_form, lrs="1e-4, 3e-4", durations="2, 3", unit="ba", **defaults):
    form = make_form(**{**BASE, **defaults})
    form.sweep_w.value = True
    form.unit_w.value = unit
    form.lr_w.value = lrs
    form.duration_w.value = durations
    return form


def test_sweep_off_is_the_single_run_form(make_form):
    form = make_form(**BASE, learning_rate="1e-4", training_duration="2ba")
    assert form.sweep_w.value is False
    assert "fm.create(" in form.code() and "tunedeck.sweep" not in form.code()
    assert form.params()["learning_rate"] == 1e-4 and form.params()["training_duration"] == "2ba"
    form.lr_w.value = "1e-4, 3e-4"  # a list is not a learning rate without Sweep
    assert "learning_rate" in errors(form)
    assert form.start_w.description == "Start training"
    form.lr_w.value = "1e-4"
    form.duration_w.value = "1,000"  # a thousands separator, as before
    assert form.params()["training_duration"] == "1000ba"


def test_sweep_preview_is_the_sweep_call(make_form):
    form = sweep_form(make_form, experiment_path="/Users/me/sweep")
    call = sweep_call(form.code())
    assert call == {
        "learning_rates": [1e-4, 3e-4], "training_durations": ["2ba", "3ba"], **BASE,
        "experiment_path": "/Users/me/sweep",
    }
    assert "4 run(s)" in form.code()
    assert form.start_w.description == "Start sweep (4 runs)"
    assert "learning_rate" not in form.params() and "training_duration" not in form.params()
    assert form.advanced_w.titles[0].endswith("sweep")
    form.sweep_w.value = False  # back to one run: the list is now a single field's error
    assert "fm.create(" in form.code() and "learning_rate" in errors(form)


def test_each_value_is_checked_as_the_single_field_and_named(make_form):
    form = sweep_form(make_form, lrs="1e-4, abc, 2", durations="2, 0, x")
    shown = errors(form)
    assert "&#x27;abc&#x27; is not a number" in shown["learning_rate"] or "'abc' is not a number" in shown["learning_rate"]
    assert "out of range" in shown["learning_rate"] and "2" in shown["learning_rate"]
    assert "must be greater than 0" in shown["training_duration"] and "0 batches" in shown["training_duration"]
    assert "x" in shown["training_duration"] and "not a whole number of batches" in shown["training_duration"]
    code = form.code()
    assert "abc" not in code and "'x'" not in code and '"x"' not in code  # invalid values never reach the preview
    assert "# learning_rates: left out, Learning rate is invalid" in code
    assert "# training_durations: left out, Duration is invalid" in code
    assert form.submit() is None
    form.lr_w.value = "1e-4, 1e-4"
    assert "given twice" in errors(form)["learning_rate"]


def test_blank_lists_are_required_on_start(make_form, fake):
    form = sweep_form(make_form, lrs="", durations="")
    assert "learning_rate" not in errors(form)  # not before Start
    assert "is required" in errors(form)["training_duration"]
    assert form.submit() is None
    assert "is required for a sweep" in errors(form)["learning_rate"]
    assert fake.created == []


def test_lora_ranks_sweep_only_with_lora_on(make_form):
    form = sweep_form(make_form)
    form.rank_w.value = "4, 8"  # LoRA off: the rank field is hidden and not swept
    assert "lora_ranks" not in sweep_call(form.code())
    form.method_w.value = "lora"
    call = sweep_call(form.code())
    assert call["lora_ranks"] == [4, 8] and call["adapter"] == "lora"
    assert form.start_w.description == "Start sweep (8 runs)"
    form.rank_w.value = "4, zero"
    assert "zero" in errors(form)["adapter_rank"]
    assert "lora_ranks" not in sweep_call(form.code())


def test_start_creates_every_cell_and_shows_their_comparison(make_form, fake):
    form = sweep_form(make_form)
    assert form.submit() is None  # a sweep makes several runs: form.runs holds them
    runs = form.runs
    assert [c.label for c in runs.cells] == ["lr 0.0001 · 2ba", "lr 0.0001 · 3ba", "lr 0.0003 · 2ba", "lr 0.0003 · 3ba"]
    assert [(p["learning_rate"], p["training_duration"]) for p in fake.created] == [
        (1e-4, "2ba"), (1e-4, "3ba"), (3e-4, "2ba"), (3e-4, "3ba")]
    assert all(p["register_to"] == "main.demo" for p in fake.created)
    shown = form.monitors.children
    assert len(shown) == 1 and isinstance(shown[0], RunComparison) and shown[0] is form.comparison
    assert [r["name"] for r in form.comparison.rows] == [r.name for r in runs]
    assert "started 4 runs" in form.status_w.value
    assert not any(isinstance(c, RunMonitor) for c in shown)
    assert "tunedeck.sweep(" in form._snapshot_text() and runs[0].name in form._snapshot_text()


def test_a_refused_cell_is_shown_by_its_field_and_cleared_with_sweep_off(make_form, fake, monkeypatch):
    def validate_params(params):  # the service refuses 0.5 for this model (the form's own check allows it)
        if params.get("learning_rate") == 0.5:
            return [Problem("learning_rate", "0.5 diverges for this model")]
        return []

    monkeypatch.setattr(fake, "validate", validate_params)
    form = sweep_form(make_form, lrs="1e-4, 0.5")
    assert form.submit() is None
    shown = errors(form)["learning_rate"]
    assert "cell 3 (lr 0.5 · 2ba)" in shown and "cell 4 (lr 0.5 · 3ba)" in shown and "diverges" in shown
    assert fake.created == [] and form.monitors.children == ()
    form.sweep_w.value = False  # the answer was about the sweep: it does not stay on the single field
    assert "diverges" not in errors(form).get("learning_rate", "")


def test_validate_is_one_function_of_the_state():
    state = FormState(model="m", train_data_path="t", register_to="main.demo", sweep=True,
                      learning_rate="1e-4,3e-4", duration="1, 2", duration_unit="ep")
    v = validate(state, {})
    assert v.sweep == {"learning_rates": [1e-4, 3e-4], "training_durations": ["1ep", "2ep"]}
    assert v.runs == 4
    assert validate(state, {}).sweep == v.sweep
    single = validate(FormState(model="m", train_data_path="t", register_to="main.demo", learning_rate="1e-4"), {})
    assert single.sweep is None and single.runs == 1
