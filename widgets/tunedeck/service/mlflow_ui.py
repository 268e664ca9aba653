"""MLflow's own tracking server — its UI and REST API — served through the tunedeck service.

Users review a run's metrics in the MLflow UI (the reference's docs send them there), and MLflow
clients read runs over MLflow's REST API. Both come from MLflow's real server (``mlflow server``, the
optional ``tunedeck[mlflow-ui]`` extra), backed by the very store the workers log to, and reached
through the service's port under its token: ``/mlflow/`` (the UI, and the API below it) and
``/api/2.0/mlflow/...`` (the REST paths MLflow clients call on a tracking host).

Why a child process behind a proxy rather than MLflow's app mounted in this one: the server brings
Flask, scikit-learn and more, which the service never imports, and reads its stores from the
environment when it is imported. The server starts on the first request (its start-up takes seconds),
listens on a private loopback port, and is owned: ``python -m tunedeck.service.mlflow_ui`` runs it in a
process group of its own and ends that group when the service is gone (even after ``kill -9``), and
the service ends it when it shuts down.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

PREFIX = "/mlflow"  # the UI's path on the service; the child server serves everything below it
LOG_FILE = "mlflow-ui.log"
START_TIMEOUT = float(os.environ.get("TUNEDECK_MLFLOW_UI_START_TIMEOUT", "180"))
INSTALL_HINT = "the MLflow UI needs MLflow's server: pip install 'tunedeck[mlflow-ui]'"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
               "proxy-authenticate"}
# the service's own credentials, and where the request came from (the server would see the service's
# port as another origin; the service has checked the token, and its cookie is SameSite=strict)
_NOT_FORWARDED = _HOP_BY_HOP | {"host", "authorization", "cookie", "origin", "referer", "content-length"}


class MlflowUnavailableError(RuntimeError):
    """MLflow's server is not installed, or did not start (the message says which, and why)."""


def installed() -> bool:
    """True where the full ``mlflow`` package (server, UI build, Flask) is installed, not only mlflow-skinny."""
    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("flask") is None:
        return False
    return any((Path(p) / "server" / "js" / "build" / "index.html").is_file() for p in spec.submodule_search_locations)


class MlflowServer:
    """The service's MLflow server: started on first use, one per service, ended with it."""

    def __init__(self, tracking_uri: str, artifact_root: Path, home: Path):
        self.tracking_uri = tracking_uri
        self.artifact_root = Path(artifact_root)
        self.home = Path(home)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        """The child server's base URL (its paths all start with PREFIX)."""
        return f"http://127.0.0.1:{self.port}"

    def ensure_started(self) -> str:
        """Start the server if it is not running (waits until it answers); returns its base URL."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return self.url
            if not installed():
                raise MlflowUnavailableError(INSTALL_HINT)
            self.port = _free_port()
            log = open(self.home / LOG_FILE, "ab")
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", __name__, "--parent", str(os.getpid()), "--port", str(self.port),
                     "--backend", self.tracking_uri, "--artifacts", str(self.artifact_root)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            finally:
                log.close()
            self._wait_until_up(self._proc)
            return self.url

    def _wait_until_up(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise MlflowUnavailableError(f"MLflow's server exited with code {proc.returncode} while starting; "
                                             f"its log: {self.home / LOG_FILE}: {_tail(self.home / LOG_FILE)}")
            try:
                if httpx.get(f"{self.url}{PREFIX}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.close()
        raise MlflowUnavailableError(f"MLflow's server did not answer within {START_TIMEOUT:.0f} s "
                                     f"(TUNEDECK_MLFLOW_UI_START_TIMEOUT); its log: {self.home / LOG_FILE}")

    async def forward(self, request: Request, path: str) -> Response:
        """``request`` passed on to the server at ``path`` (the service checked the token); its answer
        streamed back. The token query parameter and hop-by-hop headers stay here."""
        try:
            base = await run_in_threadpool(self.ensure_started)
        except MlflowUnavailableError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=404)
        query = httpx.QueryParams([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        upstream = self.client.build_request(request.method, base + path, params=query, headers=headers,
                                             content=await request.body())
        try:
            answer = await self.client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            return JSONResponse({"detail": f"MLflow's server did not answer: {exc}"}, status_code=502)
        return StreamingResponse(
            answer.aiter_raw(), status_code=answer.status_code,
            headers={k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP},
            background=BackgroundTask(answer.aclose),
        )

    @property
    def client(self) -> httpx.AsyncClient:
        """The one HTTP client every proxy of this server shares (this module's forward, the
        Databricks-style answers of databricks_mlflow.py, the Unity Catalog answers of unity_catalog.py),
        closed by ``aclose``."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0))
        return self._client

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A whole answer of the server to ``method path`` (a path under PREFIX), the server started
        first; raises MlflowUnavailableError or httpx.HTTPError."""
        base = await run_in_threadpool(self.ensure_started)
        return await self.client.request(method, f"{base}{PREFIX}{path}", **kwargs)

    async def aclose(self) -> None:
        """Close the shared HTTP client, then end the server."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        await run_in_threadpool(self.close)

    def close(self) -> None:
        """End the server and everything it started (its process group)."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        _end_group(proc.pid)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            _end_group(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _end_group(pgid: int, sig: signal.Signals = signal.SIGTERM) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- the child: MLflow's server, watched ------------------------------------------------------------
def _serve(parent: int, port: int, backend: str, artifacts: str) -> int:
    """Run ``mlflow server`` in this process group until it exits or ``parent`` (the service) is gone."""
    server = subprocess.Popen([
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--registry-store-uri", backend,
        "--default-artifact-root", artifacts, "--host", "127.0.0.1", "--port", str(port),
        "--static-prefix", PREFIX, "--workers", "1",
    ])

    def end(*_: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(os.getpgrp(), signal.SIGTERM)  # the server, its uvicorn worker (and this process, ignored)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        sys.exit(0)

    signal.signal(signal.SIGTERM, end)
    while server.poll() is None:
        if os.getppid() != parent:  # the service is gone (this process was handed to init)
            end()
        time.sleep(1)
    return server.returncode or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--artifacts", required=True)
    args = parser.parse_args()
    sys.exit(_serve(args.parent, args.port, args.backend, args.artifacts))


if __name__ == "__main__":
    main()
