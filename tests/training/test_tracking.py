"""The MLflow tracker against a real SQLite tracking store."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from tunedeck.training.tracking import Tracker


def _start(uri: str, root: str, name: str, barrier, results) -> None:
    barrier.wait()  # both processes reach MLflow's schema creation together
    try:
        tracker = Tracker.start(uri, "/Users/tests/race", root, name, {"model": "tiny"})
        results.put((name, tracker.run_id))
    except Exception as exc:  # reported to the test, which names it
        results.put((name, f"FAILED: {type(exc).__name__}: {exc}"))


def test_two_workers_starting_together_on_a_fresh_store_both_get_runs(tmp_path: Path):
    """Without the set-up lock, two workers migrating a new mlflow.db at once collided and one run failed."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_start, args=(uri, str(tmp_path / "artifacts"), f"run-{i}", barrier, results)) for i in range(2)]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    assert not [v for v in outcomes.values() if v.startswith("FAILED")], outcomes
    assert len(set(outcomes.values())) == 2


def test_params_and_metrics_reach_the_store(tmp_path: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker.start(uri, "/Users/tests/metrics", str(tmp_path / "artifacts"), "run", {"learning_rate": 1e-4})
    for step, loss in enumerate([2.0, 1.5, 1.0], start=1):
        tracker.log_metrics(step, {"train/loss": loss})
    tracker.log_metrics(3, {}, force=True)
    client = MlflowClient(tracking_uri=uri)
    history = [m.value for m in client.get_metric_history(tracker.run_id, "train/loss")]
    assert history == [2.0, 1.5, 1.0]
    assert client.get_run(tracker.run_id).data.params["learning_rate"] == "0.0001"
