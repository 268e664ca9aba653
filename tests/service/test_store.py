import json
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


def test_a_store_from_before_schema_versions_is_migrated_in_place(tmp_path):
    import sqlite3

    from tunedeck.service.store import SCHEMA, SCHEMA_VERSION

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)  # the first release's tables, user_version 0
    db.execute("INSERT INTO runs (name, status, created_at, data) VALUES (?, ?, ?, ?)",
               ("old", "COMPLETED", utcnow().isoformat(), json.dumps(make_run("old").to_dict())))
    db.commit()
    db.close()
    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION
    assert store.get_run("old").name == "old", "nothing stored is lost"
    store.set_worker("old", pid=12, journal_offset=34)
    assert (store.worker("old").pid, store.worker("old").journal_offset) == (12, 34)
    store.close()
    Store(path).close()  # opening again is a no-op


def test_a_store_written_by_a_newer_tunedeck_is_refused_untouched(tmp_path):
    import sqlite3

    from tunedeck.service.store import SCHEMA_VERSION, SchemaTooNewError

    path = tmp_path / "new.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(SchemaTooNewError, match="newer tunedeck"):
        Store(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    db.close()


def test_journal_offsets_move_with_the_reports_they_apply(store):
    store.add_run(make_run("a"), "CREATED", "x")
    store.add_metrics("a", 1, {"train/loss": 2.0}, journal_offset=50)
    assert store.worker("a").journal_offset == 50
    store.update_run("a", event=("TRAIN_UPDATED", "step 1", {}), journal_offset=90)
    assert store.worker("a").journal_offset == 90
    store.add_metrics("a", 2, {"train/loss": 1.5})
    store.add_metrics("a", 3, {"train/loss": 1.0})
    assert store.delete_metrics_after("a", 1) == 2
    assert [m["step"] for m in store.metrics("a")] == [1]
    store.delete_run("a")
    assert store.worker("a").pid is None and store.worker("a").journal_offset == 0
