"""The Unity Catalog tables and Clusters calls the official client makes about a table input, answered
from tunedeck's local catalog root and its own data preparation.

``create(train_data_path="main.demo.train", data_prep_cluster_id=..., validate_inputs=True)`` in
databricks-genai 1.1.8 (``api/validation.py``, through databricks-sdk 0.42's WorkspaceClient) asks:

- ``GET /api/2.1/unity-catalog/tables/<full name>`` (``validate_delta_table``): only whether it
  raises. ``NotFound`` (any 404) becomes "Could not find table ...", ``PermissionDenied`` (403) "User
  does not have permission ...", anything else "Failed to access table ...". Likewise for
  ``eval_data_path``.
- ``GET /api/2.1/clusters/list`` (``validate_data_prep``): the id must be among the listed
  ``cluster_id``\\ s, or "You do not have access to the cluster you provided"; then ``GET
  /api/2.1/clusters/get?cluster_id=``: ``data_security_mode`` must be set and not ``NONE``.
- ``GET /api/2.1/clusters/get?cluster_id=`` again (``is_cluster_sql``), in *every* ``create()`` that
  names a ``data_prep_cluster_id``, ``validate_inputs=False`` too: ``spark_version`` must be a string
  whose digits read as a Databricks Runtime version of at least 12.2, or the client refuses the
  cluster as "not compatible"; below 14.1 it adds ``useSql: true`` to the run's ``dataPrepConfig``.

Tables, answered truthfully: ``<catalog>.<schema>.<table>`` is the Delta table in
``<tables root>/<catalog>/<schema>/<table>`` (``inputs/tables.py``, ``config.tables_root()``), as
tunedeck reads it for training. Its answer is read from the table's Delta log with deltalake (imported
inside the request): the columns and their types, the Delta table id, description, partition
columns, properties and protocol versions, the creation time the log records and the time of the last
commit (its commit file's modification time, which is what Delta defines a commit's timestamp to be),
the folder as a ``file://`` storage location, the folder's owner. ``table_type`` is ``MANAGED``: the
location follows from the name under the catalog root, as a managed table's does. A missing catalog,
schema or table is Databricks' 404 (``CATALOG_DOES_NOT_EXIST``, ``SCHEMA_DOES_NOT_EXIST``,
``TABLE_DOES_NOT_EXIST``), as is a folder that is no Delta table (no ``_delta_log``): Unity Catalog
has no such table. A folder this process may not read is 403 ``PERMISSION_DENIED``; a Delta log
deltalake cannot read is 500 with its reason (the SDK does not retry either).

Clusters: tunedeck has no Spark cluster. It prepares table data itself, inside the service (the
checks) and the worker (the rows, read with deltalake). The truthful answer to "which clusters may
this user prepare data on" is that one: a single cluster, ``tunedeck-local`` (``LOCAL_CLUSTER_ID``),
that stands for the service's own data preparation: ``RUNNING`` while the service answers, started
when the service started, owned by and assigned to the local user (``SINGLE_USER``: only the token
holder uses the service, under that OS user), no workers. So
``data_prep_cluster_id="tunedeck-local"`` passes the client's checks and is recorded with the run
(``dataPrepConfig.clusterId``). Code written for the hosted service names its real cluster id, which the
client asks about even with ``validate_inputs=False``: ``TUNEDECK_CLUSTER_IDS`` (comma-separated) gives
the same cluster those ids too, so that code runs unchanged. Any other id gets the client's own refusal: it is not listed,
and ``clusters/get`` answers Databricks' ``400 INVALID_PARAMETER_VALUE "Cluster <id> does not
exist"`` (which the SDK turns into ``ResourceDoesNotExist``). The one field that cannot be true is
``spark_version``: there is no Spark, and no runtime. The client refuses any cluster without a runtime
version >= 12.2 in every create that names a cluster, so without one a table could never be created
through it with ``validate_inputs=True`` (which requires a cluster). The answer is
``LOCAL_SPARK_VERSION``, ``"14.1.x-tunedeck"``: a version key that names tunedeck, whose number is
the lowest the client takes for a Databricks Connect cluster (at 14.1 and above it sends no
``useSql``; tunedeck uses neither Connect nor SQL). Everything else a real cluster has (node types,
Spark configuration, driver, autoscaling) is left out rather than invented.
"""

from __future__ import annotations

import json
import os
import pwd
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from tunedeck import config
from tunedeck.inputs.paths import PathError, is_folder
from tunedeck.inputs.tables import table_folder
from tunedeck.service.unity_catalog import Refusal, api_error

UC_TABLES = "/api/2.1/unity-catalog/tables"
LOCAL_CLUSTER_ID = "tunedeck-local"
LOCAL_SPARK_VERSION = "14.1.x-tunedeck"
NEEDS = "reading Delta tables needs deltalake (pip install 'tunedeck[train]')"

