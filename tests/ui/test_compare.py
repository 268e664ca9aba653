"""The comparison view's state from the service's runs and metrics (FakeClient), live and after the end."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from tests.ui.fakes import T0

import tunedeck
from tunedeck.types import RunStatus
from tunedeck.ui import _static


def row(widget, name):
    return next(r for r in widget.rows if r["name"] == name)


def test_rows_and_series_from_runs_and_metrics(fake):
    fake.add_run("a", RunStatus.RUNNING, learning_rate=1e-4, training_duration="5ba")
    fake.add_run("b", RunStatus.COMPLETED, learning_rate=3e-4, training_duration="10ba", adapter={"type": "lora", "rank": 8},
                 completed_at=T0 + timedelta(seconds=75), registered_model_name="main.demo", registered_model_version=2)
    for step, loss in ((1, 2.0), (2, 1.5)):
        fake.train_step("a", step, 5, loss)
    for step, loss in ((1, 2.5), (2, 1.1), (2, 1.0)):  # step 2 logged twice (a resumed run): the newest counts
        fake.train_step("b", step, 10, loss)
    fake.point("b", 2, "eval/loss", 1.25)
    widget = tunedeck.compare(["a", "b"])
    try:
        assert [r["name"] for r in widget.rows] == ["a", "b"]
        assert widget.series["a"] == {"train": [[1, 2.0], [2, 1.5]], "eval": []}
        assert widget.series["b"] == {"train": [[1, 2.5], [2, 1.0]], "eval": [[2, 1.25]]}
        b = row(widget, "b")
        assert (b["learning_rate"], b["training_duration"], b["lora_rank"], b["status"]) == (3e-4, "10ba", 8, "COMPLETED")
        assert (b["loss"], b["eval_loss"], b["seconds"]) == (1.0, 1.25, 75.0)
        assert (b["registered_model_name"], b["registered_model_version"]) == ("main.demo", 2)
        assert b["label"] == "lr 0.0003 · 10ba · r8" and row(widget, "a")["label"] == "lr 0.0001 · 5ba"
        assert row(widget, "a")["color"] != b["color"]
        assert row(widget, "a")["loss"] == 1.5 and row(widget, "a")["status"] == "RUNNING"
        assert widget.polling  # a run still trains: followed
        text = widget._snapshot_text()
        assert "b · 0.0003 · 10ba · 8 · COMPLETED · 1 · 1.25 · 1m 15s · main.demo v2" in text
        html = widget._snapshot_html()
        assert html.count("<path") == 3 and "main.demo v2" in html
    finally:
        widget.close()


def test_live_updates_until_every_run_ends_then_the_best_is_marked(fake):
    fake.add_run("a", RunStatus.RUNNING, learning_rate=1e-4, training_duration="5ba")
    fake.add_run("b", RunStatus.RUNNING, learning_rate=3e-4, training_duration="5ba")
    widget = tunedeck.compare(["a", "b"], poll_seconds=3600)  # polled by hand below
    try:
        assert widget.series["a"]["train"] == [] and not any(r["best"] for r in widget.rows)
        fake.train_step("a", 1, 5, 2.0)
        fake.train_step("b", 1, 5, 1.8)
        assert widget._poll() is True
        assert widget.series["a"]["train"] == [[1, 2.0]] and row(widget, "b")["loss"] == 1.8
        fake.point("a", 5, "eval/loss", 0.9)
        fake.point("b", 5, "eval/loss", 1.4)
        fake.set_status("a", RunStatus.COMPLETED, completed_at=T0 + timedelta(seconds=30))
        assert widget._poll() is True  # b still runs
        fake.set_status("b", RunStatus.FAILED, completed_at=T0 + timedelta(seconds=40))
        assert widget._poll() is False  # all ended: the poll thread stops
        assert widget.finished
        assert [r["best"] for r in widget.rows] == [True, False]  # a: lowest final eval loss (and completed)
        assert row(widget, "b")["status"] == "FAILED" and row(widget, "b")["seconds"] == 40.0
        calls = len(fake.calls)
        widget.refresh()  # ended runs are not read again
        assert len(fake.calls) == calls
    finally:
        widget.close()


def test_a_sweep_result_labels_runs_by_cell_and_a_deleted_run_says_so(fake):
    runs = tunedeck.sweep([1e-4, 2e-4], ["5ba"], model="tiny-chat", train_data_path="/d/t.jsonl", register_to="main.demo")
    widget = tunedeck.compare(runs, poll_seconds=3600)
    try:
        assert [r["label"] for r in widget.rows] == ["lr 0.0001 · 5ba", "lr 0.0002 · 5ba"]
        fake.delete_run(runs[0].name)
        widget.refresh()
        assert row(widget, runs[0].name)["status"] == "DELETED"
    finally:
        widget.close()


def test_compare_needs_runs(fake):
    with pytest.raises(ValueError):
        tunedeck.compare([])


def test_series_are_thinned_keeping_the_last_point():
    from tunedeck.ui.compare import series_of

    metrics = [{"id": i, "step": i, "name": "train/loss", "value": 1.0 / i} for i in range(1, 1001)]
    out = series_of(metrics, "train/loss", max_points=100)
    assert len(out) == 100 and out[0] == [1, 1.0] and out[-1] == [1000, 0.001]


def test_the_view_is_one_module_that_parses():
    source = _static.esm("compare.js")
    assert "export default" in source and 'from "./' not in source and source.count("function h(") == 1


def test_import_tunedeck_compare_loads_no_torch():
    code = ("import sys, tunedeck, tunedeck.sweeps, tunedeck.ui.compare; "
            "print([m for m in ('torch', 'transformers') if m in sys.modules], callable(tunedeck.sweep))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] True"
