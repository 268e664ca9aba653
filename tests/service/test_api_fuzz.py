"""Schema-based fuzzing of the REST API (schemathesis over the app's own OpenAPI document): thousands of
generated requests, valid and invalid against the schema, to the real app over the real core and store,
and not one may be answered with a 5xx.

Runs in the normal suite (about a minute on two cores); the generation is derandomized so a failure
reproduces. TUNEDECK_FUZZ_EXAMPLES raises the request count for a longer local run, and
TUNEDECK_FUZZ_RANDOM=1 draws a fresh sequence each time.
"""

from __future__ import annotations

import os
import time

import pytest

schemathesis = pytest.importorskip("schemathesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tunedeck.service.app import create_app  # noqa: E402
from tunedeck.service.core import RunService  # noqa: E402
from tunedeck.service.store import Store  # noqa: E402

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = int(os.environ.get("TUNEDECK_FUZZ_EXAMPLES", "2200"))
RANDOM = bool(os.environ.get("TUNEDECK_FUZZ_RANDOM"))  # explore beyond the fixed sequence


@pytest.fixture
def app(home, tmp_path, monkeypatch):
    home.mkdir(parents=True)
    # Generated paths land in a sandbox: Volumes paths map here, and no real model folder is offered.
    monkeypatch.setenv("TUNEDECK_VOLUMES", str(tmp_path / "volumes"))
    monkeypatch.setenv("TUNEDECK_MODELS", str(tmp_path / "models"))
    service = RunService(Store(home / "tunedeck.db"))
    yield create_app(service, TOKEN, home)
    service.store.close()


def test_generated_requests_never_get_a_5xx(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)
    operations = st.one_of(
        schema.as_strategy(schemathesis.GenerationMode.POSITIVE, headers=AUTH),
        schema.as_strategy(schemathesis.GenerationMode.NEGATIVE, headers=AUTH),
    )
    sent: list[str] = []
    server_errors: list[str] = []
    started = time.monotonic()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not RANDOM, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operations)
    def fuzz(case):
        response = case.call(headers=AUTH)
        sent.append(f"{case.method} {case.path}")
        if response.status_code >= 500:
            server_errors.append(f"{response.status_code} {case.method} {case.formatted_path} "
                                 f"query={case.query!r} body={str(case.body)[:300]!r}: {response.text[:300]}")

    fuzz()
    seconds = time.monotonic() - started
    print(f"fuzz: {len(sent)} requests over {len(set(sent))} operations in {seconds:.0f} s, {len(server_errors)} 5xx")
    assert not server_errors, "\n".join(server_errors[:20])
    assert len(sent) >= min(EXAMPLES, 2000)
    assert len({s.split(" ", 1)[0] for s in sent}) >= 3  # GET, POST and DELETE all fuzzed


def test_the_connection_survives_an_unexpected_error(app, monkeypatch):
    """An exception no route expected is a JSON 500 on a connection that goes on working (the fuzz
    above finds none; this is the safety net for what it may miss)."""
    from tunedeck.service import core

    monkeypatch.setattr(core.RunService, "find", lambda self, *a, **k: 1 / 0)
    client = TestClient(app, raise_server_exceptions=False)
    client.headers.update(AUTH)
    resp = client.get("/api/runs")
    assert resp.status_code == 500 and "ZeroDivisionError" in resp.json()["detail"]
    assert client.get("/api/models").status_code == 200


def test_a_real_server_keeps_the_connection_after_a_refused_or_failed_request(app, monkeypatch):
    """Over uvicorn and one keep-alive connection: a 500 from an unexpected error, a 422 for deep JSON and
    a 413 for a big body each leave the connection open for the next request."""
    import http.client
    import socket
    import threading

    import uvicorn

    from tunedeck.service import core

    monkeypatch.setattr(core.RunService, "find", lambda self, *a, **k: 1 / 0)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {**AUTH, "Content-Type": "application/json"}
        answers = []
        for method, path, body in [
            ("GET", "/api/runs", None),  # the unexpected error
            ("GET", "/api/models", None),
            ("POST", "/api/validate", b"[" * 5000 + b"]" * 5000),
            ("POST", "/api/validate", b" " * (2 << 20)),
            ("GET", "/api/runs/x/events?after=99999999999999999999", None),
            ("GET", "/api/models", None),
        ]:
            conn.request(method, path, body=body, headers=headers)
            if answers:
                assert conn.sock is first_socket, f"{method} {path}: the connection was not kept"
            else:
                first_socket = conn.sock
            response = conn.getresponse()
            response.read()
            answers.append(response.status)
        assert answers == [500, 200, 422, 413, 422, 200]
        conn.close()
    finally:
        server.should_exit = True
        thread.join(10)

