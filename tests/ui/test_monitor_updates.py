"""The monitor's incremental updates: after= cursors to the service, deltas to the browser."""

from __future__ import annotations

import gc
import threading
import time

from tunedeck.types import RunStatus
from tunedeck.ui._tracker import RunTracker
from tunedeck.ui.monitor import HISTORY_EVENTS, RunMonitor

from tests.helpers import wait_for


def reads(fake, kind):
    return [c for c in fake.calls if c[0] == kind]


def test_tracker_reads_only_what_is_new(fake):
    fake.add_run("r1")
    fake.train_step("r1", 1, 10, 3.0)
    tracker = RunTracker("r1", lambda: fake)

    first = tracker.poll()
    assert [e["seq"] for e in first.events] == [1, 2]
    assert [m["name"] for m in first.metrics] == ["train/loss"]  # the chart's points only

    fake.train_step("r1", 2, 10, 2.5)
    second = tracker.poll()
    assert [e["seq"] for e in second.events] == [3]
    assert [m["value"] for m in second.metrics] == [2.5]
    assert reads(fake, "events")[-1] == ("events", "r1", 2)
    assert reads(fake, "metrics")[-1] == ("metrics", "r1", 2)  # the lr point advanced the cursor too

    empty = tracker.poll()
    assert not empty.events and not empty.metrics and not empty
    assert len(tracker.events) == 3


def test_tracker_summary_follows_the_run(fake):
    fake.add_run("r1")
    fake.train_step("r1", 5, 10, 2.0)
    fake.emit("r1", "EVAL_COMPLETED", "eval", step=5, checkpoint="ep1-ba5", eval_loss=2.2)
    tracker = RunTracker("r1", lambda: fake)
    tracker.poll()
    s = tracker.summary()
    assert (s["status"], s["step"], s["total_steps"], s["loss"], s["eval_loss"]) == ("RUNNING", 5, 10, 2.0, 2.2)
    assert s["progress"] == 50.0 and s["eta_at"]  # ETA from the latest TRAIN_UPDATED

    fake.emit("r1", "MODEL_REGISTERED", "registered", name="main.demo.r1", version=3)
    fake.set_status("r1", RunStatus.COMPLETED)
    tracker.poll()
    s = tracker.summary()
    assert s["terminal"] and s["eta_at"] is None and s["progress"] == 100.0
    assert (s["registered_model_name"], s["registered_model_version"]) == ("main.demo.r1", 3)


def test_tracker_tells_a_view_only_what_it_lacks(fake):
    fake.add_run("r1")
    for step in range(1, 10):
        fake.train_step("r1", step, 9, 1.0 / step)
    tracker = RunTracker("r1", lambda: fake)
    tracker.poll()
    events, metrics = tracker.missing((4, 7), (5, 10))
    assert [e["seq"] for e in events] == [1, 2, 3, 8, 9, 10]
    assert [m["id"] for m in metrics] == [1, 3, 11, 13, 15, 17]  # (the even ids are lr points: not charted)
    everything, points = tracker.missing((0, 0), (0, 0))
    assert len(everything) == 10 and len(points) == 9


def test_monitor_sends_deltas_never_the_whole_history(fake, sent):
    fake.add_run("r1")
    fake.train_step("r1", 1, 3, 3.0)
    mon = RunMonitor("r1", poll_seconds=3600)  # the test ticks by hand
    try:
        assert [e["seq"] for e in mon.history["events"]] == [1, 2]
        history_before = mon.history

        fake.train_step("r1", 2, 3, 2.0)
        assert mon._poll() is True
        assert sent[-1]["kind"] == "delta"
        assert [e["seq"] for e in sent[-1]["events"]] == [3]
        assert [m["value"] for m in sent[-1]["metrics"]] == [2.0]
        assert mon.history is history_before  # the history traitlet is not touched on a tick
        assert mon.summary["step"] == 2

        count = len(sent)
        assert mon._poll() is True
        assert len(sent) == count  # nothing new: nothing sent

        fake.train_step("r1", 3, 3, 1.0)
        fake.emit("r1", "COMPLETED", "Completed")
        fake.set_status("r1", RunStatus.COMPLETED)
        assert mon._poll() is False  # terminal: the poll loop ends
        assert [e["seq"] for e in sent[-1]["events"]] == [4, 5]
        assert [e["seq"] for e in mon.history["events"]] == [1, 2, 3, 4, 5]  # final history for re-renders
    finally:
        mon.close()


def test_a_reconnecting_view_gets_what_it_lacks_once(fake, sent):
    fake.add_run("r1")
    for step in range(1, 6):
        fake.train_step("r1", step, 5, 1.0)
    mon = RunMonitor("r1", poll_seconds=3600)
    try:
        mon._on_view_message(mon, {"kind": "sync", "view": "v1", "first_seq": 1, "last_seq": 6, "first_metric_id": 1, "last_metric_id": 10}, [])
        assert sent[-1] == {"kind": "missing", "view": "v1", "events": [], "metrics": []}
        mon._on_view_message(mon, {"kind": "sync", "view": "v2", "first_seq": 0, "last_seq": 0, "last_metric_id": 0}, [])
        assert sent[-1]["view"] == "v2" and len(sent[-1]["events"]) == 6 and len(sent[-1]["metrics"]) == 5
    finally:
        mon.close()


