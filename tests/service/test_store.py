from datetime import timedelta

import pytest

from tunedeck.service.store import RunExistsError, Store
from tunedeck.types import RunStatus, TrainingRun, utcnow


def make_run(name: str, minutes: int = 0) -> TrainingRun:
    return TrainingRun(name=name, status=RunStatus.PENDING, model="m", train_data_path="d", register_to="a.b",
                       created_at=utcnow() + timedelta(minutes=minutes))


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "t.db")
    yield s
    s.close()


def test_runs_round_trip_and_list_newest_first(store):
    store.add_run(make_run("a", 0), "CREATED", "a created")
    store.add_run(make_run("b", 1), "CREATED", "b created")
    assert [r.name for r in store.list_runs()] == ["b", "a"]
    run, ev = store.update_run("a", status=RunStatus.RUNNING, progress=12.5, event=("STARTED", "go", {"pid": 1}))
    assert run.status is RunStatus.RUNNING and run.progress == 12.5
    assert ev.sequence == 2 and ev.data == {"pid": 1}
    assert [r.name for r in store.list_runs(statuses=["RUNNING"])] == ["a"]
    with pytest.raises(RunExistsError):
        store.add_run(make_run("a"), "CREATED", "again")


def test_events_are_numbered_per_run_and_read_incrementally(store):
    store.add_run(make_run("a"), "CREATED", "x")
    store.add_run(make_run("b"), "CREATED", "y")
    for i in range(5):
        store.add_event("a", "TRAIN_UPDATED", f"step {i}", {"step": i})
    assert [e.sequence for e in store.events("a")] == [1, 2, 3, 4, 5, 6]
    assert [e.sequence for e in store.events("b")] == [1]
    newer = store.events("a", after=4)
    assert [e.message for e in newer] == ["step 3", "step 4"]
    assert store.events("a", after=6) == []
    assert len(store.events("a", after=0, limit=2)) == 2


def test_metrics_read_incrementally_and_delete_removes_everything(store):
    store.add_run(make_run("a"), "CREATED", "x")
    store.add_metrics("a", 1, {"train/loss": 2.0, "train/lr": 0.1})
    store.add_metrics("a", 2, {"train/loss": 1.5})
    points = store.metrics("a")
    assert [(p["step"], p["name"]) for p in points] == [(1, "train/loss"), (1, "train/lr"), (2, "train/loss")]
    assert [p["value"] for p in store.metrics("a", after=points[1]["id"])] == [1.5]
    assert store.delete_run("a")
    assert store.get_run("a") is None and store.events("a") == [] and store.metrics("a") == []
