"""The REST adapter: FastAPI routes over the service core, bearer token on every endpoint."""


import secrets
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse

from tunedeck.errors import InvalidInputError, Problem, RunNotFoundError
from tunedeck.inputs.validate import RunRequest
from tunedeck.service.core import RunService
from tunedeck.service.schemas import DataCheckRequest, EventsPublic, MetricsPublic, ProblemsPublic, RunCreate, RunsPublic


def create_app(service: RunService, token: str, home: Path) -> FastAPI:
    def get_service() -> RunService:
        return service

    Service = Annotated[RunService, Depends(get_service)]

    app = FastAPI(
        title="tunedeck",
        summary="A local fine-tuning service implementing the Model Training API",
        version="0.1.0",
    )

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        """Every endpoint, the OpenAPI docs included, needs the token: a bearer header, or for a
        browser opening /docs once, ``?token=`` which is then kept in a cookie."""
        header = request.headers.get("authorization", "")
        from_query = request.query_params.get("token")
        given = header[7:] if header.lower().startswith("bearer ") else from_query or request.cookies.get("tunedeck_token", "")
        if not secrets.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"detail": "a valid bearer token is required"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
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

    runs = APIRouter(prefix="/api/runs", tags=["runs"])

    @runs.post("", status_code=201)
    def create_run(body: RunCreate, svc: Service) -> dict[str, Any]:
        """Create a training run; with validate_inputs every input is checked first."""
        return svc.create(RunRequest(**body.model_dump())).to_dict()

    @runs.get("")
    def list_runs(svc: Service, limit: int | None = None, status: Annotated[list[str] | None, Query()] = None) -> RunsPublic:
        """List runs, newest first."""
        return RunsPublic(runs=[r.to_dict() for r in svc.list(limit, status)])

    @runs.get("/{name}")
    def get_run(name: str, svc: Service) -> dict[str, Any]:
        """Get one run."""
        return svc.get(name).to_dict()

    @runs.post("/{name}/cancel")
    def cancel_run(name: str, svc: Service) -> dict[str, Any]:
        """Cancel a run: a waiting run stops at once, a training one within seconds."""
        return svc.cancel(name).to_dict()

    @runs.delete("/{name}", status_code=204)
    def delete_run(name: str, svc: Service) -> Response:
        """Delete a run with its events, metrics and checkpoints (cancelling it first)."""
        svc.delete(name)
        return Response(status_code=204)

    @runs.get("/{name}/events")
    def list_events(name: str, svc: Service, after: int = 0, limit: int | None = Query(None, ge=1)) -> EventsPublic:
        """Events with sequence > after, oldest first."""
        events = svc.events(name, after, limit)
        return EventsPublic(events=[e.to_dict() for e in events], last_sequence=events[-1].sequence if events else after)

    @runs.get("/{name}/metrics")
    def list_metrics(name: str, svc: Service, after: int = 0, limit: int | None = Query(None, ge=1)) -> MetricsPublic:
        """Metric points with id > after."""
        points = svc.metrics(name, after, limit)
        return MetricsPublic(metrics=points, last_id=points[-1]["id"] if points else after)

    @runs.get("/{name}/checkpoints")
    def list_checkpoints(name: str, svc: Service) -> dict[str, Any]:
        """Checkpoints of a run, usable as custom_weights_path."""
        return {"checkpoints": [c.to_dict() for c in svc.checkpoints(name)]}

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
    def health() -> dict[str, Any]:
        """Liveness and which state dir this service serves."""
        return {"status": "ok", "home": str(home)}

    app.include_router(runs)
    app.include_router(checks)
    return app


__all__ = ["create_app", "Problem"]