# Spark's SQL names (Unity Catalog's type_text) and Unity Catalog's type_name for Delta's primitive types
_PRIMITIVE = {
    "string": ("string", "STRING"), "long": ("bigint", "LONG"), "integer": ("int", "INT"),
    "short": ("smallint", "SHORT"), "byte": ("tinyint", "BYTE"), "float": ("float", "FLOAT"),
    "double": ("double", "DOUBLE"), "boolean": ("boolean", "BOOLEAN"), "binary": ("binary", "BINARY"),
    "date": ("date", "DATE"), "timestamp": ("timestamp", "TIMESTAMP"),
    "timestamp_ntz": ("timestamp_ntz", "TIMESTAMP_NTZ"), "variant": ("variant", "VARIANT"),
}


def type_text(spark_type: Any) -> str:
    """A Delta (Spark JSON) type as Unity Catalog's ``type_text``: ``bigint``,
    ``array<struct<role:string,content:string>>``, ``map<string,bigint>``, ``decimal(10,2)``."""
    if isinstance(spark_type, str):
        return _PRIMITIVE.get(spark_type, (spark_type, ""))[0]
    kind = spark_type.get("type") if isinstance(spark_type, dict) else None
    if kind == "array":
        return f"array<{type_text(spark_type.get('elementType'))}>"
    if kind == "map":
        return f"map<{type_text(spark_type.get('keyType'))},{type_text(spark_type.get('valueType'))}>"
    if kind == "struct":
        return "struct<" + ",".join(f"{f.get('name')}:{type_text(f.get('type'))}" for f in spark_type.get("fields", [])) + ">"
    return str(kind or spark_type)


def type_name(spark_type: Any) -> str:
    """Unity Catalog's ``type_name`` (databricks-sdk ``ColumnTypeName``) of a Delta type."""
    if isinstance(spark_type, str):
        if spark_type.startswith("decimal"):
            return "DECIMAL"
        return _PRIMITIVE.get(spark_type, ("", "USER_DEFINED_TYPE"))[1]
    kind = spark_type.get("type") if isinstance(spark_type, dict) else None
    return {"array": "ARRAY", "map": "MAP", "struct": "STRUCT"}.get(str(kind), "USER_DEFINED_TYPE")


def _column(position: int, field: Any, partitions: list[str]) -> dict[str, Any]:
    spec = json.loads(field.to_json())
    column: dict[str, Any] = {
        "name": spec["name"], "position": position, "nullable": bool(spec.get("nullable", True)),
        "type_text": type_text(spec["type"]), "type_name": type_name(spec["type"]), "type_json": field.to_json(),
    }
    if isinstance(spec["type"], str) and spec["type"].startswith("decimal("):
        precision, _, scale = spec["type"][len("decimal("):-1].partition(",")
        column.update(type_precision=int(precision), type_scale=int(scale or 0))
    if spec["name"] in partitions:
        column["partition_index"] = partitions.index(spec["name"])
    comment = (spec.get("metadata") or {}).get("comment")
    if isinstance(comment, str):
        column["comment"] = comment
    return column


def _owner(path: Path) -> str | None:
    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (KeyError, OSError):
        return None


def _commit_time_ms(folder: Path, version: int) -> int | None:
    try:
        return int((folder / "_delta_log" / f"{version:020d}.json").stat().st_mtime * 1000)
    except OSError:
        return None


def _locate(full_name: str) -> tuple[Path, tuple[str, str, str]]:
    """The table's Delta folder and its (catalog, schema, table) as named there, or the 400/403/404
    Databricks answers for it."""
    try:
        folder = table_folder(full_name)
    except PathError as exc:
        raise Refusal(api_error(400, "INVALID_PARAMETER_VALUE", str(exc))) from exc
    root = config.tables_root()
    catalog, schema, table = folder.relative_to(root).parts
    if not is_folder(root / catalog):
        raise Refusal(api_error(404, "CATALOG_DOES_NOT_EXIST", f"Catalog '{catalog}' does not exist (no folder "
                              f"{root / catalog} in tunedeck's catalog root, TUNEDECK_TABLES)."))
    if not is_folder(root / catalog / schema):
        raise Refusal(api_error(404, "SCHEMA_DOES_NOT_EXIST",
                              f"Schema '{catalog}.{schema}' does not exist (no folder {root / catalog / schema})."))
    name = f"{catalog}.{schema}.{table}"
    if not is_folder(folder):
        raise Refusal(api_error(404, "TABLE_DOES_NOT_EXIST", f"Table '{name}' does not exist (no folder {folder})."))
    if not os.access(folder, os.R_OK | os.X_OK):
        raise Refusal(api_error(403, "PERMISSION_DENIED",
                              f"User does not have SELECT on Table '{name}' ({folder} is not readable)."))
    if not is_folder(folder / "_delta_log"):
        raise Refusal(api_error(404, "TABLE_DOES_NOT_EXIST",
                              f"Table '{name}' does not exist: {folder} is not a Delta table (it has no _delta_log folder)."))
    return folder, (catalog, schema, table)


