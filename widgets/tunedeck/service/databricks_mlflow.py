"""MLflow's REST API on the service's root (``/api/2.0/mlflow/...``) as a Databricks workspace answers
it, so the official client's ``get_checkpoints()`` and its ``custom_weights_path`` check work.

databricks-genai 1.1.8 reads a run's checkpoints through MLflow with the tracking URI ``databricks``
(``DATABRICKS_HOST``): ``get_checkpoints()`` calls ``mlflow.artifacts.list_artifacts(run_id,
"<run name>/checkpoints")`` and joins each ``ep*`` entry to the run's save folder
``dbfs:/databricks/mlflow-tracking/<experiment id>/<run id>/artifacts``; ``create(validate_inputs=
True, custom_weights_path=...)`` lists the same place with ``MlflowClient("databricks")``. MLflow's
client picks how it lists by the scheme of the run's ``artifact_uri``: only a
``dbfs:/databricks/mlflow-tracking/...`` URI makes it ask the host (``GET
/api/2.0/mlflow/artifacts/list``); a ``file://`` URI, what tunedeck's store records, would make it
read the client's own disk, which is no answer from the service at all.

So on this path, and only here:

- run and experiment answers (``runs/*``, ``experiments/*``) carry the reference's URIs: a run's
  ``artifact_uri`` is ``dbfs:/databricks/mlflow-tracking/<experiment id>/<run id>/artifacts``, an
  experiment's ``artifact_location`` ``dbfs:/databricks/mlflow-tracking/<experiment id>``;
- ``artifacts/list`` of a tunedeck run answers ``<run name>/checkpoints/...`` from the run's real
  checkpoints folder (``~/.tunedeck/runs/<run>/checkpoints``: ``ep#-ba#`` folders, the files in
  them, ``latest-sharded-rank0.symlink``), and everything else from MLflow's server (the logged
  model, eval generations), with the ``<run name>`` folder added at the root.

Why the service lists checkpoints itself rather than the worker logging an artifact per checkpoint:
the answer is then always the folder as it is (a checkpoint a later save dropped, or a deleted run,
is gone from the listing at once; what a checkpoint folder holds is listed file by file, so the
client's ``.distcp`` check sees tunedeck's real Hugging Face files), it costs no disk, and the worker
and its checkpoint code stay as they are. Those paths are the ones ``custom_weights_path`` accepts
back (inputs/paths.py ``checkpoint_path``).

MLflow's own clients (and its UI) keep MLflow's server unchanged at ``<service url>/mlflow``
(service/mlflow_ui.py), where artifact URIs are the store's own and artifacts download.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

import httpx
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from tunedeck import config
from tunedeck.service.core import RunService
from tunedeck.service.mlflow_ui import PREFIX, MlflowServer, MlflowUnavailableError

DBFS_TRACKING = "dbfs:/databricks/mlflow-tracking"
CHECKPOINTS = "checkpoints"
MAX_LISTED = 10_000  # entries of one listing (a checkpoint folder holds a few dozen files)


def run_artifact_uri(experiment_id: str, run_id: str) -> str:
    """A run's artifact root as the reference names it (and ``custom_weights_path`` accepts below it)."""
    return f"{DBFS_TRACKING}/{experiment_id}/{run_id}/artifacts"


