"""Everything the worker does with MLflow: experiment, run, params, metrics, generations, model, registry.

Uses ``MlflowClient`` with explicit ids (no global "active run"), so nothing depends on process-wide
state. Metrics are buffered and written with ``log_batch`` every few seconds: one SQLite transaction
per step would slow a fast run down and contend with the service for the database.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0
MAX_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call


def quiet_mlflow_logs() -> None:
    """MLflow and alembic log every schema migration and run start at INFO; the worker log wants none."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "alembic.runtime.migration", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def _store_setup_lock(tracking_uri: str) -> Iterator[None]:
    """Serialize first use of a SQLite tracking store across workers.

    MLflow creates and migrates the schema on first connection; two workers doing that at once on a
    fresh database collide ("table ... already exists") and one run fails. Other stores need no lock.
    """
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        yield
        return
    lock_path = Path(tracking_uri[len(prefix):] + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Tracker:
    """One MLflow run for one training run."""

    def __init__(self, tracking_uri: str, experiment_id: str, run_id: str, artifact_uri: str):
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.artifact_uri = artifact_uri
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()

    @classmethod
    def start(
        cls,
        tracking_uri: str,
        experiment_path: str,
        artifact_root: str,
        run_name: str,
        params: dict[str, Any],
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
    ) -> Tracker:
        """A new MLflow run; or, with ``run_id`` (a resumed training run), that run reopened, so one
        training run's metrics stay in one MLflow run. A run_id the store no longer has gets a new run."""
        from mlflow import MlflowClient

        quiet_mlflow_logs()
        with _store_setup_lock(tracking_uri):
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            run = _reopen(client, run_id) if run_id else None
            if run is None:
                experiment_id = _experiment(client, experiment_path, artifact_root)
                run = client.create_run(experiment_id, run_name=run_name, tags=tags or {})
        tracker = cls(tracking_uri, run.info.experiment_id, run.info.run_id, run.info.artifact_uri)
        # Params cannot change once logged: a reopened run only gets those it lacks.
        tracker.log_params({k: v for k, v in params.items() if k not in run.data.params})
        quiet_mlflow_logs()  # the first database access may have reconfigured them
        return tracker

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items() if v is not None]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, step: int, values: dict[str, float], force: bool = False) -> None:
        """Queue metrics; written at most every FLUSH_SECONDS (or now with ``force``)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, int(step)) for k, v in values.items() if v == v)
        if force or len(self._pending) >= MAX_BATCH or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            chunk, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            self.client.log_batch(self.run_id, metrics=chunk)
        self._last_flush = time.monotonic()

    def log_generations(self, checkpoint: str, step: int, generations: list[dict[str, str]]) -> None:
        """Add this checkpoint's generations to the run's eval_generations.json table (log_table appends)."""
        table = {
            "checkpoint": [checkpoint] * len(generations),
            "step": [step] * len(generations),
            "prompt": [g["prompt"] for g in generations],
            "generation": [g["generation"] for g in generations],
        }
        self.client.log_table(self.run_id, data=table, artifact_file="eval_generations.json")

    def log_model_folder(self, folder: Path) -> str:
        """Upload the final HF folder under ``model``; returns its artifact URI (the version's source)."""
        self.client.log_artifacts(self.run_id, str(folder), artifact_path="model")
        return f"{self.artifact_uri.rstrip('/')}/model"

    def register(self, name: str, source: str) -> int:
        """A new version of registered model ``name`` (created if absent) pointing at ``source``."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as error:
            if getattr(error, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
        version = self.client.create_model_version(name, source=source, run_id=self.run_id)
        return int(version.version)

    def finish(self, status: str = "FINISHED") -> None:
        """Flush and close the run. Never raises: the run's outcome is already decided."""
        try:
            self.flush()
        except Exception as error:  # noqa: BLE001
            log.warning("could not write the last metrics to MLflow: %s", error)
        try:
            self.client.set_terminated(self.run_id, status=status)
        except Exception as error:  # noqa: BLE001
            log.warning("could not close the MLflow run: %s", error)


def _reopen(client: Any, run_id: str) -> Any:
    """The MLflow run ``run_id`` set RUNNING again (what mlflow.start_run(run_id=...) does), or None."""
    from mlflow.exceptions import MlflowException

    try:
        client.update_run(run_id, status="RUNNING")
        return client.get_run(run_id)
    except MlflowException as error:
        log.warning("MLflow run %s cannot be continued (%s); this resumed run logs to a new one", run_id, error)
        return None


def _experiment(client: Any, path: str, artifact_root: str) -> str:
    """The id of experiment ``path``, created with its artifacts under ``artifact_root`` if missing.

    Without an explicit artifact_location, a SQLite-backed MLflow puts artifacts in ./mlruns of
    whatever directory the process runs in.
    """
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(path)
    if experiment is None:
        location = (Path(artifact_root) / path.strip("/")).resolve()
        location.mkdir(parents=True, exist_ok=True)
        try:
            return client.create_experiment(path, artifact_location=location.as_uri())
        except MlflowException as error:  # created by a concurrent run in the meantime
            experiment = client.get_experiment_by_name(path)
            if experiment is None:
                raise error
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id
