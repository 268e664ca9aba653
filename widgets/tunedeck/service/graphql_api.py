"""The hosted service's protocol: the official client (``databricks-genai``, package
``databricks.model_training``) pointed at tunedeck with ``DATABRICKS_HOST`` / ``DATABRICKS_TOKEN``.

A second protocol adapter beside the REST one (``service/app.py``), over the same ``RunService``:

- ``POST /api/2.0/genai-mapi/graphql``: the GraphQL operations the client sends (databricks-genai
  1.1.8, ``api/foundation_model/*.py``): ``getFinetuneConstants`` (get_models), ``createFinetune``
  (create), ``getFinetunesPaginated`` (get, list: filters, cursor, limit), ``getFinetuneEvents``
  (get_events) and ``stopFinetunes`` (cancel). The schema is written in SDL below and executed by
  graphql-core, the reference GraphQL implementation (parsing, validation, variables, errors).
  Errors are GraphQL ``errors`` whose ``extensions.code`` is the HTTP status the client turns into its
  ``MAPIException`` (400 bad input, 404 unknown run, 500 unexpected); never a status the client
  retries (429, 502-504), since retrying cannot fix them.
- ``HEAD /api/2.0/fs/files/Volumes/...``: the Files API's check that a Volumes file exists
  (``create(validate_inputs=True)`` asks it), answered from tunedeck's volumes root.
- ``GET /api/2.0/preview/scim/v2/Me``: the user, which ``create()`` asks for when no
  ``experiment_path`` is given (it then sends ``/Users/<userName>/{}``; the run's name fills the
  ``{}``, as the hosted service does).

The bearer token is the app's (its ``require_token`` middleware covers every path; ``unauthenticated``
shapes its 401 for these paths).
"""

from __future__ import annotations

import getpass
import json
import logging
from datetime import datetime, timezone
from email.utils import formatdate
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from graphql import GraphQLError, build_schema, graphql_sync
from starlette.concurrency import run_in_threadpool

from tunedeck import config
from tunedeck.errors import InvalidInputError, RunNotFoundError
from tunedeck.inputs.paths import PathError, local_path
from tunedeck.inputs.validate import RunRequest
from tunedeck.service.core import RunService
from tunedeck.service.run_query import BOUNDS, RunQuery, cursor_of
from tunedeck.types import TrainingRun, create_params

log = logging.getLogger(__name__)

GRAPHQL_PATH = "/api/2.0/genai-mapi/graphql"
SCIM_ME_PATH = "/api/2.0/preview/scim/v2/Me"
FILES_PATH = "/api/2.0/fs/files"
# The client's save_folder; tunedeck saves each run under its own run folder instead (answered as saveFolder)
REFERENCE_SAVE_FOLDER = "dbfs:/databricks/mlflow-tracking/{mlflow_experiment_id}/{mlflow_run_id}/artifacts"

SDL = """
scalar DateTime
"Any JSON value (experimentTracker, dataPrepConfig)"
scalar JSON

type Query {
  getFinetuneConstants: FinetuneConstants!
  getFinetunesPaginated(getFinetunesPaginatedData: GetFinetunesPaginatedInput!): FinetunePage!
  getFinetuneEvents(getFinetuneEventsData: GetFinetuneEventsInput!): [FinetuneEvent!]!
}

type Mutation {
  createFinetune(createFinetuneData: CreateFinetuneInput!): Finetune!
  "Cancels the matching runs that are still active; answers those it cancelled"
  stopFinetunes(getFinetunesData: GetFinetunesInput!, stopFinetunesData: StopFinetunesInput): [Finetune!]!
}

type FinetuneConstants { models: [FinetuneModel!]! }
type FinetuneModel { name: String! displayName: String! maxContextLength: Int! }

type FinetunePage {
  cursor: String
  hasNextPage: Boolean!
  finetunes: [Finetune!]!
}

type Finetune {
  id: String!
  name: String!
  status: String!
  createdById: String
  createdByEmail: String
  createdAt: DateTime!
  updatedAt: DateTime!
  startedAt: DateTime
  completedAt: DateTime
  reason: String
  estimatedEndTime: DateTime
  isDeleted: Boolean!
  details: FinetuneDetails!
}

type FinetuneDetails {
  model: String!
  taskType: String!
  trainDataPath: String!
  saveFolder: String!
  evalDataPath: String
  evalPrompts: [String!]
  trainingDuration: String
  learningRate: Float
  contextLength: Int
  dataPrepConfig: JSON!
  experimentTracker: JSON!
  customWeightsPath: String
  formattedFinetuningEvents: [FinetuneEvent!]!
}

type FinetuneEvent { eventType: String! eventTime: DateTime! eventMessage: String! }

input StringFilter { equals: String, in: [String!] }
input DateFilter { lt: DateTime, lte: DateTime, gt: DateTime, gte: DateTime }
input FinetuneFilters { name: StringFilter, mlflowExperimentId: StringFilter, status: StringFilter, createdAt: DateFilter }
input EntityInput { emails: [String!] }

input GetFinetunesPaginatedInput {
  filters: FinetuneFilters
  includeDeleted: Boolean
  limit: Int
  cursor: String
  entity: EntityInput
}
input GetFinetunesInput { filters: FinetuneFilters, includeDeleted: Boolean, entity: EntityInput }
input StopFinetunesInput { reason: String }
input GetFinetuneEventsInput { name: String! }

input CreateFinetuneInput { config: FinetuneConfigInput! }
input FinetuneConfigInput {
  model: String!
  trainDataPath: String!
  saveFolder: String
  taskType: String
  evalDataPath: String
  evalPrompts: [String!]
  customWeightsPath: String
  trainingDuration: String
  learningRate: Float
  contextLength: Int
  experimentTracker: JSON
  dataPrepConfig: JSON
  disableCredentialsCheck: Boolean
}
"""

