"""The official client, unmodified, against a real tunedeck service (issue 10, wire compatibility).

``databricks-genai==1.1.8`` (package ``databricks.model_training``) lives in its own venv,
``.venv-genai`` (its pins conflict with tunedeck's: ``make .venv-genai/.installed`` builds it; ``make
test`` does so first). tests/compat/official_client_script.py runs in that venv with
``DATABRICKS_HOST`` / ``DATABRICKS_TOKEN`` set to a real ``python -m tunedeck.service`` that trains a
tiny model, and records what each call answered; the tests below assert on those answers, one
client call (or family of calls) per test.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import requests

from benchmarks._service import ServiceProcess
from tests.helpers import ISOLATED_ENV, PAIRS, write_jsonl

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
GENAI_PYTHON = ROOT / ".venv-genai" / "bin" / "python"
BUILD = "make .venv-genai/.installed  (python3 -m venv .venv-genai && .venv-genai/bin/pip install databricks-genai==1.1.8)"
SCRIPT = Path(__file__).with_name("official_client_script.py")
VOLUME_PATH = "/Volumes/main/compat/data/train.jsonl"  # the client's form; dbfs:/Volumes/... the same
TABLE = "main.compat.train"  # the same rows as a Delta table under TUNEDECK_TABLES


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A real service whose models folder holds the tiny model, with the training data in a volume and
    in a Delta table."""
    import deltalake
    import pyarrow as pa

    from tunedeck.training.tiny import build_tiny_model

    tmp = tmp_path_factory.mktemp("compat")
    home = tmp / "home"
    saved = {k: os.environ.get(k) for k in {*ISOLATED_ENV, "TUNEDECK_HOME", "HF_HUB_OFFLINE", "TUNEDECK_TABLES"}}
    for var in ISOLATED_ENV:
        os.environ.pop(var, None)
    os.environ.update(TUNEDECK_HOME=str(home), HF_HUB_OFFLINE="1", TUNEDECK_VOLUMES=str(tmp / "volumes"),
                      TUNEDECK_TABLES=str(tmp / "tables"))
    build_tiny_model(home / "models" / "tiny", [t for p in PAIRS for t in p])
    write_jsonl(tmp / "volumes" / VOLUME_PATH.removeprefix("/Volumes/"), [{"prompt": p, "response": r} for p, r in PAIRS])
    deltalake.write_deltalake(str(tmp / "tables" / TABLE.replace(".", "/")),
                              pa.Table.from_pylist([{"prompt": p, "response": r} for p, r in PAIRS]))
    svc = ServiceProcess(home)
    try:
        yield svc
    finally:
        svc.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def genai() -> Path:
    """The official client's python (skips where its venv is missing)."""
    if not GENAI_PYTHON.exists():
        pytest.skip(f"the official client's venv is missing: {BUILD}")
    probe = subprocess.run([str(GENAI_PYTHON), "-c", "import databricks.model_training"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"databricks-genai is not importable in .venv-genai ({probe.stderr.strip()[-200:]}): {BUILD}")
    return GENAI_PYTHON


@pytest.fixture(scope="module")
def answers(service, genai, tmp_path_factory) -> dict:
    """What each official-client call answered (tests/compat/official_client_script.py)."""
    out = tmp_path_factory.mktemp("client") / "answers.json"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(out.parent),  # no ~/.databrickscfg: the client reads only the two variables below
        "DATABRICKS_HOST": service.url,
        "DATABRICKS_TOKEN": service.token,
        "MLFLOW_TRACKING_URI": "databricks",  # get_checkpoints() lists through MLflow's default tracking URI
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.run([str(genai), str(SCRIPT), f"dbfs:{VOLUME_PATH}", str(out), TABLE], env=env,
                          capture_output=True, text=True, timeout=540)
    assert out.exists(), f"the client script wrote nothing (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text())
    result["_log"] = proc.stdout[-4000:] + proc.stderr[-4000:]
    return result


def ok(answers: dict, step: str):
    """The step's answer, failing with the client's error (type, message, trace) when it raised."""
    assert step in answers, f"the script never reached {step!r}:\n{answers['_log']}"
    value = answers[step]
    assert not (isinstance(value, dict) and "error" in value and "trace" in value), (
        f"{step} raised {value['error']}: {value['message']}\n{value['trace']}")
    return value


def failed(answers: dict, step: str) -> dict:
    value = answers.get(step)
    assert isinstance(value, dict) and "error" in value, f"{step} was expected to fail, answered {value!r}"
    return value


def test_get_models_lists_the_services_models(answers):
    models = ok(answers, "get_models")
    tiny = [m for m in models if m["name"] == "tiny"]
    assert tiny and tiny[0]["display_name"] == "tiny" and tiny[0]["max_context_length"] > 0


def test_create_with_the_clients_defaults_names_the_experiment_after_the_scim_user(answers, service):
    """The client's defaults: validate_inputs=True (the Volumes file through the Files API, register_to
    through Unity Catalog, answered from MLflow's registry) and no experiment_path: the client asks SCIM
    Me for the user and sends /Users/<user>/{}; the run is created by that user, its experiment named
    after the run. createFinetune itself answers within the client's 10 s timeout, or create raises."""
    import getpass

    run = ok(answers, "create")
    assert run["type"] == "TrainingRun" and run["status"] in ("PENDING", "QUEUED", "STARTING", "RUNNING")
    assert run["created_by"] == getpass.getuser()
    assert run["submitted_experiment_path"] == f"/Users/{getpass.getuser()}/{run['name']}"
    assert run["model"] == "tiny" and run["register_to"] == "main.compat.tiny"
    assert run["train_data_path"] == f"dbfs:{VOLUME_PATH}" and run["training_duration"] == "30ba"
    assert service.run(run["name"])["created_by"] == getpass.getuser()  # the same run through the REST API


def test_get_answers_the_run_with_its_details(answers):
    created, got = ok(answers, "create"), ok(answers, "get")
    assert got["name"] == created["name"] and got["submitted_config_model"] == "tiny"
    assert got["events"] and got["events"][0] == "CREATED"
    assert ok(answers, "get_by_object")["name"] == created["name"]


def test_get_events_follow_ends_with_completed_and_the_run_is_registered(answers, service):
    events = ok(answers, "get_events_follow")
    assert events[-1]["type"] == "COMPLETED" and events[-1]["terminal"]
    assert not any(e["terminal"] for e in events[:-1])
    assert {"CREATED", "STARTED", "TRAIN_FINISHED"} <= {e["type"] for e in events}
    done = ok(answers, "get_completed")
    assert done["status"] == "COMPLETED" and done["completed_at"] and done["started_at"]
    assert done["experiment_id"] and done["run_id"]  # MLflow's ids, as the client reads them
    assert done["learning_rate"] == pytest.approx(3e-3)
    record = service.run(done["name"])
    assert record["registered_model_version"] and record["mlflow_run_id"] == done["run_id"]
    assert ok(answers, "run_get_events")[-1] == "COMPLETED"
    assert ok(answers, "refresh") == "COMPLETED"


def test_get_checkpoints_answers_the_runs_real_checkpoints_in_the_references_form(answers, service):
    """The client lists MLflow artifacts of the run under <run name>/checkpoints (tracking URI
    databricks: runs/get, then artifacts/list on the service) and joins each ep* entry to the save
    folder: the run's real checkpoint folders, as dbfs:/databricks/mlflow-tracking/... paths."""
    done = ok(answers, "get_completed")
    paths = ok(answers, "get_checkpoints")
    local = sorted(p.name for p in (service.home / "runs" / done["name"] / "checkpoints").glob("ep*-ba*"))
    assert any(name.endswith("-ba30") for name in local)  # the last step's checkpoint among them
    prefix = f"dbfs:/databricks/mlflow-tracking/{done['experiment_id']}/{done['run_id']}/artifacts/{done['name']}/checkpoints/"
    assert paths == [prefix + name for name in local]  # MLflow's listing order: by path


def test_create_from_a_returned_checkpoint_path(answers, service):
    """validate_inputs=True: the client looks for .distcp files in the folder and finds tunedeck's
    Hugging Face files (a knowing difference: docs/reference-compatibility.md), so it refuses before
    creating anything; validate_inputs=False: the run starts from that checkpoint. The folder's
    latest-sharded-rank0.symlink passes the client's own check with its defaults."""
    path = next(p for p in ok(answers, "get_checkpoints") if p.endswith("-ba30"))  # the last step's
    refused = failed(answers, "create_from_checkpoint_validated")
    assert refused["error"] == "ValidationError" and ".distcp" in refused["message"] and path in refused["message"]
    second = ok(answers, "create_second")
    assert second["custom_weights_path"] == path and service.run(second["name"])["custom_weights_path"] == path
    assert ok(answers, "second_status_before_cancel") == "RUNNING"  # its weights loaded from the checkpoint

    third = ok(answers, "create_from_latest_validated")
    assert third["custom_weights_path"] == path.rsplit("/", 1)[0] + "/latest-sharded-rank0.symlink"
    assert ok(answers, "cancel_third") == 1 and ok(answers, "get_third")["status"] == "STOPPED"


def test_create_from_a_unity_catalog_table_with_the_clients_checks(answers, service):
    """validate_inputs=True with a table: the client asks the Unity Catalog tables API for it and the
    Clusters API for data_prep_cluster_id (listed, data security mode, runtime version), answered from
    the catalog root and tunedeck's one cluster, its own data preparation (service/data_prep.py); the
    run records the cluster id, reads the table at the version create() accepted, and completes."""
    run = ok(answers, "create_table")
    assert run["train_data_path"] == TABLE and run["data_prep_cluster_id"] == "tunedeck-local"
    assert ok(answers, "table_events_follow")[-1] == "COMPLETED"
    done = ok(answers, "get_table_run")
    assert done["status"] == "COMPLETED" and done["data_prep_cluster_id"] == "tunedeck-local"
    record = service.run(run["name"])
    assert record["train_data_path"] == TABLE and record["data_prep_cluster_id"] == "tunedeck-local"
    assert record["registered_model_version"]
    versions = json.loads((service.home / "runs" / run["name"] / "data_versions.json").read_text())
    assert versions == {"train_data": 0}  # the table's one version, pinned when create() accepted it

    parsed = ok(answers, "sdk_answers")  # what databricks-sdk itself made of the answers
    assert parsed["table"]["full_name"] == TABLE and parsed["table"]["data_source_format"] == "DELTA"
    folder = service.home.parent / "tables" / "main" / "compat" / "train"
    assert parsed["table"]["storage_location"] == folder.resolve().as_uri()
    assert parsed["table"]["columns"] == [["prompt", "STRING", "string"], ["response", "STRING", "string"]]
    assert parsed["clusters"] == ["tunedeck-local"]
    assert parsed["cluster"]["state"] == "RUNNING" and parsed["cluster"]["data_security_mode"] == "SINGLE_USER"


def test_a_missing_table_or_an_unknown_cluster_is_the_clients_own_refusal(answers, service):
    missing = failed(answers, "create_table_missing")
    assert missing["error"] == "ValidationError"
    assert missing["message"] == 'Could not find table "main.compat.no_such_table" for input "train_data_path"'
    cluster = failed(answers, "create_table_unknown_cluster")
    assert cluster["error"] == "ValidationError"
    assert cluster["message"].startswith("You do not have access to the cluster you provided: 0601-182128-dcbte59m")
    without = failed(answers, "create_table_without_cluster")
    assert without["error"] == "ValidationError" and "requires specifying a data_prep_cluster_id" in without["message"]
    # validate_inputs=False still asks clusters/get for a named cluster's runtime version (is_cluster_sql):
    # Databricks' "Cluster ... does not exist", which databricks-sdk raises as ResourceDoesNotExist
    unvalidated = failed(answers, "create_table_unknown_cluster_unvalidated")
    assert unvalidated["error"] == "ResourceDoesNotExist" and "0601-182128-dcbte59m" in unvalidated["message"]
    names = [r["name"] for r in service.api("GET", "/api/runs")["runs"]]
    assert len(names) == 4  # none of the refused creates made a run


def test_cancel_stops_a_training_run_and_a_second_cancel_finds_nothing(answers, service):
    second = ok(answers, "create_second")  # the model the first run registered exists: owner, permissions
    assert second["register_to"] == "main.compat.tiny"
    assert ok(answers, "second_status_before_cancel") == "RUNNING"
    assert ok(answers, "cancel") == 1
    cancelled = ok(answers, "get_cancelled")
    assert cancelled["status"] == "STOPPED"
    assert ok(answers, "cancel_again") == 0  # the client's "No active runs found to cancel."
    assert ok(answers, "cancelled_events")[-1] == "STOPPED"
    assert service.run(second["name"])["status"] == "STOPPED"


def test_list_with_each_filter(answers):
    first, second = ok(answers, "create")["name"], ok(answers, "create_second")["name"]
    table, third = ok(answers, "create_table")["name"], ok(answers, "create_from_latest_validated")["name"]
    every = [third, second, table, first]
    assert ok(answers, "list_all") == every  # newest first
    assert ok(answers, "list_by_name") == [first]
    assert ok(answers, "list_by_status") == [table, first]
    assert ok(answers, "list_by_status_str") == [third, second]
    assert ok(answers, "list_by_experiment") == [first]  # each run has its own experiment
    assert ok(answers, "list_by_user") == every
    assert ok(answers, "list_by_other_user") == []
    assert ok(answers, "list_before_2000") == []
    assert ok(answers, "list_after_yesterday") == every
    assert ok(answers, "list_without_details") == [[name, None] for name in every]  # none asked, none sent
    pages = ok(answers, "list_pages")
    assert pages == {"first": [third], "first_has_next": True, "second": [second], "second_has_next": True}


def test_invalid_create_and_unknown_runs_are_clear_errors_through_the_client(answers):
    bad = failed(answers, "create_invalid")
    assert "training_duration" in bad["message"] and "lightyears" in bad["message"]
    assert "Error 400" in bad["message"], bad  # extensions.code 400: the client does not retry it
    unknown = failed(answers, "get_unknown")
    assert unknown["error"] == "DatabricksGenAIResponseError" and "no-such-run" in unknown["message"]
    events = failed(answers, "get_events_unknown")
    assert "Error 404" in events["message"] and "no-such-run" in events["message"]


def test_a_wrong_token_is_an_authentication_error_through_the_client(service, genai):
    """The client reads the body of a 401 as it reads any answer: GraphQL errors with code 401 reach the
    caller as the client's error with the service's message (not "Malformed response data")."""
    script = ("from databricks.model_training import foundation_model as fm\n"
              "try:\n    fm.get_models()\nexcept Exception as e:\n    print(type(e).__name__, '|', e)\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(service.home.parent),
           "DATABRICKS_HOST": service.url, "DATABRICKS_TOKEN": "not-" + service.token}
    proc = subprocess.run([str(genai), "-c", script], env=env, capture_output=True, text=True, timeout=120)
    kind, _, message = proc.stdout.strip().rpartition("\n")[2].partition(" | ")
    assert kind == "MultiMAPIException" and message.startswith("Error 401: invalid or missing token"), proc.stdout + proc.stderr
    assert "DATABRICKS_TOKEN" in message and "Malformed" not in message


# -- the protocol itself, without the client (runs even where .venv-genai is missing) --------------

def test_the_graphql_endpoint_and_scim_need_the_token(service):
    """A 401 in each protocol's own error shape: GraphQL errors (code 401) and Databricks' error_code."""
    url = service.url + "/api/2.0/genai-mapi/graphql"
    refused = requests.post(url, json={"query": "{ getFinetuneConstants { models { name } } }"}, timeout=30)
    assert refused.status_code == 401 and refused.json()["errors"][0]["extensions"]["code"] == 401
    assert "data" not in refused.json() and "DATABRICKS_TOKEN" in refused.json()["errors"][0]["message"]
    scim = requests.get(service.url + "/api/2.0/preview/scim/v2/Me", headers={"Authorization": "Bearer wrong"}, timeout=30)
    assert scim.status_code == 401 and scim.json()["error_code"] == "UNAUTHENTICATED"
    assert requests.get(service.url + "/api/runs", timeout=30).json() == {"detail": "a valid bearer token is required"}


def test_scim_me_and_graphql_errors_carry_a_code(service):
    import getpass

    headers = {"Authorization": f"Bearer {service.token}"}
    me = requests.get(service.url + "/api/2.0/preview/scim/v2/Me", headers=headers, timeout=30).json()
    assert me["userName"] == getpass.getuser() and me["active"] is True
    url = service.url + "/api/2.0/genai-mapi/graphql"
    answer = requests.post(url, headers=headers, json={"query": "{ noSuchField }"}, timeout=30).json()
    assert answer["errors"][0]["extensions"]["code"] == 400 and "noSuchField" in answer["errors"][0]["message"]
    answer = requests.post(url, headers=headers, timeout=30, json={
        "query": "mutation S($d: GetFinetunesInput!) { stopFinetunes(getFinetunesData: $d) { name } }",
        "variables": {"d": {"filters": {}}}}).json()
    assert answer["errors"][0]["extensions"]["code"] == 400 and "would cancel every run" in answer["errors"][0]["message"]
    answer = requests.post(url, headers=headers, data=b"{not json", timeout=30).json()
    assert answer["errors"][0]["extensions"]["code"] == 400


def test_files_api_head_answers_from_the_volumes_root(service):
    """What create(validate_inputs=True) asks of a /Volumes path: HEAD /api/2.0/fs/files/Volumes/...,
    200 with the file's size where the volumes root has the file, 404 elsewhere (never outside the root)."""
    headers = {"Authorization": f"Bearer {service.token}"}
    files = service.url + "/api/2.0/fs/files"
    found = requests.head(files + VOLUME_PATH, headers=headers, timeout=30)
    assert found.status_code == 200
    size = sum(len(json.dumps({"prompt": p, "response": r})) + 1 for p, r in PAIRS)
    assert int(found.headers["content-length"]) == size
    assert requests.head(files + "/Volumes/main/compat/data/missing.jsonl", headers=headers, timeout=30).status_code == 404
    assert requests.head(files + "/Volumes/main/compat/data", headers=headers, timeout=30).status_code == 404  # a folder
    assert requests.head(files + "/Volumes/main/../../../etc/passwd", headers=headers, timeout=30).status_code == 404
    assert requests.head(files + "/etc/passwd", headers=headers, timeout=30).status_code == 404
    assert requests.head(files + VOLUME_PATH, timeout=30).status_code == 401


def test_unity_catalog_register_to_checks_answer_from_mlflows_registry(service):
    """What validate_register_to asks (databricks-genai api/validation.py), answered from MLflow's
    registry through the service: a model absent until created, owned by the local user, gone when
    deleted; ALL_PRIVILEGES on any catalog and schema register_to accepts, for the local user only."""
    import getpass

    user = getpass.getuser()
    headers = {"Authorization": f"Bearer {service.token}"}
    uc = service.url + "/api/2.1/unity-catalog"
    name = "cat.sch.uc-probe"
    missing = requests.get(f"{uc}/models/{name}", headers=headers, timeout=240)
    assert missing.status_code == 404 and missing.json()["error_code"] == "NOT_FOUND"
    made = requests.post(f"{uc}/models", headers=headers, timeout=60,
                         json={"catalog_name": "cat", "schema_name": "sch", "name": "uc-probe"})
    assert made.status_code == 200, made.text
    assert made.json()["full_name"] == name and made.json()["owner"] == user
    # the very model MLflow's registry now holds, read through MLflow's own REST API on the service
    mlflow_side = requests.get(service.url + "/api/2.0/mlflow/registered-models/get", params={"name": name},
                               headers=headers, timeout=60)
    assert mlflow_side.status_code == 200 and mlflow_side.json()["registered_model"]["name"] == name
    got = requests.get(f"{uc}/models/{name}", headers=headers, timeout=60).json()
    assert got["owner"] == user and got["catalog_name"] == "cat" and got["schema_name"] == "sch" and got["created_at"]
    again = requests.post(f"{uc}/models", headers=headers, timeout=60,
                          json={"catalog_name": "cat", "schema_name": "sch", "name": "uc-probe"})
    assert again.status_code == 409 and again.json()["error_code"] == "ALREADY_EXISTS"
    assert requests.delete(f"{uc}/models/{name}", headers=headers, timeout=60).status_code == 200
    assert requests.get(f"{uc}/models/{name}", headers=headers, timeout=60).status_code == 404
    assert requests.delete(f"{uc}/models/{name}", headers=headers, timeout=60).status_code == 404
    bad = requests.get(f"{uc}/models/not-three-parts", headers=headers, timeout=60)
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"

    perms = uc + "/effective-permissions"
    mine = requests.get(f"{perms}/schema/cat.sch", params={"principal": user}, headers=headers, timeout=60).json()
    assert mine["privilege_assignments"] == [{"principal": user, "privileges": [{"privilege": "ALL_PRIVILEGES"}]}]
    assert requests.get(f"{perms}/catalog/cat", params={"principal": user}, headers=headers, timeout=60).json()[
        "privilege_assignments"][0]["privileges"][0]["privilege"] == "ALL_PRIVILEGES"
    other = requests.get(f"{perms}/catalog/cat", params={"principal": "nobody@example.com"}, headers=headers, timeout=60)
    assert other.json() == {"privilege_assignments": []}
    assert requests.get(f"{perms}/schema/cat", headers=headers, timeout=60).status_code == 400  # not catalog.schema
    assert requests.get(f"{uc}/models/{name}", timeout=60).status_code == 401
