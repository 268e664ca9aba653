"""A Ray run the cluster has no room for waits saying why, then fails with the reason (Ray Train
itself would wait for ever, the run silent in STARTING): training/ray_train.py wait_for_room. The
cluster's resources are a stand-in function here (what ray.cluster_resources answers); the real
cluster paths are tests/service/test_ray.py's."""

from __future__ import annotations

from tunedeck.training.ray_train import Cancel, wait_for_room
from tunedeck.training.report import Reporter


def reports():
    seen: list[dict] = []
    return seen, Reporter(sink=seen.append)


def test_waits_while_an_autoscaling_cluster_grows_and_says_so_once(tmp_path):
    seen, reporter = reports()
    answers = iter([{"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 4.0}])
    ok = wait_for_room(lambda: next(answers), "CPU", 2, "10.0.0.5:6379", reporter, Cancel(tmp_path / "stop"),
                       timeout=30, every=0.01)
    assert ok
    assert seen == [{"kind": "run", "fields": {"details": "Waiting: the Ray cluster at 10.0.0.5:6379 has 1 CPU(s) "
                                                          "and this run's 2 worker(s) need 2"}}]


def test_fails_with_the_reason_when_it_never_has_room(tmp_path):
    seen, reporter = reports()
    ok = wait_for_room(lambda: {"CPU": 2.0}, "GPU", 4, "head:6379", reporter, Cancel(tmp_path / "stop"),
                       timeout=0.05, every=0.01)
    assert not ok
    failures = [r for r in seen if r["kind"] == "failure"]
    assert len(failures) == 1 and "has 0 GPU(s) and this run's 4 worker(s) need 4" in failures[0]["reason"]
    assert "TUNEDECK_RAY_START_TIMEOUT" in failures[0]["reason"]


def test_a_cancel_while_waiting_stops_without_a_failure(tmp_path):
    seen, reporter = reports()
    stopping = Cancel(tmp_path / "stop")
    stopping._handle(15, None)  # what SIGTERM from the service does
    assert not wait_for_room(lambda: {"CPU": 0.0}, "CPU", 1, "head:6379", reporter, stopping, timeout=30, every=0.01)
    assert [r for r in seen if r["kind"] == "failure"] == []
