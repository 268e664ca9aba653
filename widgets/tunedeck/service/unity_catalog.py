"""The Unity Catalog calls the official client makes to check ``register_to``, answered from tunedeck's
registry (MLflow's model registry, which the workers register into).

``create(..., validate_inputs=True)`` in databricks-genai 1.1.8 (``api/validation.py``,
``validate_register_to``) asks, through databricks-sdk:

- ``GET /api/2.1/unity-catalog/models/<catalog>.<schema>.<name>``: the registered model, if it exists
  (404 ``NOT_FOUND`` sends the client on to create one); its ``owner`` must be SCIM Me's userName;
- ``POST /api/2.1/unity-catalog/models`` ``{catalog_name, schema_name, name}`` then ``DELETE
  /api/2.1/unity-catalog/models/<full name>``: the client proves it may register there by creating
  a model and deleting it again (for ``<catalog>.<schema>`` with a throw-away name);
- ``GET /api/2.1/unity-catalog/effective-permissions/{catalog|schema}/<path>?principal=<user>``: at
  least one of ``ALL_PRIVILEGES`` / ``USE_CATALOG`` (``USE_SCHEMA``) for that user.

Answers, truthfully: tunedeck has no catalogs of its own; every ``<catalog>.<schema>`` that
``register_to`` accepts (inputs/params.py registered_model_name) exists, as tunedeck registers into
any such names. A registered model exists when MLflow's registry has it, read and written through
MLflow's REST API on the service's own MLflow server (service/mlflow_ui.py: this process never
imports mlflow). Everything belongs to the local user, the token holder, who holds ALL_PRIVILEGES;
any other principal holds none. Errors are Databricks' ``{"error_code", "message"}`` bodies with the
status the SDK maps to its exception types (400, 404, 409), never one it retries.
"""

from __future__ import annotations

import getpass
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from tunedeck.inputs.params import registered_model_name
from tunedeck.service.mlflow_ui import MlflowServer, MlflowUnavailableError

UC_PATH = "/api/2.1/unity-catalog"
ALL_PRIVILEGES = "ALL_PRIVILEGES"


def api_error(status: int, code: str, message: str) -> JSONResponse:
    """An error in Databricks' REST shape, which databricks-sdk turns into its typed errors (also
    service/data_prep.py's)."""
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


class Refusal(Exception):
    """Raised with the answer to give instead (an api_error)."""

    def __init__(self, response: JSONResponse):
        self.response = response


def _full_name(full_name: str) -> tuple[str, str, str]:
    """``<catalog>.<schema>.<name>`` split, or a 400 where register_to would refuse it."""
    parts = full_name.split(".")
    try:
        if len(parts) != 3:
            raise ValueError(f"{full_name!r} is not '<catalog>.<schema>.<model name>'")
        registered_model_name(full_name, "")
    except ValueError as exc:
        raise Refusal(api_error(400, "INVALID_PARAMETER_VALUE", str(exc))) from exc
    return parts[0], parts[1], parts[2]


def _model_info(full_name: str, mlflow_model: dict[str, Any]) -> dict[str, Any]:
    catalog, schema, name = full_name.split(".")
    user = getpass.getuser()
    return {
        "full_name": full_name, "catalog_name": catalog, "schema_name": schema, "name": name,
        "owner": user, "created_by": user, "updated_by": user,
        "created_at": mlflow_model.get("creation_timestamp"),
        "updated_at": mlflow_model.get("last_updated_timestamp"),
        "comment": mlflow_model.get("description") or None,
        "storage_location": None, "metastore_id": "tunedeck",
    }


