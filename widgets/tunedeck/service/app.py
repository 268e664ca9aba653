"""The REST adapter: FastAPI routes over the service core, bearer token on every endpoint.

Every request error is a 4xx with a message, never a 500 or a hang: a body over 1 MiB is 413, JSON
nested deeper than 64 levels is 422, query integers are bounded (``after`` <= 2**62), request
validation errors list Problems naming the field, and anything unexpected is answered as a JSON 500
(logged) by ``_CatchAll`` so the connection stays usable.
"""


import json
import logging
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from tunedeck import config
from tunedeck.errors import InvalidInputError, Problem, RunNotFoundError
from tunedeck.inputs.validate import RunRequest
from tunedeck.service.core import RunService
from tunedeck.service.data_prep import data_prep_router
from tunedeck.service.databricks_mlflow import DatabricksMlflow
from tunedeck.service.estimate import estimate_router
from tunedeck.service.generate import Generator, GeneratorBusyError, helper_request
from tunedeck.service.graphql_api import graphql_router, unauthenticated
from tunedeck.service.mlflow_ui import PREFIX, MlflowServer
from tunedeck.service.run_query import RunQuery
from tunedeck.service.schemas import (
    DataCheckRequest,
    EventsPublic,
    GenerateRequest,
    MetricsPublic,
    ProblemsPublic,
    RunCreate,
    RunsPublic,
)
from tunedeck.service.unity_catalog import unity_catalog_router
from tunedeck.types import RunStatus

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 64
MAX_ID = 2**62  # `after` cursors: above any sequence or id SQLite hands out, below its 2**63 limit
MAX_PAGE = 100_000
MAX_RUN_NAME = 256

RunName = Annotated[str, PathParam(max_length=MAX_RUN_NAME)]
After = Annotated[int, Query(ge=0, le=MAX_ID, description="only items after this sequence/id")]
Limit = Annotated[int | None, Query(ge=1, le=MAX_PAGE)]


