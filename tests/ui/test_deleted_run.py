"""A deleted run's monitor says it was deleted, whether the run was deleted with fm.delete, from the runs
browser, or found gone by the monitor itself; other runs' monitors are untouched."""

from __future__ import annotations

from tunedeck import foundation_model as fm
from tunedeck.types import RunStatus
from tunedeck.ui.monitor import DELETED_NOTE, RunMonitor
from tunedeck.ui.runs_browser import RunsBrowser


def test_fm_delete_tells_the_finished_runs_monitor(fake, sent):
    fake.add_run("done", RunStatus.STOPPED)
    fake.add_run("other", RunStatus.COMPLETED)
    mon, other = RunMonitor("done", poll_seconds=3600), RunMonitor("other", poll_seconds=3600)
    try:
        assert not mon.polling and mon.error == ""  # ended: it no longer asks the service anything
        assert fm.delete("done") == 1
        assert mon.error == DELETED_NOTE and "was deleted" in mon._snapshot_text() + mon._snapshot_html()
        assert other.error == ""
    finally:
        mon.close()
        other.close()


def test_the_runs_browsers_delete_tells_a_monitor_in_another_cell(fake, sent):
    fake.add_run("r1", RunStatus.COMPLETED)
    mon = RunMonitor("r1", poll_seconds=3600)
    browser = RunsBrowser(poll_seconds=3600)
    try:
        browser._on_view_message(None, {"kind": "delete", "name": "r1"}, [])
        assert ("delete_run", "r1") in fake.calls and mon.error == DELETED_NOTE
    finally:
        browser.close()
        mon.close()


def test_a_running_monitor_that_finds_its_run_gone_says_deleted(fake, sent):
    fake.add_run("live")
    mon = RunMonitor("live", poll_seconds=3600)
    try:
        fake.runs.pop("live")  # deleted by another process
        fake.event_log.pop("live")
        assert mon._poll() is False and mon.error == DELETED_NOTE
    finally:
        mon.close()
