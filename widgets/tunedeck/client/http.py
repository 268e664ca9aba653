"""A thin typed client for the service's REST API (requests, bearer token, timeouts on every call).

Every failure reaches the caller as a TunedeckError (errors.py), never as a requests or JSON error:
refused or broken connections as ServiceUnavailableError, timeouts as ServiceTimeoutError, any other
HTTP-level failure and answers that are not the service's JSON (a proxy's HTML 502) as ServiceError.

A client given ``reconnect`` (the embedded service of a state dir, see get_client) survives the service
restarting under it: the first request that finds it gone calls ``reconnect`` once for the service's
new url and token (found in service.json, or started), and is sent again when that is safe.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

import requests
from urllib3.exceptions import NewConnectionError

from tunedeck.errors import (
    AuthenticationError,
    InvalidInputError,
    Problem,
    RunNotFoundError,
    ServiceError,
    ServiceTimeoutError,
    ServiceUnavailableError,
)
from tunedeck.types import Checkpoint, ModelInfo, TrainingEvent, TrainingRun

DEFAULT_TIMEOUT = 30.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # sending these twice changes nothing
BODY_EXCERPT = 200  # characters of a non-JSON answer quoted in the error
GENERATE_TIMEOUT = 300.0  # Try it: the longest wait for the next streamed line (a first prompt loads the model)

Reconnect = Callable[[], "tuple[str, str]"]



class RunsPage(NamedTuple):
    """One page of GET /api/runs: the runs, and the cursor of the next page (None: no more)."""

    runs: list[TrainingRun]
    cursor: str | None
    has_next_page: bool


class ServiceClient:
    """The service's REST API as methods.

    ``reconnect``: called when the service stops answering (connection refused, reset or closed), to
    find it again or start it; returns its (url, token). The failed request is then sent once more to
    that url if that is safe: a GET always, any other request only when its connection was refused,
    so the old service received nothing. A request that timed out is never sent again. A note on
    stderr says when the url changed. Without ``reconnect`` (a service named by TUNEDECK_URL, which the
    client cannot start) the ServiceUnavailableError says the service is not answering, then ``hint``.
    """

    def __init__(self, url: str, token: str, timeout: float = DEFAULT_TIMEOUT, *,
                 reconnect: Reconnect | None = None, hint: str | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._reconnect = reconnect
        self._hint = hint
        self._reconnect_lock = threading.Lock()
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"

    # -- plumbing ---------------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, timeout: float | None = None, key: str | None = None, **kwargs: Any) -> Any:
        """The answer's JSON object (None for an empty answer), or its ``key`` member."""
        timeout = timeout or self.timeout
        url = self.url
        try:
            resp = self._send(method, url, path, timeout, **kwargs)
        except _Unreachable as gone:
            if self._reconnect is None:
                raise ServiceUnavailableError(
                    f"the tunedeck service at {url} is not answering ({gone.reason})" + (f"; {self._hint}" if self._hint else "")
                ) from None
            if method not in SAFE_METHODS and not gone.before_sending:
                raise ServiceUnavailableError(
                    f"the connection to the tunedeck service at {url} broke during {method} {path} ({gone.reason}); "
                    "the service may have received the request, so it was not sent again: look (fm.list(), "
                    "fm.get()) before repeating it"
                ) from None
            self._rediscover(url)
            try:
                resp = self._send(method, self.url, path, timeout, **kwargs)
            except _Unreachable as again:
                if self.url != url:
                    story = f"stopped answering, and so did the one found at {self.url}"
                else:
                    story = "is not answering, even after looking for it again"
                raise ServiceUnavailableError(f"the tunedeck service at {url} {story} ({again.reason})") from None
        body = self._answer(method, path, resp)
        if key is None:
            return body
        if not isinstance(body, dict) or key not in body:
            raise ServiceError(
                f"{method} {path}: the answer from {self.url} has no {key!r}; is it a tunedeck service?", resp.status_code
            )
        return body[key]

    def _send(self, method: str, url: str, path: str, timeout: float, **kwargs: Any) -> requests.Response:
        try:
            return self._session.request(method, url + path, timeout=timeout, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise ServiceUnavailableError(f"TLS with the tunedeck service at {url} failed: {exc}") from None
        except requests.Timeout as exc:  # ReadTimeout and ConnectTimeout: never sent again
            sent = not isinstance(exc, requests.ConnectTimeout)
            what = f"{'answer' if sent else 'accept a connection for'} {method} {path} within {timeout:g} s"
            after = (" (it may be busy or stuck)" if method in SAFE_METHODS or not sent else
                     "; it may still be carrying the request out, so it was not sent again: look (fm.list(), "
                     "fm.get()) before repeating it")
            raise ServiceTimeoutError(f"the tunedeck service at {url} did not {what}{after}", url, path, timeout) from None
        except requests.ConnectionError as exc:
            raise _Unreachable(exc) from None
        except requests.RequestException as exc:  # TooManyRedirects, ChunkedEncodingError, InvalidURL, ...
            raise ServiceError(f"{method} {path} to the tunedeck service at {url} failed: {type(exc).__name__}: {exc}") from None

    def _rediscover(self, failed_url: str) -> None:
        """Ask ``reconnect`` where the service is now; once, however many threads found it gone."""
        with self._reconnect_lock:
            if self.url != failed_url:  # another thread has already reconnected
                return
            url, token = self._reconnect()  # type: ignore[misc]
            self._session.headers["Authorization"] = f"Bearer {token}"
            url = url.rstrip("/")
            if url != self.url:
                self.url = url
                print(f"tunedeck: the service at {failed_url} stopped; reconnected to {url}", file=sys.stderr, flush=True)

    def _answer(self, method: str, path: str, resp: requests.Response) -> Any:
        status = resp.status_code
        if status == 401:
            raise AuthenticationError("the tunedeck service refused the token (HTTP 401)", 401)
        if status == 204 or not resp.content:
            if status >= 400:
                raise ServiceError(f"{method} {path} failed (HTTP {status}, no detail)", status)
            return None
        try:
            body = resp.json()
        except ValueError:  # a proxy's or another server's page, not the service's JSON
            kind = resp.headers.get("content-type", "no content type")
            excerpt = " ".join(resp.text[:BODY_EXCERPT].split())
            raise ServiceError(
                f"{method} {path}: the answer from {self.url} (HTTP {status}, {kind}) is not the tunedeck "
                f"service's JSON: {excerpt!r}", status
            ) from None
        if status == 404 and path.startswith("/api/runs/"):
            raise RunNotFoundError(_detail(body))
        if status == 422:
            detail = body.get("detail") if isinstance(body, dict) else body
            if isinstance(detail, dict) and "problems" in detail:
                raise InvalidInputError([Problem.from_dict(p) for p in detail["problems"]])
            raise ServiceError(f"invalid request: {detail}", 422)
        if status >= 400:
            raise ServiceError(f"{method} {path} failed ({status}): {_detail(body)}", status)
        if not isinstance(body, dict):  # every endpoint answers an object
            raise ServiceError(f"{method} {path}: the answer from {self.url} is not the tunedeck service's JSON: "
                               f"{resp.text[:BODY_EXCERPT]!r}", status)
        return body

    # -- runs -------------------------------------------------------------------------------------
    def create_run(self, params: dict[str, Any]) -> TrainingRun:
        return TrainingRun.from_dict(self._request("POST", "/api/runs", json=params, timeout=120))

    def validate(self, params: dict[str, Any]) -> list[Problem]:
        problems = self._request("POST", "/api/validate", json=params, timeout=120, key="problems")
        return [Problem.from_dict(p) for p in problems]

    def get_run(self, name: str) -> TrainingRun:
        return TrainingRun.from_dict(self._request("GET", f"/api/runs/{name}"))

    def list_runs(self, limit: int | None = None, statuses: list[str] | None = None) -> list[TrainingRun]:
        return self.list_page(limit=limit, statuses=statuses).runs

    def list_page(
        self, *, names: list[str] | None = None, statuses: list[str] | None = None, created_by: list[str] | None = None,
        experiment_ids: list[str] | None = None, created_before: datetime | None = None,
        created_after: datetime | None = None, cursor: str | None = None, limit: int | None = None,
    ) -> RunsPage:
        """One page of the runs matching every filter given, newest first; the service filters."""
        params: dict[str, Any] = {
            "name": names, "status": statuses, "created_by": created_by, "experiment_id": experiment_ids,
            "created_before": created_before.isoformat() if created_before else None,
            "created_after": created_after.isoformat() if created_after else None, "cursor": cursor, "limit": limit,
        }
        answer = self._request("GET", "/api/runs", params={k: v for k, v in params.items() if v is not None})
        runs = [TrainingRun.from_dict(r) for r in answer["runs"]]
        return RunsPage(runs, answer.get("cursor"), bool(answer.get("has_next_page")))

    def cancel_run(self, name: str) -> TrainingRun:
        return TrainingRun.from_dict(self._request("POST", f"/api/runs/{name}/cancel"))

    def delete_run(self, name: str) -> None:
        self._request("DELETE", f"/api/runs/{name}")

    def events(self, name: str, after: int = 0, limit: int | None = None) -> list[TrainingEvent]:
        params: dict[str, Any] = {"after": after}
        if limit:
            params["limit"] = limit
        events = self._request("GET", f"/api/runs/{name}/events", params=params, key="events")
        return [TrainingEvent.from_dict(e) for e in events]

    def metrics(self, name: str, after: int = 0) -> list[dict[str, Any]]:
        """Metric points with id > after: [{"id", "step", "name", "value", "time"}]."""
        return self._request("GET", f"/api/runs/{name}/metrics", params={"after": after}, key="metrics")

    def checkpoints(self, name: str) -> list[Checkpoint]:
        return [Checkpoint.from_dict(c) for c in self._request("GET", f"/api/runs/{name}/checkpoints", key="checkpoints")]

    def models(self) -> list[ModelInfo]:
        return [ModelInfo.from_dict(m) for m in self._request("GET", "/api/models", key="models")]

    def data_check(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/api/data-check", json=params, timeout=300)

    def estimate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Tokens per epoch, steps, time on this machine and peak memory of the run create(**params) would make."""
        return self._request("POST", "/api/estimate", json=params, timeout=300)

    def record_estimate(self, name: str, estimate: dict[str, Any]) -> dict[str, Any]:
        """Keep the estimate run ``name`` was started with (its estimate-vs-actual line shows it)."""
        return self._request("PUT", f"/api/runs/{name}/estimate", json={"estimate": estimate})

    def run_estimate(self, name: str) -> dict[str, Any]:
        """Run ``name``'s recorded estimate, what it took once completed, and actual / estimated time."""
        return self._request("GET", f"/api/runs/{name}/estimate")

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/api/health", timeout=5)

    def mlflow_ui_url(self, fragment: str = "") -> str:
        """MLflow's UI on the service, for a browser: it carries the token (the service then keeps it in
        an HttpOnly cookie), so it is opened, not shared or saved."""
        token = str(self._session.headers.get("Authorization", ""))[len("Bearer "):]
        return f"{self.url}/mlflow/?token={quote(token, safe='')}" + (f"#{fragment}" if fragment else "")

    def generate(self, name: str, prompt: str, checkpoint: str | None = None, *, max_new_tokens: int = 128,
                 temperature: float = 0.0, timeout: float = GENERATE_TIMEOUT) -> Iterator[dict[str, Any]]:
        """Try it: the answer of a completed run's model to ``prompt``, as the service streams it — events
        ``{"event": "start"|"loading"|"loaded"|"text"|"done"|"error", ...}``, ending with "done" (``text``:
        the whole answer) or "error" (``message``). ``checkpoint``: None or "registered" for the registered
        version, else a checkpoint's name. Bad input raises InvalidInputError (naming the field) before
        anything is generated; closing the iterator early stops the generation.

        ``timeout`` is the longest wait for the next line (the first prompt to a model waits for the
        service's helper to start and load it)."""
        path = f"/api/runs/{name}/generate"
        body = {"prompt": prompt, "checkpoint": checkpoint, "max_new_tokens": max_new_tokens, "temperature": temperature}
        url = self.url
        try:
            resp = self._send("POST", url, path, timeout, json=body, stream=True)
        except _Unreachable as gone:
            if self._reconnect is None or not gone.before_sending:
                raise ServiceUnavailableError(f"the tunedeck service at {url} is not answering ({gone.reason})") from None
            self._rediscover(url)
            try:
                resp = self._send("POST", self.url, path, timeout, json=body, stream=True)
            except _Unreachable as again:
                raise ServiceUnavailableError(f"the tunedeck service at {self.url} is not answering ({again.reason})") from None
        if resp.status_code != 200:
            try:
                self._answer("POST", path, resp)  # raises the error the status and body say
            finally:
                resp.close()
            raise ServiceError(f"POST {path}: unexpected answer (HTTP {resp.status_code})", resp.status_code)
        return self._stream_events(resp, path)

    def _stream_events(self, resp: requests.Response, path: str) -> Iterator[dict[str, Any]]:
        try:
            ended = False
            for raw in resp.iter_lines():
                if not raw:
                    continue
                try:
                    event = json.loads(raw)
                except ValueError:
                    raise ServiceError(f"POST {path}: the stream from {self.url} has a line that is not JSON: "
                                       f"{raw[:BODY_EXCERPT]!r}") from None
                if isinstance(event, dict):
                    ended = event.get("event") in ("done", "error")
                    yield event
                    if ended:
                        return
            if not ended:
                raise ServiceError(f"POST {path}: the service's stream ended before the answer did")
        except requests.exceptions.Timeout:
            raise ServiceTimeoutError(f"the tunedeck service at {self.url} sent nothing for too long during POST {path}",
                                      self.url, path) from None
        except requests.RequestException as exc:
            raise ServiceError(f"POST {path}: the stream from {self.url} broke: {type(exc).__name__}: {exc}") from None
        finally:
            resp.close()


def _detail(body: Any) -> str:
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else str(detail)


class _Unreachable(Exception):
    """A requests.ConnectionError: nobody answers at the url (refused, reset, closed mid-answer)."""

    def __init__(self, exc: requests.ConnectionError):
        super().__init__(str(exc))
        self.exc = exc

    @property
    def before_sending(self) -> bool:
        """The connection itself could not be made (refused, unreachable): the request was never sent."""
        inner = self.exc.args[0] if self.exc.args else None
        return isinstance(getattr(inner, "reason", None), NewConnectionError)

    @property
    def reason(self) -> str:
        """The socket-level cause in a few words ("Connection refused"), not urllib3's paragraph."""
        todo: list[BaseException] = [self.exc]
        seen: set[int] = set()
        while todo:
            e = todo.pop(0)
            if id(e) in seen:
                continue
            seen.add(id(e))
            if isinstance(e, OSError) and not isinstance(e, requests.RequestException):
                if isinstance(e, http.client.RemoteDisconnected):
                    return "the connection closed without an answer"
                return e.strerror or str(e) or type(e).__name__
            todo += [x for x in (*e.args, getattr(e, "reason", None), e.__cause__, e.__context__) if isinstance(x, BaseException)]
        return str(self.exc)


_client: ServiceClient | None = None
_client_key: tuple[str | None, ...] | None = None
_lock = threading.Lock()


def get_client() -> ServiceClient:
    """The client for TUNEDECK_URL, or for the embedded service of TUNEDECK_HOME (started on first use).

    The embedded service's client follows it when it restarts (a crash, ``tunedeck stop`` and a new
    start): it finds it again through service.json, or starts it, as the first call did. A service
    named by TUNEDECK_URL cannot be started from here, so its client says how to start it.
    """
    global _client, _client_key
    from tunedeck import config

    key = (os.environ.get("TUNEDECK_URL"), os.environ.get("TUNEDECK_TOKEN"), str(config.home()))
    with _lock:
        if _client is not None and _client_key == key:
            return _client
        if key[0]:
            if not key[1]:
                raise ServiceUnavailableError("TUNEDECK_URL is set but TUNEDECK_TOKEN is not")
            _client = ServiceClient(key[0], key[1], hint=_start_hint(key[0]))
        else:
            from tunedeck.client.launcher import ensure_local_service

            home = config.home()
            url, token = ensure_local_service(home)
            _client = ServiceClient(url, token, reconnect=lambda: ensure_local_service(home))
        _client_key = key
        return _client


def _start_hint(url: str) -> str:
    """How to get a service answering at the url TUNEDECK_URL names."""
    parts = urlsplit(url)
    try:
        port = f" --port {parts.port}" if parts.port else ""
    except ValueError:  # not a number: requests will have said so already
        port = ""
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    where = "" if local else f" on {parts.hostname} (with --host 0.0.0.0)"
    return (f"start it with `tunedeck serve{port}`{where} (tunedeck does not start a service that TUNEDECK_URL names), "
            "or unset TUNEDECK_URL and TUNEDECK_TOKEN to let tunedeck start its own")