def with_reference_uris(value: Any) -> Any:
    """An MLflow answer with each run's ``artifact_uri`` and each experiment's ``artifact_location``
    in the reference's ``dbfs:/databricks/mlflow-tracking/...`` form (ids as given)."""
    if isinstance(value, list):
        return [with_reference_uris(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: with_reference_uris(v) for k, v in value.items()}
    experiment = out.get("experiment_id")
    run = out.get("run_id") or out.get("run_uuid")
    if isinstance(experiment, str) and experiment:
        if "artifact_uri" in out and isinstance(run, str) and run:
            out["artifact_uri"] = run_artifact_uri(experiment, run)
        if "artifact_location" in out:
            out["artifact_location"] = f"{DBFS_TRACKING}/{experiment}"
    return out


class DatabricksMlflow:
    """Answers ``/api/2.0/mlflow/<path>``: MLflow's server through ``server``, with the rewrites above."""

    def __init__(self, service: RunService, server: MlflowServer):
        self.service = service
        self.server = server

    async def answer(self, request: Request, path: str) -> Response:
        if path == "artifacts/list" and request.method == "GET":
            return await self._list_artifacts(request)
        if path.startswith(("runs/", "experiments/")):
            status, data, raw = await self._call(request, path)
            if data is None:
                return raw
            return JSONResponse(with_reference_uris(data) if status == 200 else data, status_code=status)
        return await self.server.forward(request, f"{PREFIX}/api/2.0/mlflow/{path}")

    async def _call(self, request: Request, path: str) -> tuple[int, Any, Response]:
        """MLflow's server's whole answer: (status, its JSON or None, the answer as a Response)."""
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
        try:
            upstream = await self.server.request(
                request.method, f"/api/2.0/mlflow/{path}", headers=headers,
                params=[(k, v) for k, v in request.query_params.multi_items() if k != "token"],
                content=await request.body())
        except MlflowUnavailableError as exc:
            return 404, None, JSONResponse({"error_code": "NOT_IMPLEMENTED", "message": str(exc)}, status_code=404)
        except httpx.HTTPError as exc:
            failure = {"error_code": "TEMPORARILY_UNAVAILABLE", "message": f"MLflow's server did not answer: {exc}"}
            return 502, None, JSONResponse(failure, status_code=502)
        try:
            data = upstream.json()
        except ValueError:
            data = None
        raw = Response(upstream.content, status_code=upstream.status_code,
                       media_type=upstream.headers.get("content-type"))
        return upstream.status_code, data, raw

    async def _list_artifacts(self, request: Request) -> Response:
        run_id = request.query_params.get("run_id") or request.query_params.get("run_uuid") or ""
        wanted = (request.query_params.get("path") or "").strip("/")
        run = await run_in_threadpool(self._tunedeck_run, run_id)
        if run is not None:
            name, experiment_id = run
            root = run_artifact_uri(experiment_id, run_id)
            if wanted == name or wanted.startswith(name + "/"):
                files = await run_in_threadpool(checkpoint_listing, name, wanted)
                if files is None:
                    return JSONResponse({"error_code": "INVALID_PARAMETER_VALUE",
                                         "message": f"invalid artifact path {wanted[:200]!r}"}, status_code=400)
                return JSONResponse({"root_uri": root, "files": files})
        status, data, raw = await self._call(request, "artifacts/list")
        if data is None or status != 200 or run is None:
            return raw if data is None else JSONResponse(data, status_code=status)
        if not wanted and await run_in_threadpool(_has_checkpoints, run[0]):  # the root: add <run name>/
            files = [f for f in data.get("files", []) if f.get("path") != run[0]]
            data["files"] = sorted([*files, {"path": run[0], "is_dir": True}], key=lambda f: f.get("path", ""))
        data["root_uri"] = run_artifact_uri(run[1], run_id)
        return JSONResponse(data)

    def _tunedeck_run(self, run_id: str) -> tuple[str, str] | None:
        """(run name, MLflow experiment id) of the tunedeck run that logs to MLflow run ``run_id``."""
        if not run_id:
            return None
        for run in self.service.list(None, None):
            if run.mlflow_run_id == run_id and run.mlflow_experiment_id:
                return run.name, str(run.mlflow_experiment_id)
        return None


def _has_checkpoints(run_name: str) -> bool:
    folder = config.runs_root() / run_name / CHECKPOINTS
    return folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir())


def checkpoint_listing(run_name: str, wanted: str) -> list[dict[str, Any]] | None:
    """MLflow's ListArtifacts ``files`` for ``wanted`` (``<run name>``, ``<run name>/checkpoints`` or
    below) from the run's checkpoints folder: the direct children, sorted by path (as MLflow lists),
    hidden ones (a checkpoint being written, ``.ep1-ba4.tmp``) left out; a file lists as itself; a
    missing path lists nothing. None for a path that leaves the folder."""
    parts = wanted.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\\" in wanted:
        return None
    if len(parts) == 1:
        return [{"path": f"{run_name}/{CHECKPOINTS}", "is_dir": True}] if _has_checkpoints(run_name) else []
    if parts[1] != CHECKPOINTS:
        return []
    root = (config.runs_root() / run_name / CHECKPOINTS).resolve()
    target = root.joinpath(*parts[2:])
    try:
        resolved = target.resolve()
        resolved.relative_to(root)
    except (OSError, ValueError):
        return None
    if any(p.startswith(".") for p in parts[2:]):
        return []
    if resolved.is_file():
        return [_entry(wanted, resolved)]
    if not resolved.is_dir():
        return []
    files = []
    for child in sorted(resolved.iterdir(), key=lambda p: p.name)[:MAX_LISTED]:
        if child.name.startswith("."):
            continue
        try:
            child.resolve().relative_to(root)
        except (OSError, ValueError):
            continue  # a link out of the checkpoints folder is not listed
        files.append(_entry(posixpath.join(wanted, child.name), child))
    return files


def _entry(path: str, local: Path) -> dict[str, Any]:
    if local.is_dir():
        return {"path": path, "is_dir": True}
    return {"path": path, "is_dir": False, "file_size": local.stat().st_size}


__all__ = ["DBFS_TRACKING", "DatabricksMlflow", "checkpoint_listing", "run_artifact_uri", "with_reference_uris"]
