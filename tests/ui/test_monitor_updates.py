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
    fake.point("r1", 1, "train/grad_norm", 0.5)
    tracker = RunTracker("r1", lambda: fake)

    first = tracker.poll()
    assert [e["seq"] for e in first.events] == [1, 2]
    assert [m["name"] for m in first.metrics] == ["train/loss", "train/lr"]  # the chart's and panels' points only

    fake.train_step("r1", 2, 10, 2.5)
    second = tracker.poll()
    assert [e["seq"] for e in second.events] == [3]
    assert [m["value"] for m in second.metrics] == [2.5, 1e-3]
    assert reads(fake, "events")[-1] == ("events", "r1", 2)
    assert reads(fake, "metrics")[-1] == ("metrics", "r1", 3)  # the grad-norm point advanced the cursor too

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
    assert [m["id"] for m in metrics] == [1, 2, 3, 4, *range(11, 19)]  # (loss and lr points, one each per step)
    everything, points = tracker.missing((0, 0), (0, 0))
    assert len(everything) == 10 and len(points) == 18


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
        assert [m["value"] for m in sent[-1]["metrics"]] == [2.0, 1e-3]
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
        assert sent[-1]["view"] == "v2" and len(sent[-1]["events"]) == 6 and len(sent[-1]["metrics"]) == 10
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
        assert len(again.history["metrics"]) == 58  # a loss and a learning-rate point per step
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


def test_every_number_on_the_monitor_comes_from_the_latest_metric_point(fake, sent):
    """The header (summary), the legend and the status line read one source: the newest metric points.
    TRAIN_UPDATED events come at most every 0.5 s, points every step, so mid-run the event is older."""
    fake.add_run("r1")
    for step in range(1, 6):
        fake.train_step("r1", step, 10, 3.0 - step / 10)  # the last TRAIN_UPDATED: step 5, loss 2.5
    for step in (6, 7):  # steps logged as points, not (yet) reported as an event
        fake.point("r1", step, "train/loss", 2.0 - step / 100)
        fake.point("r1", step, "train/lr", 5e-4)
        fake.point("r1", step, "train/tokens_per_second", 1234.0)
    fake.point("r1", 5, "eval/loss", 2.25)
    fake.emit("r1", "EVAL_COMPLETED", "eval loss 2.2500 at ep1-ba5", step=5, checkpoint="ep1-ba5", eval_loss=2.25)
    last_update = [e for e in fake.event_log["r1"] if e.type == "TRAIN_UPDATED"][-1]
    fake.set_status("r1", RunStatus.RUNNING, details=last_update.message)  # as the service sets it
    mon = RunMonitor("r1", poll_seconds=3600)
    try:
        s = mon.summary
        assert (s["step"], s["total_steps"], s["loss"], s["eval_loss"]) == (7, 10, 1.93, 2.25)
        assert (s["lr"], s["tokens_per_second"], s["progress"]) == (5e-4, 1234.0, 70.0)
        assert s["epoch"] == 1.4  # the event's epoch (1 at step 5) moved on with the step
        assert s["details"] is None  # "[ba 5/10] loss 2.5000" would contradict the header's step 7, loss 1.93
        # the points the view reads are those same points (it applies the same rule: js currentNumbers)
        latest = {m["name"]: m for m in mon.history["metrics"]}
        assert latest["train/loss"]["value"] == s["loss"] and latest["train/loss"]["step"] == s["step"]
        assert latest["eval/loss"]["value"] == s["eval_loss"] and latest["train/lr"]["value"] == s["lr"]
        html = mon._snapshot_html()
        assert "loss 1.93" in html and "eval loss 2.25" in html and "loss 2.5000" not in html.split("Events")[0]

        fake.emit("r1", "CHECKPOINT_SAVED", "checkpoint ep1-ba8 saved", checkpoint="ep1-ba8")
        fake.set_status("r1", RunStatus.RUNNING, details="checkpoint ep1-ba8 saved")
        fake.point("r1", 8, "train/loss", 1.9)
        assert mon._poll() is True
        assert mon.summary["details"] == "checkpoint ep1-ba8 saved"  # a message without numbers stays
        assert (mon.summary["step"], mon.summary["loss"], mon.summary["progress"]) == (8, 1.9, 80.0)
        assert sent[-1]["metrics"][-1]["value"] == 1.9  # the view got the point the summary reads
    finally:
        mon.close()


def test_without_points_the_numbers_come_from_the_events(fake, sent):
    fake.add_run("r1")
    fake.emit("r1", "TRAIN_UPDATED", "[ba 3/10] loss 2.0000", step=3, total_steps=10, progress=30.0, loss=2.0, lr=1e-3)
    tracker = RunTracker("r1", lambda: fake)
    tracker.poll()
    s = tracker.summary()
    assert (s["step"], s["loss"], s["progress"], s["lr"]) == (3, 2.0, 30.0, 1e-3)


def test_a_queued_run_says_how_many_runs_are_ahead_of_it(fake, sent):
    from datetime import timedelta

    from tests.ui.fakes import T0

    listed = []
    real_list = fake.list_runs
    fake.list_runs = lambda limit=None, statuses=None: (listed.append(statuses), real_list(limit, statuses))[1]
    fake.add_run("busy")  # RUNNING: not in the queue
    for i, (name, status) in enumerate([("w1", RunStatus.QUEUED), ("w2", RunStatus.PENDING), ("me", RunStatus.QUEUED),
                                        ("later", RunStatus.QUEUED)], start=1):
        fake.add_run(name, status)
        fake.set_status(name, status, created_at=T0 + timedelta(seconds=i),
                        details="Queued: waiting for a free training slot")
    mon = RunMonitor("me", poll_seconds=3600)
    try:
        assert mon.summary["queue_ahead"] == 2  # w1 and w2 were created before it; busy is running, later is after
        assert mon.summary["details"] == "Queued: waiting for a free training slot"
        assert listed == [["PENDING", "QUEUED"]]  # one cheap list of the waiting runs
        assert "2 runs ahead in the queue" in mon._snapshot_text()

        mon._poll()
        assert len(listed) == 1  # not re-read on every tick
        mon.tracker.queue_seconds = 0
        fake.set_status("w1", RunStatus.RUNNING)
        mon._poll()
        assert mon.summary["queue_ahead"] == 1  # the summary is re-sent when only the queue moved

        fake.set_status("me", RunStatus.RUNNING, details="Starting")
        count = len(listed)
        mon._poll()
        assert "queue_ahead" not in mon.summary and len(listed) == count  # not waiting: no queue reads
    finally:
        mon.close()


def test_the_registered_model_comes_with_a_load_line(fake, sent):
    fake.add_run("r1", status=RunStatus.COMPLETED, registered_model_name="main.demo.r1", registered_model_version=3,
                 mlflow_experiment_id="7", mlflow_run_id="abc")
    mon = RunMonitor("r1")
    try:
        load = 'tunedeck.registry.load_model("main.demo.r1", 3)'
        assert load in mon._snapshot_text() and load.replace('"', "&quot;") in mon._snapshot_html()
    finally:
        mon.close()
    import inspect

    from tunedeck import registry

    assert list(inspect.signature(registry.load_model).parameters) == ["name", "version"]  # the line's call