def unity_catalog_router(mlflow: MlflowServer) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    async def registry(method: str, endpoint: str, *, params: dict[str, Any] | None = None,
                       body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        """MLflow's registry REST API (``/api/2.0/mlflow/registered-models/<endpoint>``) on the service's
        MLflow server: its status and JSON answer."""
        try:
            answer = await mlflow.request(method, f"/api/2.0/mlflow/registered-models/{endpoint}", params=params, json=body)
        except MlflowUnavailableError as exc:
            raise Refusal(api_error(501, "NOT_IMPLEMENTED", f"tunedeck's model registry is unavailable: {exc}")) from exc
        except httpx.HTTPError as exc:
            raise Refusal(api_error(500, "INTERNAL_ERROR", f"MLflow's server did not answer: {exc}")) from exc
        try:
            data = answer.json()
        except ValueError:
            data = {"message": answer.text[:500]}
        return answer.status_code, data if isinstance(data, dict) else {}

    def mlflow_failure(status: int, data: dict[str, Any], full_name: str) -> Refusal:
        code = data.get("error_code", "")
        if code == "RESOURCE_DOES_NOT_EXIST" or status == 404:
            return Refusal(api_error(404, "NOT_FOUND", f"Registered model '{full_name}' does not exist."))
        if code == "RESOURCE_ALREADY_EXISTS":
            return Refusal(api_error(409, "ALREADY_EXISTS", f"Registered model '{full_name}' already exists."))
        if status == 400:
            return Refusal(api_error(400, "INVALID_PARAMETER_VALUE", data.get("message") or "invalid request"))
        return Refusal(api_error(500, "INTERNAL_ERROR", f"MLflow's registry answered {status}: {data.get('message')}"))

    @router.get(UC_PATH + "/models/{full_name}")
    async def get_model(full_name: str) -> Response:
        """A registered model, when MLflow's registry has it."""
        try:
            _full_name(full_name)
            status, data = await registry("GET", "get", params={"name": full_name})
            if status != 200:
                raise mlflow_failure(status, data, full_name)
        except Refusal as failure:
            return failure.response
        return JSONResponse(_model_info(full_name, data.get("registered_model", {})))

    @router.post(UC_PATH + "/models")
    async def create_model(request: Request) -> Response:
        """A new registered model in MLflow's registry (``{catalog_name, schema_name, name}``)."""
        try:
            try:
                body = await request.json()
            except ValueError as exc:
                raise Refusal(api_error(400, "MALFORMED_REQUEST", "the body is not JSON")) from exc
            parts = [body.get(k) if isinstance(body, dict) else None for k in ("catalog_name", "schema_name", "name")]
            if not all(isinstance(p, str) and p for p in parts):
                raise Refusal(api_error(400, "INVALID_PARAMETER_VALUE", "catalog_name, schema_name and name are required"))
            full_name = ".".join(parts)  # type: ignore[arg-type]
            _full_name(full_name)
            status, data = await registry("POST", "create", body={"name": full_name})
            if status != 200:
                raise mlflow_failure(status, data, full_name)
        except Refusal as failure:
            return failure.response
        return JSONResponse(_model_info(full_name, data.get("registered_model", {})))

    @router.delete(UC_PATH + "/models/{full_name}")
    async def delete_model(full_name: str) -> Response:
        """The registered model removed from MLflow's registry (with its versions, as MLflow does)."""
        try:
            _full_name(full_name)
            status, data = await registry("DELETE", "delete", body={"name": full_name})
            if status != 200:
                raise mlflow_failure(status, data, full_name)
        except Refusal as failure:
            return failure.response
        return JSONResponse({})

    @router.get(UC_PATH + "/effective-permissions/{securable_type}/{full_name}")
    def effective_permissions(securable_type: str, full_name: str, principal: str | None = None) -> Response:
        """ALL_PRIVILEGES for the local user on every catalog and schema register_to accepts (and on
        registered models); no privileges for anyone else."""
        kind = securable_type.lower()
        parts = full_name.split(".")
        expected = {"catalog": 1, "schema": 2, "function": 3, "registered_model": 3, "registered-model": 3}
        if kind not in expected:
            return api_error(400, "INVALID_PARAMETER_VALUE", f"unsupported securable type {securable_type!r}")
        if len(parts) != expected[kind]:
            return api_error(400, "INVALID_PARAMETER_VALUE", f"{full_name!r} is not a {kind} name")
        try:
            registered_model_name(".".join([*parts, "x", "x"][:3]), "")
        except ValueError as exc:
            return api_error(400, "INVALID_PARAMETER_VALUE", str(exc))
        user = getpass.getuser()
        if principal not in (None, "", user):
            return JSONResponse({"privilege_assignments": []})
        return JSONResponse({"privilege_assignments": [{"principal": user, "privileges": [{"privilege": ALL_PRIVILEGES}]}]})

    return router