def create_app(service: RunService, token: str, home: Path) -> FastAPI:
    def get_service() -> RunService:
        return service

    Service = Annotated[RunService, Depends(get_service)]
    generator = Generator()  # Try it's helper process, started on the first prompt

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        generator.close()
        await app.state.mlflow_server.aclose()

    app = FastAPI(
        title="tunedeck",
        summary="A local fine-tuning service implementing the Model Training API",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.generator = generator
    app.add_middleware(_BodyLimits)  # innermost: after the token check, before any route reads the body

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        """Every endpoint, the OpenAPI docs included, needs the token: a bearer header, or for a
        browser opening /docs once, ``?token=`` which is then kept in a cookie."""
        header = request.headers.get("authorization", "")
        from_query = request.query_params.get("token")
        given = header[7:] if header.lower().startswith("bearer ") else from_query or request.cookies.get("tunedeck_token", "")
        if not secrets.compare_digest(given.encode(), token.encode()):
            return unauthenticated(request.url.path) or JSONResponse(
                {"detail": "a valid bearer token is required"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        response = await call_next(request)
        if from_query:
            response.set_cookie("tunedeck_token", token, httponly=True, samesite="strict")
        return response

    @app.exception_handler(RunNotFoundError)
    def run_not_found(_: Request, exc: RunNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(InvalidInputError)
    def invalid_input(_: Request, exc: InvalidInputError) -> JSONResponse:
        return JSONResponse({"detail": {"message": str(exc), "problems": [p.to_dict() for p in exc.problems]}}, status_code=422)

    @app.exception_handler(RequestValidationError)
    def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's own validation (types, bounds, unknown parameters) as Problems naming each field."""
        problems: dict[str, Problem] = {}
        for error in exc.errors()[:20]:  # a union type fails once per member: one Problem per field
            problem = _validation_problem(error)
            seen = problems.get(problem.field)
            if seen is None:
                problems[problem.field] = problem
            elif problem.message not in seen.message:
                problems[problem.field] = Problem(
                    problem.field, f"{seen.message}; or {problem.message[:1].lower()}{problem.message[1:]}"
                )
        merged = list(problems.values())
        return JSONResponse(
            {"detail": {"message": str(InvalidInputError(merged)), "problems": [p.to_dict() for p in merged]}},
            status_code=422,
        )

    app.add_middleware(_CatchAll)  # outermost: nothing unexpected escapes as a broken connection

    runs = APIRouter(prefix="/api/runs", tags=["runs"])

    @runs.post("", status_code=201)
    def create_run(body: RunCreate, svc: Service) -> dict[str, Any]:
        """Create a training run; with validate_inputs every input is checked first (and without it,
        still every parameter's type, length, name and path syntax)."""
        return svc.create(RunRequest(**body.model_dump())).to_dict()

    @runs.get("")
    def list_runs(
        svc: Service,
        limit: Limit = None,
        status: Annotated[list[RunStatus] | None, Query()] = None,
        name: Annotated[list[Annotated[str, Query(max_length=MAX_RUN_NAME)]] | None, Query()] = None,
        created_by: Annotated[list[str] | None, Query(description="the creators' user names")] = None,
        experiment_id: Annotated[list[str] | None, Query(description="MLflow experiment ids")] = None,
        created_before: Annotated[datetime | None, Query(description="created before (ISO 8601; no offset: local time)")] = None,
        created_after: Annotated[datetime | None, Query(description="created at or after (ISO 8601)")] = None,
        cursor: Annotated[str | None, Query(max_length=1024, description="the previous page's cursor")] = None,
    ) -> RunsPublic:
        """List runs, newest first: those matching every filter given, at most ``limit``; pass the
        answer's ``cursor`` for the next page."""
        created = {op: at if at.tzinfo else at.astimezone() for op, at in (("lt", created_before), ("gte", created_after)) if at}
        page = svc.find(RunQuery(
            names=name, statuses=sorted({s.value for s in status}) if status else None, created_by=created_by,
            experiment_ids=experiment_id, created=created, cursor=cursor, limit=limit,
        ))
        return RunsPublic(runs=[r.to_dict() for r in page.runs], cursor=page.cursor, has_next_page=page.has_next_page)

    @runs.get("/{name}")
    def get_run(name: RunName, svc: Service) -> dict[str, Any]:
        """Get one run."""
        return svc.get(name).to_dict()

    @runs.post("/{name}/cancel")
    def cancel_run(name: RunName, svc: Service) -> dict[str, Any]:
        """Cancel a run: a waiting run stops at once, a training one within seconds."""
        return svc.cancel(name).to_dict()

    @runs.delete("/{name}", status_code=204)
    def delete_run(name: RunName, svc: Service) -> Response:
        """Delete a run with its events, metrics and checkpoints (cancelling it first)."""
        svc.delete(name)
        return Response(status_code=204)

    @runs.get("/{name}/events")
    def list_events(name: RunName, svc: Service, after: After = 0, limit: Limit = None) -> EventsPublic:
        """Events with sequence > after, oldest first."""
        events = svc.events(name, after, limit)
        return EventsPublic(events=[e.to_dict() for e in events], last_sequence=events[-1].sequence if events else after)

    @runs.get("/{name}/metrics")
    def list_metrics(name: RunName, svc: Service, after: After = 0, limit: Limit = None) -> MetricsPublic:
        """Metric points with id > after."""
        points = svc.metrics(name, after, limit)
        return MetricsPublic(metrics=points, last_id=points[-1]["id"] if points else after)

    @runs.get("/{name}/checkpoints")
    def list_checkpoints(name: RunName, svc: Service) -> dict[str, Any]:
        """Checkpoints of a run, usable as custom_weights_path."""
        return {"checkpoints": [c.to_dict() for c in svc.checkpoints(name)]}

    @runs.post("/{name}/generate", response_class=StreamingResponse, responses={
        200: {"content": {"application/x-ndjson": {}}, "description": "JSON lines: start, loading, text..., done or error"},
        409: {"description": "another answer is being generated"},
    })
    def generate(name: RunName, body: GenerateRequest, svc: Service) -> StreamingResponse:
        """Try it: a completed run's registered version or checkpoint answers a prompt, streamed as JSON
        lines ({"event": "start"}, {"event": "text", "text"}..., then {"event": "done", "text", "tokens",
        "seconds"} or {"event": "error", "message"}), generated in a helper process."""
        run = svc.get(name)
        checkpoints = svc.checkpoints(name) if run.status is RunStatus.COMPLETED else []
        request = helper_request(run, checkpoints, body.prompt, body.checkpoint, body.max_new_tokens, body.temperature)
        try:
            answer = generator.start(request, name)
        except GeneratorBusyError as exc:
            raise HTTPException(409, str(exc)) from None
        return StreamingResponse(answer.lines(), media_type="application/x-ndjson", headers={"Cache-Control": "no-store"})

    checks = APIRouter(prefix="/api", tags=["checks"])

    @checks.post("/validate")
    def validate_run(body: RunCreate, svc: Service) -> ProblemsPublic:
        """Check create() parameters without creating a run."""
        return ProblemsPublic(problems=[p.to_dict() for p in svc.validate(RunRequest(**body.model_dump()))])

    @checks.post("/data-check")
    def check_data(body: DataCheckRequest, svc: Service) -> dict[str, Any]:
        """Rows, token counts and the first bad lines of a data file, for the notebook form."""
        return svc.data_check(body.train_data_path, body.task_type, body.model, body.context_length)

    @checks.get("/models")
    def list_models(svc: Service) -> dict[str, Any]:
        """Models this service can train, with their maximum context length."""
        return {"models": [m.to_dict() for m in svc.models()]}

    @checks.get("/health")
    def health(svc: Service) -> dict[str, Any]:
        """Liveness (the scheduler's too), which state dir this service serves, and its devices (with their
        description as create()'s messages word it, and the num_devices a run gets when create() gives none)."""
        state = svc.health()
        try:
            default: int | None = config.num_devices()
        except ValueError:  # create() says so, naming TUNEDECK_NUM_DEVICES
            default = None
        state["devices"] = {**state["devices"], "described": svc.devices.pool.describe(), "default_num_devices": default}
        return {"status": "ok" if state["scheduler"] == "alive" else "degraded", "home": str(home), **state}

    mlflow_server = MlflowServer(config.mlflow_tracking_uri(), config.mlflow_artifact_root(), home)
    app.state.mlflow_server = mlflow_server
    databricks_mlflow = DatabricksMlflow(service, mlflow_server)
    methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]

    @app.api_route(PREFIX, methods=["GET"], include_in_schema=False)
    @app.api_route(PREFIX + "/{path:path}", methods=methods, include_in_schema=False)
    async def mlflow_ui(request: Request, path: str = "") -> Response:
        """MLflow's UI and REST API (its own server, on the store the runs log to): open
        /mlflow/?token=... in a browser once (the token is then kept in a cookie)."""
        return await mlflow_server.forward(request, f"{PREFIX}/{path}")

    @app.api_route("/api/2.0/mlflow/{path:path}", methods=methods, include_in_schema=False)
    async def mlflow_rest(request: Request, path: str) -> Response:
        """MLflow's REST API on the service's root, as a Databricks workspace answers it (runs'
        artifact URIs in dbfs:/databricks/mlflow-tracking form, checkpoints listed as artifacts):
        service/databricks_mlflow.py. MLflow's own clients use <service url>/mlflow."""
        return await databricks_mlflow.answer(request, path)

    app.include_router(runs)
    app.include_router(checks)
    app.include_router(estimate_router(service))  # POST /api/estimate, PUT/GET /api/runs/{name}/estimate
    app.include_router(graphql_router(service))  # the official client's protocol (GraphQL, SCIM Me): service/graphql_api.py
    app.include_router(unity_catalog_router(mlflow_server))  # the client's register_to checks: service/unity_catalog.py
    app.include_router(data_prep_router())  # the client's table and data_prep_cluster_id checks: service/data_prep.py
    return app


def _validation_problem(error: dict[str, Any]) -> Problem:
    """One of FastAPI's validation errors as a Problem: the field it names and pydantic's message
    (never the rejected input itself, which may be huge)."""
    loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
    field = loc[0] if loc else "request"
    kind = error.get("type", "")
    message = str(error.get("msg", "invalid value"))[:300]
    if kind == "extra_forbidden":
        message = "unknown parameter"
    elif kind == "json_invalid":
        field, message = "request", f"the body is not valid JSON ({str((error.get('ctx') or {}).get('error', ''))[:100]})"
    elif kind == "missing":
        message = "is required"
    return Problem(field[:100], message)


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth(body: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply the arrays/objects of a JSON text nest (strings skipped); stops counting past ``limit``."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', body)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        else:
            depth -= 1
    return deepest


async def _send_json(send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def _problem_body(field: str, message: str) -> dict[str, Any]:
    problem = Problem(field, message)
    return {"detail": {"message": str(InvalidInputError([problem])), "problems": [problem.to_dict()]}}


class _BodyLimits:
    """Refuses a request body over MAX_BODY_BYTES (413, without reading past the limit) and a JSON body
    nested deeper than MAX_JSON_DEPTH (422) before any route parses it; a pure ASGI middleware, so the
    body it read is handed on unchanged."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"").strip()
        too_big = _problem_body("request", f"the request body is larger than {MAX_BODY_BYTES:,} bytes")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            await _send_json(send, 413, too_big)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await _send_json(send, 413, too_big)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and json_depth(body) > MAX_JSON_DEPTH:
            await _send_json(
                send, 422, _problem_body("request", f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep")
            )
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class _CatchAll:
    """Any exception a route or middleware did not turn into a response becomes a logged JSON 500,
    answered normally: the connection (keep-alive) stays usable for the next request."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as error:  # the point of this middleware (logged, answered 500)
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                return  # the response is under way: end it rather than break the connection
            await _send_json(send, 500, {"detail": f"internal error ({type(error).__name__}): the service log has the details"})


__all__ = ["Problem", "create_app", "json_depth"]
