"""The runs browser without a browser: rows and their final losses, open/cancel/delete, refresh, sort and
filter, the snapshot and how it is displayed."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tunedeck.types import RunStatus
from tunedeck.ui._snapshot import WIDGET_VIEW
from tunedeck.ui.runs_browser import RunsBrowser, visible_rows


@pytest.fixture
def browser(fake, sent):
    fake.add_run("old", status=RunStatus.COMPLETED, registered_model_name="main.demo.old", registered_model_version=1)
    fake.add_run("new")
    b = RunsBrowser(poll_seconds=3600)
    yield b
    b.close()


def test_rows_list_every_run_newest_first(browser):
    rows = browser.table.rows
    assert [r["name"] for r in rows] == ["new", "old"] or {r["name"] for r in rows} == {"new", "old"}
    old = next(r for r in rows if r["name"] == "old")
    assert old["status"] == "COMPLETED" and old["registered_model"] == "main.demo.old v1"


def test_refresh_sends_rows_only_when_they_changed(browser, fake):
    rows = browser.table.rows
    browser.refresh()
    assert browser.table.rows is rows
    fake.set_status("new", RunStatus.COMPLETED)
    browser.refresh()
    assert next(r for r in browser.table.rows if r["name"] == "new")["status"] == "COMPLETED"


def test_open_cancel_delete_from_the_view(browser, fake):
    browser._on_view_message(None, {"kind": "open", "name": "new"}, [])
    browser._on_view_message(None, {"kind": "open", "name": "new"}, [])
    assert [m.run_name for m in browser.monitors.children] == ["new"]  # once
    assert browser.table.open_names == ["new"]
    browser._on_view_message(None, {"kind": "cancel", "name": "new"}, [])
    assert ("cancel_run", "new") in fake.calls and "cancel requested for new" in browser.table.notice
    browser._on_view_message(None, {"kind": "delete", "name": "new"}, [])
    assert ("delete_run", "new") in fake.calls and browser.monitors.children == ()
    assert [r["name"] for r in browser.table.rows] == ["old"]


def test_close_stops_refreshing(fake, sent):
    b = RunsBrowser(poll_seconds=0.05)
    thread = b._poller._thread
    b.close()
    thread.join(2)
    assert not thread.is_alive()


def test_snapshot_lists_the_runs(browser):
    bundle = browser._repr_mimebundle_()
    assert "main.demo.old v1" in bundle["text/html"] and "new" in bundle["text/plain"]


# -- final losses -------------------------------------------------------------------------------------------
def test_rows_carry_each_runs_latest_train_and_eval_loss(fake, sent):
    fake.add_run("done", status=RunStatus.COMPLETED)
    fake.point("done", 1, "train/loss", 2.5)
    fake.point("done", 2, "train/loss", 1.25)
    fake.point("done", 2, "eval/loss", 1.5)
    fake.point("done", 2, "train/lr", 1e-3)
    fake.add_run("fresh")
    b = RunsBrowser(poll_seconds=3600)
    try:
        rows = {r["name"]: r for r in b.table.rows}
        assert (rows["done"]["train_loss"], rows["done"]["eval_loss"]) == (1.25, 1.5)
        assert (rows["fresh"]["train_loss"], rows["fresh"]["eval_loss"]) == (None, None)
    finally:
        b.close()


def test_losses_are_read_incrementally_and_a_finished_run_no_more(fake, sent):
    fake.add_run("live")
    fake.point("live", 1, "train/loss", 3.0)
    b = RunsBrowser(poll_seconds=3600)
    try:
        first_id = fake.metric_log["live"][-1]["id"]
        fake.point("live", 2, "train/loss", 2.0)
        b.refresh()
        assert ("metrics", "live", first_id) in fake.calls  # only the points not read before
        assert b.table.rows[0]["train_loss"] == 2.0
        fake.point("live", 3, "eval/loss", 1.75)
        fake.set_status("live", RunStatus.COMPLETED)
        b.refresh()  # read once more after it ended...
        assert (b.table.rows[0]["train_loss"], b.table.rows[0]["eval_loss"]) == (2.0, 1.75)
        reads = sum(1 for c in fake.calls if c[0] == "metrics")
        b.refresh()
        b.refresh()
        assert sum(1 for c in fake.calls if c[0] == "metrics") == reads  # ...then never again
    finally:
        b.close()


# -- sort and filter (the view's settings; the snapshot follows them) -------------------------------------------
def row(name, status="COMPLETED", created="2026-01-02T12:00:00+00:00", train=None, evl=None, model="tiny-chat",
        started="2026-01-02T12:00:00+00:00", completed="2026-01-02T12:01:00+00:00"):
    return {"name": name, "status": status, "model": model, "task_type": "CHAT_COMPLETION", "created_at": created,
            "started_at": started, "completed_at": completed, "registered_model": "", "train_loss": train, "eval_loss": evl}


ROWS = [
    row("alpha", "COMPLETED", "2026-01-02T12:00:00+00:00", 1.5, 1.75),
    row("beta", "FAILED", "2026-01-03T12:00:00+00:00", None, None, completed="2026-01-02T12:00:10+00:00"),
    row("gamma", "RUNNING", "2026-01-04T12:00:00+00:00", 0.5, None, model="Big-Model", completed=None),
    row("delta", "STOPPED", "2026-01-01T12:00:00+00:00", 2.5, 0.25),
]


def names(rows):
    return [r["name"] for r in rows]


def test_visible_rows_sort_newest_first_by_default_and_by_any_column():
    assert names(visible_rows(ROWS)) == ["gamma", "beta", "alpha", "delta"]
    assert names(visible_rows(ROWS, "created", descending=False)) == ["delta", "alpha", "beta", "gamma"]
    assert names(visible_rows(ROWS, "name", descending=False)) == ["alpha", "beta", "delta", "gamma"]
    # a run without the value goes last whichever the direction
    assert names(visible_rows(ROWS, "train_loss", descending=False)) == ["gamma", "alpha", "delta", "beta"]
    assert names(visible_rows(ROWS, "train_loss", descending=True)) == ["delta", "alpha", "gamma", "beta"]
    assert names(visible_rows(ROWS, "eval_loss", descending=False)) == ["delta", "alpha", "beta", "gamma"]
    now = datetime(2026, 1, 2, 13, 0, tzinfo=timezone.utc)  # gamma has run an hour by then
    assert names(visible_rows(ROWS, "duration", descending=True, now=now)) == ["gamma", "delta", "alpha", "beta"]
    assert names(visible_rows(ROWS, "no-such-column")) == names(visible_rows(ROWS))


def test_visible_rows_filter_by_status_group_and_text():
    assert names(visible_rows(ROWS, status="active")) == ["gamma"]
    assert names(visible_rows(ROWS, status="FAILED")) == ["beta"]
    assert names(visible_rows(ROWS, text="  big-MODEL ")) == ["gamma"]  # any case, the model column too
    assert names(visible_rows(ROWS, text="ta")) == ["beta", "delta"]
    assert names(visible_rows(ROWS, status="STOPPED", text="ta")) == ["delta"]
    assert visible_rows(ROWS, text="nothing like it") == []


def test_the_snapshot_lists_what_the_view_shows(browser):
    browser.table.status_filter = "COMPLETED"
    text = browser._repr_mimebundle_()["text/plain"]
    assert "(1 of 2)" in text and "filtered (status: COMPLETED)" in text
    assert "old" in text and "new " not in text
    browser.table.status_filter = "all"
    browser.table.text_filter = "NE"
    assert [r["name"] for r in browser.visible_rows()] == ["new"]


# -- display: the live view and its snapshot as two outputs; the snapshot follows the list -------------------------
def test_display_is_the_live_view_then_a_snapshot_that_follows_changes(browser, fake):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    with capture_output() as shown:
        browser._ipython_display_()
    view, snapshot = shown.outputs
    assert list(view.data) == [WIDGET_VIEW] and view.data[WIDGET_VIEW]["model_id"] == browser.model_id
    assert "tunedeck-fallback" in snapshot.data["text/html"] and "Run the cell again" in snapshot.data["text/html"]
    assert "RUNNING" in snapshot.data["text/plain"]
    with capture_output() as updates:
        browser.refresh()  # nothing changed: no update
        fake.set_status("new", RunStatus.COMPLETED)
        browser.refresh()
    assert len(updates.outputs) == 1
    assert "RUNNING" not in updates.outputs[0].data["text/plain"]
    assert updates.outputs[0].data.keys() == {"text/plain", "text/html"}  # the live view is left alone


def test_the_snapshot_escapes_run_fields(fake, sent):
    fake.add_run("r1", status=RunStatus.COMPLETED, registered_model_name="<img src=x onerror=alert(1)>", registered_model_version=1)
    b = RunsBrowser(poll_seconds=3600)
    try:
        html = b._repr_mimebundle_()["text/html"]
        assert "<img" not in html and "&lt;img src=x" in html
    finally:
        b.close()


def test_the_kernel_sorts_and_filters_as_the_view_does():
    """tests/ui/js/runs_cases.json is checked here against visible_rows and in runs.test.mjs against the
    view's visibleRows: the snapshot lists the same rows in the same order as the table."""
    import json
    from pathlib import Path

    spec = json.loads((Path(__file__).parent / "js" / "runs_cases.json").read_text())
    assert len(spec["cases"]) >= 10
    for case in spec["cases"]:
        got = visible_rows(spec["rows"], case["sort"], case["descending"], case.get("status", "all"), case.get("text", ""),
                           datetime.fromisoformat(case["now"]))
        assert names(got) == case["expect"], case