def test_history_traitlet_is_capped_but_sync_returns_everything(fake, sent):
    fake.add_run("r1")
    for step in range(1, HISTORY_EVENTS + 200):
        fake.emit("r1", "TRAIN_UPDATED", f"step {step}", step=step)
    fake.set_status("r1", RunStatus.COMPLETED)
    mon = RunMonitor("r1")
    try:
        assert len(mon.history["events"]) == HISTORY_EVENTS
        assert mon.history["event_count"] == HISTORY_EVENTS + 200
        first = mon.history["events"][0]["seq"]
        last = mon.history["events"][-1]["seq"]
        mon._on_view_message(mon, {"kind": "sync", "view": "v", "first_seq": first, "last_seq": last, "first_metric_id": 0, "last_metric_id": 0}, [])
        assert [e["seq"] for e in sent[-1]["events"]] == list(range(1, first))
    finally:
        mon.close()


def test_poll_thread_runs_until_the_run_ends(fake, sent):
    fake.add_run("r1")
    mon = RunMonitor("r1", poll_seconds=0.05)
    assert mon.polling
    fake.train_step("r1", 1, 1, 1.0)
    wait_for(lambda: any(m.get("kind") == "delta" for m in sent), timeout=5)
    fake.emit("r1", "COMPLETED", "Completed")
    fake.set_status("r1", RunStatus.COMPLETED)
    wait_for(lambda: not mon._poller._thread.is_alive(), timeout=5)
    assert mon.summary["status"] == "COMPLETED"
    mon.close()


def test_close_stops_the_thread_and_a_dropped_monitor_does_not_keep_it(fake, sent):
    fake.add_run("r1")
    mon = RunMonitor("r1", poll_seconds=0.05)
    thread = mon._poller._thread
    mon.close()
    thread.join(2)
    assert not thread.is_alive()

    before = {t.name for t in threading.enumerate()}
    mon2 = RunMonitor("r1", poll_seconds=0.05)
    thread2 = mon2._poller._thread
    mon2.close()  # ipywidgets holds open widgets in a registry; once closed, nothing holds it
    del mon2
    gc.collect()
    thread2.join(2)
    assert not thread2.is_alive()
    assert {t.name for t in threading.enumerate()} <= before | {thread2.name}


def test_errors_become_a_message_and_polling_recovers(fake, sent):
    fake.add_run("r1")
    mon = RunMonitor("r1", poll_seconds=3600)
    try:
        real = fake.get_run
        fake.get_run = lambda name: (_ for _ in ()).throw(ConnectionError("service restarting"))
        mon._poll_quietly()
        assert "service restarting" in mon.error
        fake.get_run = real
        mon._poll_quietly()
        assert mon.error == ""
    finally:
        mon.close()


def test_cancel_from_the_view(fake, sent):
    fake.add_run("r1")
    mon = RunMonitor("r1", poll_seconds=3600)
    try:
        mon._on_view_message(mon, {"kind": "cancel"}, [])
        assert ("cancel_run", "r1") in fake.calls
        assert mon.summary["status"] == "STOPPED"
        assert sent[-1]["events"][-1]["type"] == "STOPPED"
    finally:
        mon.close()


def test_unknown_run_shows_a_message(fake, sent):
    mon = RunMonitor("nope")
    assert "nope" in mon.error and not mon.polling
    mon.close()


def test_reopening_in_a_new_kernel_shows_the_whole_history(fake, sent):
    """A monitor has no state of its own: a new one (new kernel) reads everything from sequence 0."""
    fake.add_run("r1")
    for step in range(1, 30):
        fake.train_step("r1", step, 40, 3.0 - step / 20)
    first = RunMonitor("r1", poll_seconds=3600)
    first.close()
    again = RunMonitor("r1", poll_seconds=3600)
    try:
        assert [e["seq"] for e in again.history["events"]] == list(range(1, 31))
        assert len(again.history["metrics"]) == 29
        assert again.summary["step"] == 29
    finally:
        again.close()


def test_snapshot_is_text_and_escapes_everything(fake, sent):
    fake.add_run("r1", status=RunStatus.COMPLETED)
    xss = "<img src=x onerror=alert(1)>"
    fake.emit("r1", "EVAL_GENERATIONS", f"gen {xss}", checkpoint="ep1-ba2", step=2, generations=[{"prompt": xss, "generation": "</table><script>x</script>"}])
    mon = RunMonitor("r1")
    try:
        bundle = mon._repr_mimebundle_()
        html = bundle["text/html"]
        assert "<img" not in html and "<script" not in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html
        assert "COMPLETED" in bundle["text/plain"] and xss in bundle["text/plain"]
        assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == mon.model_id
    finally:
        mon.close()
    assert "application/vnd.jupyter.widget-view+json" not in mon._mimebundle()  # closed: snapshot only


def test_a_terminal_run_is_read_once_and_not_polled(fake, sent):
    fake.add_run("r1", status=RunStatus.FAILED)
    fake.emit("r1", "FAILED", "Failed: out of memory", reason="out of memory")
    mon = RunMonitor("r1", poll_seconds=0.01)
    time.sleep(0.1)
    assert not mon.polling
    assert mon.summary["failure"] == "out of memory"
    assert len([c for c in fake.calls if c[0] == "get_run"]) == 1
    called = []
    mon.on_terminal(lambda m: called.append(m.run_name))
    assert called == ["r1"]
    mon.close()
