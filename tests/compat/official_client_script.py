"""Drives the unmodified official client (databricks-genai, ``databricks.model_training``) against a
tunedeck service; run by tests/compat/test_official_client.py with the official client's own venv
(.venv-genai/bin/python), never imported by the test suite.

    DATABRICKS_HOST=<service url> DATABRICKS_TOKEN=<token> python official_client_script.py TRAIN_PATH OUT.json TABLE

Writes what each call answered to OUT.json (the test asserts on it); a call that raises is recorded
as {"error": <type>, "message": <str>} so the test can say which call failed and how.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from datetime import datetime, timedelta, timezone

from databricks.model_training import foundation_model as fm
from databricks.model_training.types import TrainingRun
from databricks.model_training.types.run_status import RunStatus

TRAIN_PATH, OUT, TABLE = sys.argv[1], sys.argv[2], sys.argv[3]  # TABLE: <catalog>.<schema>.<table>, the same rows
LOCAL_CLUSTER = "tunedeck-local"  # the one cluster tunedeck lists: its own data preparation
results: dict = {}


def record(step: str, fn):
    started = time.monotonic()
    try:
        value = fn()
    except Exception as exc:  # recorded: the test names the step that failed
        results[step] = {"error": type(exc).__name__, "message": str(exc), "trace": traceback.format_exc()[-3000:]}
        value = None
    else:
        results[step] = value if not isinstance(value, TrainingRun) else describe(value)
    results.setdefault("seconds", {})[step] = round(time.monotonic() - started, 2)
    with open(OUT, "w") as out:
        json.dump(results, out, indent=2, default=str)
    print(f"{step}: {json.dumps(results[step], default=str)[:300]}", flush=True)
    return value


def describe(run: TrainingRun) -> dict:
    return {
        "type": type(run).__name__, "name": run.name, "status": run.status.value, "created_by": run.created_by,
        "model": run.model, "train_data_path": run.train_data_path, "register_to": run.register_to,
        "task_type": run.task_type, "training_duration": run.training_duration, "learning_rate": run.learning_rate,
        "submitted_experiment_path": run.submitted_experiment_path, "experiment_id": run.experiment_id,
        "run_id": run.run_id, "save_folder": run.save_folder, "details": run.details,
        "created_at": run.created_at, "started_at": run.started_at, "completed_at": run.completed_at,
        "events": None if run.events is None else [e.type for e in run.events],
        "submitted_config_model": None if run.submitted_config is None else run.submitted_config.model,
        "custom_weights_path": run.custom_weights_path, "data_prep_cluster_id": run.data_prep_cluster_id,
    }


def names(runs) -> list[str]:
    return [r.name for r in runs]


models = record("get_models", lambda: [{"name": m.name, "display_name": m.display_name,
                                        "max_context_length": m.max_context_length} for m in fm.get_models()])

# the client's defaults: validate_inputs=True checks the Volumes file (Files API HEAD) and register_to
# (Unity Catalog: the first create finds no model "main.compat.tiny" and creates and deletes one; later
# creates find the model the first run registered, owned by SCIM Me, with ALL_PRIVILEGES)
common = dict(model="tiny", register_to="main.compat.tiny", task_type="INSTRUCTION_FINETUNE", learning_rate=3e-3)
run = record("create", lambda: fm.create(train_data_path=TRAIN_PATH, training_duration="30ba", **common))
if run is None:
    sys.exit(1)
record("get", lambda: fm.get(run.name))
record("get_by_object", lambda: fm.get(run))

events = record("get_events_follow", lambda: [{"type": e.type, "message": e.message, "terminal": e.is_terminal_state()}
                                              for e in fm.get_events(run, follow=True)])
done = record("get_completed", lambda: fm.get(run.name))
record("run_get_events", lambda: [e.type for e in run.get_events()])
record("refresh", lambda: run.refresh().status.value)

# the run's checkpoints as the client reads them: MLflow artifacts under <run name>/checkpoints, listed
# through MLflow's REST API on DATABRICKS_HOST (MLFLOW_TRACKING_URI=databricks, as off Databricks)
checkpoints = record("get_checkpoints", lambda: fm.get_checkpoints(done)) if done is not None else None
last = latest = None
if checkpoints:
    last = max(checkpoints, key=lambda path: int(path.rsplit("-ba", 1)[1]))  # listed by name: ep6 after ep30
    latest = last.rsplit("/", 1)[0] + "/latest-sharded-rank0.symlink"
    # validate_inputs=True looks for .distcp files in a checkpoint folder: tunedeck's are Hugging Face
    # folders (a knowing difference), so the client refuses the ep#-ba# path before any run exists
    record("create_from_checkpoint_validated", lambda: fm.create(
        train_data_path=TRAIN_PATH, training_duration="2ba", custom_weights_path=last, **common))

# a Unity Catalog table as training data, with the client's defaults (validate_inputs=True): it asks the
# Unity Catalog tables API for the table and the Clusters API (list, get) for data_prep_cluster_id, then
# (in every create naming a cluster) clusters/get for its runtime version; a short run, followed to its end
record("create_table_missing", lambda: fm.create(
    train_data_path=TABLE.rsplit(".", 1)[0] + ".no_such_table", training_duration="2ba",
    data_prep_cluster_id=LOCAL_CLUSTER, **common))
record("create_table_unknown_cluster", lambda: fm.create(
    train_data_path=TABLE, training_duration="2ba", data_prep_cluster_id="0601-182128-dcbte59m", **common))
record("create_table_without_cluster", lambda: fm.create(train_data_path=TABLE, training_duration="2ba", **common))
# hosted code's own cluster id fails even unvalidated: the client asks clusters/get for its runtime version
record("create_table_unknown_cluster_unvalidated", lambda: fm.create(
    train_data_path=TABLE, training_duration="2ba", data_prep_cluster_id="0601-182128-dcbte59m",
    validate_inputs=False, **common))
table_run = record("create_table", lambda: fm.create(
    train_data_path=TABLE, training_duration="2ba", data_prep_cluster_id=LOCAL_CLUSTER, **common))
if table_run is not None:
    record("table_events_follow", lambda: [e.type for e in fm.get_events(table_run, follow=True)])
    record("get_table_run", lambda: fm.get(table_run.name))


def sdk_answers():
    """What databricks-sdk itself parses from the two APIs (the client reads it through these)."""
    from databricks.sdk import WorkspaceClient

    w = WorkspaceClient()
    table = w.tables.get(TABLE)
    cluster = w.clusters.get(cluster_id=LOCAL_CLUSTER)
    return {"table": {"full_name": table.full_name, "table_type": table.table_type.value,
                      "data_source_format": table.data_source_format.value, "storage_location": table.storage_location,
                      "columns": [[c.name, c.type_name.value, c.type_text] for c in table.columns or []]},
            "clusters": [c.cluster_id for c in w.clusters.list()],
            "cluster": {"state": cluster.state.value, "data_security_mode": cluster.data_security_mode.value,
                        "spark_version": cluster.spark_version}}


record("sdk_answers", sdk_answers)

# a second run, from the last step's checkpoint get_checkpoints returned, to cancel while it trains
long_run = record("create_second", lambda: fm.create(
    train_data_path=TRAIN_PATH, training_duration="5000ba", validate_inputs=False,
    custom_weights_path=last, **common))
if long_run is not None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and fm.get(long_run.name).status not in (RunStatus.RUNNING, RunStatus.FAILED):
        time.sleep(1)
    record("second_status_before_cancel", lambda: fm.get(long_run.name).status.value)
    record("cancel", lambda: fm.cancel(long_run))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not fm.get(long_run.name).status.is_terminal():
        time.sleep(1)
    record("get_cancelled", lambda: fm.get(long_run.name))
    record("cancel_again", lambda: long_run.cancel())
    record("cancelled_events", lambda: [e.type for e in fm.get_events(long_run.name)])

# a third, from the checkpoint folder's latest-sharded-rank0.symlink with the client's defaults: its
# .symlink check lists the checkpoints folder and finds the file; cancelled as soon as it is created
if latest is not None:
    third = record("create_from_latest_validated", lambda: fm.create(
        train_data_path=TRAIN_PATH, training_duration="5000ba", custom_weights_path=latest, **common))
    if third is not None:
        record("cancel_third", lambda: fm.cancel(third))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not fm.get(third.name).status.is_terminal():
            time.sleep(1)
        record("get_third", lambda: fm.get(third.name))

# list, with each of the client's filters
record("list_all", lambda: names(fm.list()))
record("list_by_name", lambda: names(fm.list(training_runs=[run.name])))
record("list_by_status", lambda: names(fm.list(statuses=[RunStatus.COMPLETED])))
record("list_by_status_str", lambda: names(fm.list(statuses=["STOPPED"])))
if done is not None:
    record("list_by_experiment", lambda: names(fm.list(experiment_id=done.experiment_id)))
record("list_by_user", lambda: names(fm.list(user_emails=[run.created_by])))
record("list_by_other_user", lambda: names(fm.list(user_emails=["nobody@example.com"])))
record("list_before_2000", lambda: names(fm.list(before="2000-01-01")))
record("list_after_yesterday", lambda: names(fm.list(after=datetime.now(timezone.utc) - timedelta(days=1))))
record("list_without_details", lambda: [(r.name, r.model) for r in fm.list(include_details=False)])


def pages():
    first = fm.list(limit=1)
    second = first.next_page()
    return {"first": names(first), "first_has_next": first.has_next_page,
            "second": names(second), "second_has_next": second.has_next_page}


record("list_pages", pages)

# errors through the client
record("create_invalid", lambda: fm.create(train_data_path=TRAIN_PATH, training_duration="5 lightyears", **common))
record("get_unknown", lambda: fm.get("no-such-run"))
record("get_events_unknown", lambda: fm.get_events("no-such-run"))
print("done", flush=True)