def test_a_running_runs_new_loss_does_not_rewrite_the_snapshot_but_its_end_does(browser, fake):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    with capture_output():
        browser._ipython_display_()
    with capture_output() as updates:
        fake.point("new", 1, "train/loss", 2.0)
        browser.refresh()
        new = next(r for r in browser.table.rows if r["name"] == "new")
        assert new["train_loss"] == 2.0 and updates.outputs == []  # the table has it, the snapshot waits
        fake.set_status("new", RunStatus.COMPLETED)
        browser.refresh()
    assert len(updates.outputs) == 1 and "train 2 " in updates.outputs[0].data["text/plain"]


def test_ticked_runs_open_one_comparison_below_the_table(browser, fake):
    from tunedeck.ui.compare import RunComparison

    browser._on_view_message(None, {"kind": "compare", "names": ["new"]}, [])
    assert browser.monitors.children == () and "at least two" in browser.table.notice
    browser._on_view_message(None, {"kind": "compare", "names": ["new", "old", "new"]}, [])
    (first,) = browser.monitors.children
    assert isinstance(first, RunComparison) and [t.name for t in first.trackers] == ["new", "old"]
    assert [r["name"] for r in first.rows] == ["new", "old"] and "comparing 2 runs" in browser.table.notice
    browser._on_view_message(None, {"kind": "open", "name": "old"}, [])
    browser._on_view_message(None, {"kind": "compare", "names": ["old", "new"]}, [])  # replaces the first
    comparisons = [c for c in browser.monitors.children if isinstance(c, RunComparison)]
    assert len(comparisons) == 1 and comparisons[0] is not first and browser.table.open_names == ["old"]
