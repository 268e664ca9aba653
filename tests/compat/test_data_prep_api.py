"""The Unity Catalog tables and Clusters answers the official client asks about a table input
(service/data_prep.py), in process: each answer and each refusal in Databricks' shape. The client
itself asks them in tests/compat/test_official_client.py."""

from __future__ import annotations

import getpass
import json
import re

import pytest
from fastapi.testclient import TestClient

from tunedeck.service.app import create_app
from tunedeck.service.core import RunService
from tunedeck.service.data_prep import LOCAL_CLUSTER_ID
from tunedeck.service.store import Store

deltalake = pytest.importorskip("deltalake")
pa = pytest.importorskip("pyarrow")

TOKEN = "test-token"
UC = "/api/2.1/unity-catalog/tables"
MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


@pytest.fixture
def api(home, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEDECK_TABLES", str(tmp_path / "catalog"))
    home.mkdir(parents=True)
    service = RunService(Store(home / "tunedeck.db"))
    client = TestClient(create_app(service, TOKEN, home))
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    yield client, tmp_path / "catalog"
    service.store.close()


def write_table(folder, rows, schema, **kwargs):
    folder.parent.mkdir(parents=True, exist_ok=True)
    deltalake.write_deltalake(str(folder), pa.Table.from_pylist(rows, schema=schema), **kwargs)


def test_a_table_is_answered_from_its_delta_log(api):
    client, root = api
    schema = pa.schema([("prompt", pa.string()), ("response", pa.string()), ("messages", MESSAGES),
                        ("score", pa.decimal128(10, 2)), ("n", pa.int64()), ("split", pa.string())])
    rows = [{"prompt": "p", "response": "r", "messages": [{"role": "user", "content": "x"}], "score": None, "n": 1, "split": "a"}]
    folder = root / "main" / "demo" / "train"
    write_table(folder, rows, schema, partition_by=["split"], description="the chat rows",
                configuration={"delta.appendOnly": "true"})
    deltalake.write_deltalake(str(folder), pa.Table.from_pylist(rows, schema=schema), mode="append")

    answer = client.get(f"{UC}/main.demo.train")
    assert answer.status_code == 200, answer.text
    info = answer.json()
    names = (info["full_name"], info["catalog_name"], info["schema_name"], info["name"])
    assert names == ("main.demo.train", "main", "demo", "train")
    assert info["data_source_format"] == "DELTA" and info["table_type"] == "MANAGED"
    assert info["storage_location"] == folder.resolve().as_uri() and info["storage_location"].startswith("file:///")
    assert info["table_id"] == deltalake.DeltaTable(str(folder)).metadata().id
    assert info["owner"] == getpass.getuser() and info["comment"] == "the chat rows"
    assert info["properties"]["delta.lastUpdateVersion"] == "1"  # two commits: versions 0 and 1
    assert info["properties"]["delta.appendOnly"] == "true"
    assert info["created_at"] <= info["updated_at"]
    columns = {c["name"]: c for c in info["columns"]}
    assert [c["name"] for c in info["columns"]] == ["prompt", "response", "messages", "score", "n", "split"]
    assert [c["position"] for c in info["columns"]] == list(range(6))
    assert (columns["prompt"]["type_name"], columns["prompt"]["type_text"]) == ("STRING", "string")
    assert (columns["messages"]["type_name"], columns["messages"]["type_text"]) == (
        "ARRAY", "array<struct<role:string,content:string>>")
    assert json.loads(columns["messages"]["type_json"])["type"]["elementType"]["type"] == "struct"
    assert (columns["n"]["type_name"], columns["n"]["type_text"]) == ("LONG", "bigint")
    score = columns["score"]
    assert score["type_name"] == "DECIMAL" and (score["type_precision"], score["type_scale"]) == (10, 2)
    assert columns["split"]["partition_index"] == 0 and "partition_index" not in columns["prompt"]

    # Unity Catalog names are case-insensitive: the folder is found as inputs/tables.py finds it
    assert client.get(f"{UC}/Main.Demo.TRAIN").json()["full_name"] == "main.demo.train"
    assert client.get(f"{UC}/main.demo.train/exists").json() == {"table_exists": True}


def test_missing_tables_are_databricks_404s(api):
    client, root = api
    (root / "main" / "demo" / "notdelta").mkdir(parents=True)
    (root / "main" / "demo" / "notdelta" / "part-0.parquet").write_bytes(b"PAR1")
    for name, code, words in [
        ("nocat.demo.t", "CATALOG_DOES_NOT_EXIST", "Catalog 'nocat' does not exist"),
        ("main.nosch.t", "SCHEMA_DOES_NOT_EXIST", "Schema 'main.nosch' does not exist"),
        ("main.demo.nope", "TABLE_DOES_NOT_EXIST", "Table 'main.demo.nope' does not exist"),
        ("main.demo.notdelta", "TABLE_DOES_NOT_EXIST", "is not a Delta table"),
    ]:
        answer = client.get(f"{UC}/{name}")
        assert answer.status_code == 404, answer.text
        assert answer.json()["error_code"] == code and words in answer.json()["message"], answer.text
        assert client.get(f"{UC}/{name}/exists").json() == {"table_exists": False}
    bad = client.get(f"{UC}/not-a-table-name")
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert client.get(f"{UC}/main.demo.nope", headers={"Authorization": "Bearer wrong"}).json()["error_code"] == "UNAUTHENTICATED"


def test_a_table_that_cannot_be_read_is_a_500_with_deltalakes_reason(api):
    client, root = api
    log = root / "main" / "demo" / "broken" / "_delta_log"
    log.mkdir(parents=True)
    (log / "00000000000000000000.json").write_text("{not json\n")
    answer = client.get(f"{UC}/main.demo.broken")
    assert answer.status_code == 500 and answer.json()["error_code"] == "INTERNAL_ERROR"
    assert "cannot be read as a Delta table" in answer.json()["message"]


@pytest.mark.parametrize("version", ["2.0", "2.1"])
def test_the_one_cluster_is_the_services_own_data_preparation(api, version):
    client, _ = api
    listed = client.get(f"/api/{version}/clusters/list").json()["clusters"]
    assert [c["cluster_id"] for c in listed] == [LOCAL_CLUSTER_ID]
    cluster = client.get(f"/api/{version}/clusters/get", params={"cluster_id": LOCAL_CLUSTER_ID}).json()
    assert cluster == listed[0]
    assert cluster["state"] == "RUNNING" and cluster["data_security_mode"] == "SINGLE_USER"
    assert cluster["single_user_name"] == getpass.getuser() and cluster["num_workers"] == 0
    assert "tunedeck" in cluster["spark_version"] and "no Spark" in cluster["cluster_name"]
    # the client's is_cluster_sql reads spark_version so (databricks-genai 1.1.8 api/validation.py)
    stripped = re.sub(r"[a-zA-Z]", "", cluster["spark_version"].split("-scala")[0].replace("x-snapshot", ""))
    assert tuple(int(p) for p in re.sub(r"[.-]*$", "", stripped).split(".")) >= (14, 1)  # no useSql

    unknown = client.get(f"/api/{version}/clusters/get", params={"cluster_id": "0601-182128-dcbte59m"})
    assert unknown.status_code == 400 and unknown.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    # databricks-sdk's override turns exactly this into ResourceDoesNotExist
    assert re.search(r"Cluster .* does not exist", unknown.json()["message"])
    assert client.get(f"/api/{version}/clusters/get").status_code == 400


def test_cluster_ids_named_by_hosted_code_can_be_the_same_cluster(api, monkeypatch):
    """TUNEDECK_CLUSTER_IDS: the ids hosted code names answer as the service's own data preparation."""
    client, _ = api
    hosted = "0601-182938-abcd1234"
    assert client.get("/api/2.1/clusters/get", params={"cluster_id": hosted}).status_code == 400
    monkeypatch.setenv("TUNEDECK_CLUSTER_IDS", f" {hosted}, {LOCAL_CLUSTER_ID} ,")
    cluster = client.get("/api/2.1/clusters/get", params={"cluster_id": hosted}).json()
    assert cluster["cluster_id"] == hosted and cluster["state"] == "RUNNING"
    listed = [c["cluster_id"] for c in client.get("/api/2.1/clusters/list").json()["clusters"]]
    assert listed == [LOCAL_CLUSTER_ID, hosted]
    assert client.get("/api/2.1/clusters/get", params={"cluster_id": "other"}).status_code == 400