def table_info(full_name: str) -> dict[str, Any]:
    """Unity Catalog's TableInfo of the local Delta table ``full_name``, read from its Delta log."""
    folder, (catalog, schema, table) = _locate(full_name)
    name = f"{catalog}.{schema}.{table}"
    try:
        from deltalake import DeltaTable

        dt = DeltaTable(str(folder))
        version = int(dt.version())
        fields = dt.schema().fields
        metadata = dt.metadata()
        protocol = dt.protocol()
    except ImportError as exc:
        raise Refusal(api_error(501, "NOT_IMPLEMENTED", f"{NEEDS}: {exc}")) from exc
    except Exception as exc:  # deltalake raises its own errors, and OSError/ValueError for a bad log
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        message = f"Table '{name}': {folder} cannot be read as a Delta table: {reason}"
        raise Refusal(api_error(500, "INTERNAL_ERROR", message)) from exc
    partitions = list(metadata.partition_columns or [])
    properties = {str(k): str(v) for k, v in (metadata.configuration or {}).items() if v is not None}
    properties.update({
        "delta.lastUpdateVersion": str(version),
        "delta.minReaderVersion": str(protocol.min_reader_version),
        "delta.minWriterVersion": str(protocol.min_writer_version),
    })
    for kind, features in (("reader", protocol.reader_features), ("writer", protocol.writer_features)):
        if features:
            properties[f"delta.{kind}Features"] = ",".join(features)
    owner = _owner(folder)
    info: dict[str, Any] = {
        "name": table, "catalog_name": catalog, "schema_name": schema, "full_name": name,
        "table_type": "MANAGED", "data_source_format": "DELTA",
        "storage_location": folder.resolve().as_uri(),
        "columns": [_column(i, f, partitions) for i, f in enumerate(fields)],
        "table_id": metadata.id, "owner": owner, "created_by": owner,
        "created_at": int(metadata.created_time) if metadata.created_time else _commit_time_ms(folder, 0),
        "updated_at": _commit_time_ms(folder, version),
        "properties": properties, "metastore_id": "tunedeck",
    }
    if metadata.description:
        info["comment"] = metadata.description
    return {k: v for k, v in info.items() if v is not None}


def local_cluster(started_at_ms: int, cluster_id: str = LOCAL_CLUSTER_ID) -> dict[str, Any]:
    """The one cluster there is: the service's own data preparation (see the module's docstring), under
    its own id or one TUNEDECK_CLUSTER_IDS gives it."""
    import getpass

    user = getpass.getuser()
    return {
        "cluster_id": cluster_id,
        "cluster_name": "tunedeck data preparation (inside the service: no Spark)",
        "state": "RUNNING",
        "state_message": "",
        "spark_version": LOCAL_SPARK_VERSION,
        "data_security_mode": "SINGLE_USER",
        "single_user_name": user,
        "creator_user_name": user,
        "num_workers": 0,
        "start_time": started_at_ms,
        "custom_tags": {"tunedeck": "tables are read by the service and its workers with deltalake; no Spark cluster exists"},
    }


def data_prep_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    started_at_ms = int(time.time() * 1000)

    @router.get(UC_TABLES + "/{full_name}")
    def get_table(full_name: str) -> Response:
        """The Delta table ``<catalog>.<schema>.<table>`` under the local catalog root."""
        try:
            return JSONResponse(table_info(full_name))
        except Refusal as failure:
            return failure.response

    @router.get(UC_TABLES + "/{full_name}/exists")
    def table_exists(full_name: str) -> Response:
        """``{"table_exists": bool}``: whether the name is a Delta table under the local catalog root."""
        try:
            _locate(full_name)
        except Refusal as failure:
            if failure.response.status_code == 404:
                return JSONResponse({"table_exists": False})
            return failure.response
        return JSONResponse({"table_exists": True})

    def get_cluster(cluster_id: str | None = None) -> Response:
        if not cluster_id:
            return api_error(400, "INVALID_PARAMETER_VALUE", "Missing required field: cluster_id")
        if cluster_id != LOCAL_CLUSTER_ID and cluster_id not in config.cluster_ids():
            return api_error(400, "INVALID_PARAMETER_VALUE", f"Cluster {cluster_id} does not exist (tunedeck prepares "
                          f"data itself: its one cluster is {LOCAL_CLUSTER_ID!r}; TUNEDECK_CLUSTER_IDS names more ids for it)")
        return JSONResponse(local_cluster(started_at_ms, cluster_id))

    def list_clusters() -> Response:
        ids = dict.fromkeys((LOCAL_CLUSTER_ID, *config.cluster_ids()))
        return JSONResponse({"clusters": [local_cluster(started_at_ms, i) for i in ids]})

    for version in ("2.0", "2.1"):  # databricks-sdk 0.42 asks 2.1; older clients and the CLI 2.0
        router.add_api_route(f"/api/{version}/clusters/get", get_cluster, methods=["GET"])
        router.add_api_route(f"/api/{version}/clusters/list", list_clusters, methods=["GET"])
    return router
