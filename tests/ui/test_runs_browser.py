"""The runs browser without a browser: rows, open/cancel/delete, refresh, snapshot."""

from __future__ import annotations

import pytest

from tunedeck.types import RunStatus
from tunedeck.ui.runs_browser import RunsBrowser


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
