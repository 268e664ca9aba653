"""A thin typed client for the service's REST API (requests, bearer token, timeouts on every call)."""

from __future__ import annotations

import os
import threading
from typing import Any

import requests

from tunedeck.errors import (
    AuthenticationError,
    InvalidInputError,
    Problem,
    RunNotFoundError,
    ServiceError,
    ServiceUnavailableError,
)
from tunedeck.types import Checkpoint, ModelInfo, TrainingEvent, TrainingRun

DEFAULT_TIMEOUT = 30.0


class ServiceClient:
    def __init__(self, url: str, token: str, timeout: float = DEFAULT_TIMEOUT):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"

    # -- plumbing ---------------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        try:
            resp = self._session.request(method, self.url + path, timeout=timeout or self.timeout, **kwargs)
        except requests.ConnectionError as exc:
            raise ServiceUnavailableError(f"cannot reach the tunedeck service at {self.url}: {exc}") from None
        if resp.status_code == 401:
            raise AuthenticationError("the tunedeck service refused the token (HTTP 401)", 401)
        if resp.status_code == 404 and path.startswith("/api/runs/"):
            raise RunNotFoundError(_detail(resp))
        if resp.status_code == 422:
            body = resp.json().get("detail")
            if isinstance(body, dict) and "problems" in body:
                raise InvalidInputError([Problem.from_dict(p) for p in body["problems"]])
            raise ServiceError(f"invalid request: {body}", 422)
        if resp.status_code >= 400:
            raise ServiceError(f"{method} {path} failed ({resp.status_code}): {_detail(resp)}", resp.status_code)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    # -- runs -------------------------------------------------------------------------------------
    def create_run(self, params: dict[str, Any]) -> TrainingRun:
        return TrainingRun.from_dict(self._request("POST", "/api/runs", json=params, timeout=120))

    def validate(self, params: dict[str, Any]) -> list[Problem]:
        body = self._request("POST", "/api/validate", json=params, timeout=120)
        return [Problem.from_dict(p) for p in body["problems"]]

    def get_run(self, name: str) -> TrainingRun:
        return TrainingRun.from_dict(self._request("GET", f"/api/runs/{name}"))

    def list_runs(self, limit: int | None = None, statuses: list[str] | None = None) -> list[TrainingRun]:
        params: dict[str, Any] = {}
        if limit:
            params["limit"] = limit
        if statuses:
            params["status"] = statuses
        return [TrainingRun.from_dict(r) for r in self._request("GET", "/api/runs", params=params)["runs"]]

    def cancel_run(self, name: str) -> TrainingRun:
        return TrainingRun.from_dict(self._request("POST", f"/api/runs/{name}/cancel"))

    def delete_run(self, name: str) -> None:
        self._request("DELETE", f"/api/runs/{name}")

    def events(self, name: str, after: int = 0, limit: int | None = None) -> list[TrainingEvent]:
        params: dict[str, Any] = {"after": after}
        if limit:
            params["limit"] = limit
        body = self._request("GET", f"/api/runs/{name}/events", params=params)
        return [TrainingEvent.from_dict(e) for e in body["events"]]

    def metrics(self, name: str, after: int = 0) -> list[dict[str, Any]]:
        """Metric points with id > after: [{"id", "step", "name", "value", "time"}]."""
        return self._request("GET", f"/api/runs/{name}/metrics", params={"after": after})["metrics"]

    def checkpoints(self, name: str) -> list[Checkpoint]:
        return [Checkpoint.from_dict(c) for c in self._request("GET", f"/api/runs/{name}/checkpoints")["checkpoints"]]

    def models(self) -> list[ModelInfo]:
        return [ModelInfo.from_dict(m) for m in self._request("GET", "/api/models")["models"]]

    def data_check(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/api/data-check", json=params, timeout=300)

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/api/health", timeout=5)


def _detail(resp: requests.Response) -> str:
    try:
        detail = resp.json().get("detail")
    except ValueError:
        return resp.text[:500]
    return detail if isinstance(detail, str) else str(detail)


_client: ServiceClient | None = None
_client_key: tuple[str | None, ...] | None = None
_lock = threading.Lock()


def get_client() -> ServiceClient:
    """The client for TUNEDECK_URL, or for the embedded service of TUNEDECK_HOME (started on first use)."""
    global _client, _client_key
    from tunedeck import config

    key = (os.environ.get("TUNEDECK_URL"), os.environ.get("TUNEDECK_TOKEN"), str(config.home()))
    with _lock:
        if _client is not None and _client_key == key:
            return _client
        if key[0]:
            if not key[1]:
                raise ServiceUnavailableError("TUNEDECK_URL is set but TUNEDECK_TOKEN is not")
            _client = ServiceClient(key[0], key[1])
        else:
            from tunedeck.client.launcher import ensure_local_service

            url, token = ensure_local_service(config.home())
            _client = ServiceClient(url, token)
        _client_key = key
        return _client
