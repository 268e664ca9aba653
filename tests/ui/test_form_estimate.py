"""The estimate before Start (the form's line under the Start button) and estimate vs actual on the results
card, with the fake service (tests/ui/fakes.py); the service's side is tests/service/test_estimate.py."""

from __future__ import annotations

import importlib
import os
import time
from datetime import timedelta


from tunedeck.types import RunStatus
from tunedeck.ui._results import estimate_vs_actual, results_card
from tunedeck.ui.monitor import RunMonitor

from tests.helpers import wait_for
from tests.ui.fakes import T0

VALID = dict(model="tiny-chat", train_data_path="t", register_to="main.demo", training_duration="40ba")


def test_estimate_shows_under_start_until_the_form_changes(make_form, fake):
    form = make_form(**VALID)
    assert form.estimate_out.value == ""
    result = form.estimate()
    assert result is not None and result["total_steps"] == 40
    call = [c for c in fake.calls if c[0] == "estimate"][-1][1]
    assert call["train_data_path"] == os.path.abspath("t") and call["training_duration"] == "40ba"  # as create() sends it
    line = form.estimate_out.value
    assert "~1,200 tokens/epoch, 40 steps, ~1m 30s on this machine (measured 500 tok/s" in line and "peak ~1.0 GiB" in line
    assert form.current_estimate() == result

    form.duration_w.value = "80"
    assert form.current_estimate() is None
    assert "the form changed since the estimate: Estimate again" in form.estimate_out.value
    form.duration_w.value = "40"  # back to what was estimated: the estimate holds again
    assert form.current_estimate() == result and "40 steps" in form.estimate_out.value


def test_no_estimate_of_a_form_with_problems_and_the_service_refusal_is_shown(make_form, fake):
    form = make_form(model="tiny-chat", train_data_path="t", register_to="main.demo", learning_rate="abc")
    assert form.estimate() is None
    assert "fix the fields marked in red" in form.estimate_out.value
    assert not [c for c in fake.calls if c[0] == "estimate"]

    fake.estimate_result = {"ok": False, "message": "model: cannot load the tokenizer"}
    form = make_form(**VALID)
    assert form.estimate() is None and "no estimate: model: cannot load the tokenizer" in form.estimate_out.value


def test_a_pending_estimate_is_no_error_and_follows_when_the_service_has_measured(make_form, fake, monkeypatch):
    """The first estimate of a model may take minutes (converting it, timing steps): the service answers
    pending, the form says so in grey and asks again by itself until the estimate comes."""
    form_module = importlib.import_module("tunedeck.ui.form")  # (tunedeck.ui.form, the attribute, is the function)
    monkeypatch.setattr(form_module, "ESTIMATE_RETRY_SECONDS", 0.05)
    measured = dict(fake.estimate_result)
    fake.estimate_result = {"ok": False, "pending": True, "stage": "throughput probe",
                            "message": "timing a few training steps of tiny-chat"}
    form = make_form(**VALID)
    assert form.estimate() is None
    assert "timing a few training steps of tiny-chat" in form.estimate_out.value
    assert "error-color" not in form.estimate_out.value and "no estimate" not in form.estimate_out.value
    wait_for(lambda: len([c for c in fake.calls if c[0] == "estimate"]) >= 3, timeout=10)  # asked again, still pending
    fake.estimate_result = measured
    wait_for(lambda: "40 steps" in form.estimate_out.value, timeout=10)
    assert form.current_estimate() == measured


def test_a_pending_estimate_of_fields_since_changed_is_dropped(make_form, fake, monkeypatch):
    form_module = importlib.import_module("tunedeck.ui.form")  # (tunedeck.ui.form, the attribute, is the function)
    monkeypatch.setattr(form_module, "ESTIMATE_RETRY_SECONDS", 0.05)
    fake.estimate_result = {"ok": False, "pending": True, "message": "converting the model"}
    form = make_form(**VALID)
    form.estimate()
    form.duration_w.value = "80"  # another run now: the background asking stops (the service stays pending)
    asked = len([c for c in fake.calls if c[0] == "estimate"])
    time.sleep(0.5)  # ten retries' time
    assert len([c for c in fake.calls if c[0] == "estimate"]) <= asked + 1
    assert form.current_estimate() is None and "converting the model" not in form.estimate_out.value


def test_check_data_that_passes_estimates_too(make_form, fake):
    fake.data_check_result = {"ok": True, "rows": 3, "tokens": {"min": 5, "median": 6, "max": 7, "total": 18},
                              "context_length": 1024, "too_long": 0}
    form = make_form(**VALID)
    form.check_data()
    assert [c[0] for c in fake.calls if c[0] in ("data_check", "estimate")] == ["data_check", "estimate"]
    assert "40 steps" in form.estimate_out.value


def test_start_records_the_estimate_with_the_run_and_its_card_compares(make_form, fake):
    form = make_form(**VALID)
    form.estimate()
    run = form.submit()
    assert run is not None and ("record_estimate", run.name) in fake.calls
    assert fake.recorded_estimates[run.name]["seconds"] == 90.0

    other = make_form(**{**VALID, "training_duration": "80ba"})  # no estimate of this state: none recorded
    second = other.submit()
    assert ("record_estimate", second.name) not in fake.calls

    fake.set_status(run.name, RunStatus.COMPLETED, completed_at=T0 + timedelta(seconds=117))  # started at T0
    fake.emit(run.name, "COMPLETED", "Completed")
    monitor = form.monitors.children[-1] if form.monitors.children[-1].run_name == run.name else form.monitors.children[0]
    assert isinstance(monitor, RunMonitor)
    monitor._poll()
    card = monitor.results
    assert card["estimate"]["line"].startswith("estimated 1m 30s, took 1m 57s (+30%)")
    assert "throughput estimated 500 tok/s, measured 450 tok/s" in card["estimate"]["line"]
    assert "estimated 1m 30s, took 1m 57s (+30%)" in monitor._snapshot_text()
    assert "estimated 1m 30s, took 1m 57s (+30%)" in monitor._snapshot_html()


def test_estimate_vs_actual_line():
    record = {"estimate": {"seconds": 100.0}, "actual": {"seconds": 80.0}}
    assert estimate_vs_actual(record)["line"] == "estimated 1m 40s, took 1m 20s (−20%)"
    assert estimate_vs_actual({**record, "actual": {"seconds": 100.2}})["line"].endswith("(±0%)")
    assert estimate_vs_actual({"estimate": {"seconds": 100.0}, "actual": None}) is None  # not completed yet
    assert estimate_vs_actual({"estimate": None, "actual": {"seconds": 5}}) is None  # started without an estimate
    assert estimate_vs_actual(None) is None
    card = results_card({"status": "COMPLETED"}, [], [], record)
    assert card["estimate"]["off_percent"] == -20
    assert results_card({"status": "COMPLETED"}, [], [])["estimate"] is None