SCHEMA = build_schema(SDL)


class BadRequest(ValueError):
    """A request this adapter refuses (code 400), with the reason."""


def graphql_router(service: RunService) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    root = _Root(service)

    @router.post(GRAPHQL_PATH)
    async def graphql_endpoint(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError as exc:
            return _errors_only(f"the body is not valid JSON ({exc})")
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return _errors_only('the body must be a JSON object with a "query" string')
        variables = body.get("variables") or {}
        if not isinstance(variables, dict):
            return _errors_only('"variables" must be a JSON object')
        operation = body.get("operationName") if isinstance(body.get("operationName"), str) else None
        return JSONResponse(await run_in_threadpool(execute, root, body["query"], variables, operation))

    @router.get(SCIM_ME_PATH)
    def scim_me() -> dict[str, Any]:
        """The service's user, as SCIM answers it (the client reads userName)."""
        user = getpass.getuser()
        return {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": user,
            "userName": user,
            "displayName": user,
            "active": True,
            "emails": [{"value": user, "type": "work", "primary": True}],
        }

    @router.head(FILES_PATH + "/{path:path}")
    def files_head(path: str) -> Response:
        """The Files API's metadata of a Volumes file (what create(validate_inputs=True) asks of a
        /Volumes path), answered from tunedeck's volumes root: 200 with its size, else 404."""
        found = _volume_file("/" + path)
        if found is None:
            return Response(status_code=404, headers={"x-databricks-error-code": "NOT_FOUND"})
        stat = found.stat()
        return Response(status_code=200, headers={
            "content-length": str(stat.st_size), "content-type": "application/octet-stream",
            "last-modified": formatdate(stat.st_mtime, usegmt=True)})

    return router


def _volume_file(path: str) -> Path | None:
    """The local file of a /Volumes/... path, when it is a regular file inside the volumes root."""
    if not path.startswith("/Volumes/"):
        return None
    try:
        local = local_path(path).resolve()
        local.relative_to(config.volumes_root().resolve())
    except (PathError, ValueError, OSError):
        return None
    return local if local.is_file() else None


def execute(root: _Root, query: str, variables: dict[str, Any], operation: str | None = None) -> dict[str, Any]:
    """One GraphQL request against the schema: ``{"data": ...}`` and/or ``{"errors": [...]}``."""
    result = graphql_sync(SCHEMA, query, root_value=root, variable_values=variables, operation_name=operation)
    out: dict[str, Any] = {}
    if result.errors:
        out["errors"] = [_format_error(e) for e in result.errors]
    if result.data is not None or not result.errors:
        out["data"] = result.data
    return out


def _format_error(error: GraphQLError) -> dict[str, Any]:
    """An error with the ``extensions.code`` the client maps to its exception's status."""
    formatted: dict[str, Any] = {**error.formatted}
    original = error.original_error
    extensions: dict[str, Any] = dict(formatted.get("extensions") or {})
    if original is None:  # the query does not parse or does not fit the schema, or a variable is wrong
        extensions["code"] = 400
    elif isinstance(original, InvalidInputError):
        extensions.update(code=400, problems=[p.to_dict() for p in original.problems])
    elif isinstance(original, (BadRequest, ValueError, TypeError)):
        extensions["code"] = 400
    elif isinstance(original, RunNotFoundError):
        extensions["code"] = 404
    else:
        log.error("unexpected error answering a GraphQL request", exc_info=original)
        extensions["code"] = 500
        formatted["message"] = f"internal error ({type(original).__name__}): the service log has the details"
    formatted["extensions"] = extensions
    return formatted


UNAUTHENTICATED = ("invalid or missing token: set DATABRICKS_TOKEN to this tunedeck service's token "
                   "(the file 'token' in its state folder, ~/.tunedeck/token by default)")


def unauthenticated(path: str) -> JSONResponse | None:
    """The 401 for a request without the service's token on the official client's paths, shaped so the
    client reports it: on the GraphQL path, GraphQL ``errors`` with ``extensions.code`` 401 (the client
    reads the body whatever the status, and a body without ``data`` or ``errors`` is its "Malformed
    response data"); on the other Databricks REST paths, Databricks' ``{"error_code", "message"}``,
    which databricks-sdk and MLflow's client show. None for tunedeck's own paths."""
    headers = {"WWW-Authenticate": "Bearer"}
    if path.rstrip("/") == GRAPHQL_PATH:
        body: dict[str, Any] = {"errors": [{"message": UNAUTHENTICATED, "extensions": {"code": 401}}]}
        return JSONResponse(body, status_code=401, headers=headers)
    if path.startswith(("/api/2.0/", "/api/2.1/")):
        return JSONResponse({"error_code": "UNAUTHENTICATED", "message": UNAUTHENTICATED}, status_code=401,
                            headers=headers)
    return None


def _errors_only(message: str) -> JSONResponse:
    return JSONResponse({"errors": [{"message": message, "extensions": {"code": 400}}]})


class _Root:
    """The root value: graphql-core's default resolver calls ``root.<field>(info, **arguments)``."""

    def __init__(self, service: RunService):
        self.service = service

    # -- queries (named as the protocol names them) ------------------------------------------------
    def getFinetuneConstants(self, _info) -> dict[str, Any]:
        return {"models": [{"name": m.name, "displayName": m.display_name, "maxContextLength": m.max_context_length}
                           for m in self.service.models()]}

    def getFinetunesPaginated(self, _info, getFinetunesPaginatedData: dict[str, Any]) -> dict[str, Any]:
        data = getFinetunesPaginatedData
        limit = data.get("limit")
        if limit is not None and limit < 1:
            raise BadRequest(f"limit must be at least 1, found {limit}")
        query = _query(data.get("filters"), data.get("entity"))
        query.cursor, query.limit = data.get("cursor") or None, limit
        try:
            page = self.service.find(query)
        except InvalidInputError:
            raise BadRequest("cursor: not a cursor this service gave") from None
        return {
            "finetunes": [self._finetune(r) for r in page.runs],
            "cursor": page.cursor or (cursor_of(page.runs[-1]) if page.runs else query.cursor),
            "hasNextPage": page.has_next_page,
        }

    def getFinetuneEvents(self, _info, getFinetuneEventsData: dict[str, Any]) -> list[dict[str, Any]]:
        return [_event(e) for e in self.service.events(getFinetuneEventsData["name"])]

    # -- mutations ----------------------------------------------------------------------------------
    def createFinetune(self, _info, createFinetuneData: dict[str, Any]) -> dict[str, Any]:
        return self._finetune(self.service.create(_run_request(createFinetuneData["config"])))

    def stopFinetunes(self, _info, getFinetunesData: dict[str, Any],
                      stopFinetunesData: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        filters = getFinetunesData.get("filters") or {}
        if not any(filters.get(k) for k in ("name", "mlflowExperimentId")):
            raise BadRequest("stopFinetunes needs a filter on name or mlflowExperimentId (it would cancel every run)")
        stopped = []
        for run in self.service.find(_query(filters, getFinetunesData.get("entity"))).runs:
            if run.status.is_terminal():
                continue
            try:
                stopped.append(self._finetune(self.service.cancel(run.name)))
            except RunNotFoundError:  # deleted meanwhile
                continue
        return stopped

    # -- helpers ------------------------------------------------------------------------------------
    def _finetune(self, run: TrainingRun) -> dict[str, Any]:
        times = [t for t in (run.created_at, run.started_at, run.completed_at) if t is not None]
        created = run.created_at or datetime.fromtimestamp(0, timezone.utc)
        return {
            "id": run.name,
            "name": run.name,
            "status": run.status.value,
            "createdById": run.created_by,
            "createdByEmail": run.created_by or "",
            "createdAt": _iso(created),
            "updatedAt": _iso(max(times) if times else created),
            "startedAt": _iso(run.started_at),
            "completedAt": _iso(run.completed_at),
            "reason": run.details,
            "estimatedEndTime": None if run.status.is_terminal() else _iso(run.estimated_end_time),
            "isDeleted": False,
            "details": lambda _info: self._details(run),  # read (with the events) only when asked for
        }

    def _details(self, run: TrainingRun) -> dict[str, Any]:
        mlflow = {"experimentPath": run.experiment_path, "modelRegistryPath": run.register_to,
                  "mlflowExperimentId": run.mlflow_experiment_id, "mlflowRunId": run.mlflow_run_id}
        flat = {path: getattr(run, name) for name, path in create_params.wire_paths().items() if "." not in path}
        return {
            **flat,
            "trainingDuration": None if run.training_duration is None else str(run.training_duration),
            # the reference's template, which the client fills with the MLflow ids: get_checkpoints()
            # joins it to the artifacts it lists (service/databricks_mlflow.py), giving paths that
            # custom_weights_path accepts back
            "saveFolder": REFERENCE_SAVE_FOLDER,
            # a dict, never null: the client reads `'clusterId' in dataPrepConfig` when the key is there
            "dataPrepConfig": {"clusterId": run.data_prep_cluster_id} if run.data_prep_cluster_id else {},
            "experimentTracker": {"mlflow": {k: v for k, v in mlflow.items() if v is not None}},
            "formattedFinetuningEvents": lambda _info: [_event(e) for e in self.service.events(run.name)],
        }


def _run_request(config: dict[str, Any]) -> RunRequest:
    """The client's createFinetune config as create()'s parameters (their ``wire`` paths:
    types/create_params.py)."""
    tracker = config.get("experimentTracker") or {}
    if not isinstance(tracker, dict):
        raise BadRequest("experimentTracker must be an object such as {mlflow: {experimentPath, modelRegistryPath}}")
    others = sorted(set(tracker) - {"mlflow"})
    if others:
        raise BadRequest(f"experimentTracker: only mlflow is supported by tunedeck, found {', '.join(others)}")
    if not isinstance(tracker.get("mlflow") or {}, dict):
        raise BadRequest("experimentTracker.mlflow must be an object")
    if not isinstance(config.get("dataPrepConfig") or {}, dict):
        raise BadRequest("dataPrepConfig must be an object such as {clusterId}")
    values = {name: _at(config, path) for name, path in create_params.wire_paths().items()}
    values["register_to"] = values["register_to"] or ""  # missing: create() says register_to is required
    values["task_type"] = values["task_type"] or create_params.DEFAULT_TASK_TYPE
    experiment_path = values["experiment_path"] or None
    if isinstance(experiment_path, str) and experiment_path.startswith("/Users/") and experiment_path.endswith("/{}"):
        # the client's default: /Users/<user>/{} where the service names the experiment after the run
        values["created_by"] = experiment_path[len("/Users/"):-len("/{}")] or None
        experiment_path = None
    values["experiment_path"] = experiment_path
    values["validate_inputs"] = not config.get("disableCredentialsCheck", False)
    return RunRequest(**values)


def _at(config: dict[str, Any], path: str) -> Any:
    """The value at a dotted ``wire`` path ('experimentTracker.mlflow.experimentPath'), or None."""
    value: Any = config
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _event(event: Any) -> dict[str, Any]:
    return {"eventType": event.type, "eventTime": _iso(event.time), "eventMessage": event.message}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: Any, where: str) -> datetime:
    try:
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{where}: {str(value)[:80]!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.astimezone()  # a naive time is the service's local time


def _query(filters: dict[str, Any] | None, entity: dict[str, Any] | None) -> RunQuery:
    """The client's filters (name, mlflowExperimentId: in/equals; status: in/equals; createdAt:
    lt/lte/gt/gte) and entity (emails) as the service's RunQuery."""
    filters = filters or {}

    def one_of(key: str) -> list[str] | None:
        wanted = filters.get(key) or {}
        values = [*(wanted.get("in") or []), *([wanted["equals"]] if wanted.get("equals") is not None else [])]
        return [str(v) for v in values] if wanted.get("in") is not None or wanted.get("equals") is not None else None

    statuses = one_of("status")
    created = filters.get("createdAt") or {}
    return RunQuery(
        names=one_of("name"), statuses=[s.upper() for s in statuses] if statuses else None,
        experiment_ids=one_of("mlflowExperimentId"), created_by=list((entity or {}).get("emails") or []) or None,
        created={op: _parse_time(created[op], f"createdAt.{op}") for op in BOUNDS if created.get(op)},
    )


__all__ = ["FILES_PATH", "GRAPHQL_PATH", "SCIM_ME_PATH", "SDL", "execute", "graphql_router", "unauthenticated"]
