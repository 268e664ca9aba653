"""Every way an HTTP exchange can fail reaches the caller as a TunedeckError, never as a requests or
JSON error: refused -> ServiceUnavailableError, no answer -> ServiceTimeoutError (never sent again),
anything else -> ServiceError. The servers here are fakes at the edge (tests/client/edges.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.client.edges import closed_port_url, http_answer, raw_server, silent_listener
from tunedeck.client.http import ServiceClient
from tunedeck.errors import (
    RunNotFoundError,
    ServiceError,
    ServiceTimeoutError,
    ServiceUnavailableError,
    TunedeckError,
)


class CountingReconnect:
    """A reconnect that records its calls and answers with a fixed (url, token)."""

    def __init__(self, url: str):
        self.url, self.calls = url, 0

    def __call__(self) -> tuple[str, str]:
        self.calls += 1
        return self.url, "token"


def test_fake_edge_read_timeout_from_a_listener_that_never_answers_is_a_timeout_naming_url_path_and_seconds():
    with silent_listener() as url:
        reconnect = CountingReconnect(url)
        client = ServiceClient(url, "token", timeout=0.3, reconnect=reconnect)
        started = time.monotonic()
        with pytest.raises(ServiceTimeoutError) as caught:
            client.get_run("r1")
        assert time.monotonic() - started < 5
        err = caught.value
        assert isinstance(err, ServiceUnavailableError) and isinstance(err, TunedeckError)
        assert (err.url, err.path, err.timeout) == (url, "/api/runs/r1", 0.3)
        assert url in str(err) and "GET /api/runs/r1" in str(err) and "0.3 s" in str(err)
        assert reconnect.calls == 0  # a service that is slow is not gone


def test_fake_edge_read_timeout_on_post_is_never_sent_again():
    with silent_listener() as url:
        reconnect = CountingReconnect(url)
        client = ServiceClient(url, "token", timeout=0.3, reconnect=reconnect)
        with pytest.raises(ServiceTimeoutError, match="not sent again") as caught:
            client.cancel_run("r1")
        assert caught.value.path == "/api/runs/r1/cancel"
        with pytest.raises(ServiceTimeoutError, match="POST /api/runs within 0.3 s"):
            client._request("POST", "/api/runs", json={"model": "m"}, timeout=0.3)  # create_run's request
        assert reconnect.calls == 0


def test_fake_edge_refused_connection_on_a_closed_port_is_service_unavailable_in_a_few_words():
    url = closed_port_url()
    with pytest.raises(ServiceUnavailableError) as caught:
        ServiceClient(url, "token").list_runs()
    message = str(caught.value)
    assert not isinstance(caught.value, ServiceTimeoutError)
    assert f"the tunedeck service at {url} is not answering (Connection refused)" in message
    assert "HTTPConnectionPool" not in message and "object at 0x" not in message


def test_fake_edge_refused_post_is_sent_again_to_where_reconnect_finds_the_service():
    """Refused at connect: the request never left, so even a POST is sent again after reconnecting."""
    with raw_server(lambda req: http_answer("200 OK", b'{"problems": []}', "application/json")) as (alive, received):
        reconnect = CountingReconnect(alive)
        client = ServiceClient(closed_port_url(), "token", reconnect=reconnect)
        assert client.validate({"model": "m"}) == []
        assert reconnect.calls == 1 and client.url == alive
        assert received[0].startswith(b"POST /api/validate ") and b"Bearer token" in received[0]


def test_fake_edge_connection_closed_after_the_post_was_sent_is_not_sent_again():
    """The server read the whole POST and hung up: it may have acted on it, so no second POST."""
    with raw_server(lambda req: None) as (url, received):
        reconnect = CountingReconnect(url)
        client = ServiceClient(url, "token", reconnect=reconnect)
        with pytest.raises(ServiceUnavailableError, match="may have received the request, so it was not sent again"):
            client.cancel_run("r1")
        assert reconnect.calls == 0 and len(received) == 1

        # a GET is safe to repeat: reconnect once, send once more, then give up with both urls' story
        with pytest.raises(ServiceUnavailableError, match="is not answering, even after looking for it again"):
            client.get_run("r1")
        assert reconnect.calls == 1 and len(received) == 3


def test_fake_edge_proxy_html_502_is_a_service_error_with_status_and_the_first_200_chars():
    head = b"<html><head><title>502 Bad Gateway</title></head><body>"
    page = head + b"x" * 300 + b"TAIL</body></html>"
    with raw_server(lambda req: http_answer("502 Bad Gateway", page)) as (url, _):
        with pytest.raises(ServiceError) as caught:
            ServiceClient(url, "token").list_runs()
    err = caught.value
    assert err.status_code == 502
    assert "HTTP 502" in str(err) and "text/html" in str(err) and "502 Bad Gateway</title>" in str(err)
    shown = 200 - len(head)  # the first 200 characters of the page, no more
    assert "x" * shown in str(err) and "x" * (shown + 1) not in str(err) and "TAIL" not in str(err)


def test_fake_edge_non_json_answers_are_service_errors_whatever_the_status():
    answers = {
        b"/api/models": http_answer("200 OK", b"<html>login page</html>"),
        b"/api/runs/r1": http_answer("404 Not Found", b"<html>no such page</html>"),  # not the service's 404
        b"/api/validate": http_answer("422 Unprocessable", b"not json"),
        b"/api/runs/r1/events": http_answer("200 OK", b"[1, 2]", "application/json"),  # JSON, not an object
        b"/api/runs/r1/checkpoints": http_answer("200 OK", b'{"hello": 1}', "application/json"),  # someone else's
    }
    with raw_server(lambda req: answers[req.split(b" ")[1].split(b"?")[0]]) as (url, _):
        client = ServiceClient(url, "token")
        for call in (client.models, lambda: client.get_run("r1"), lambda: client.validate({})):
            with pytest.raises(ServiceError) as caught:
                call()
            assert not isinstance(caught.value, RunNotFoundError)
            assert "is not the tunedeck service's JSON" in str(caught.value)
        with pytest.raises(ServiceError, match="not the tunedeck service's JSON"):
            client.events("r1")
        with pytest.raises(ServiceError, match="has no 'checkpoints'; is it a tunedeck service"):
            client.checkpoints("r1")


def test_fake_edge_redirect_loop_and_broken_chunked_body_are_service_errors():
    loop = http_answer("302 Found", b"", extra="Location: /api/models\r\n")
    with raw_server(lambda req: loop) as (url, _):
        with pytest.raises(ServiceError, match="TooManyRedirects"):
            ServiceClient(url, "token").models()
    broken = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{\r\n"
    with raw_server(lambda req: broken) as (url, _):
        with pytest.raises(ServiceError, match="ChunkedEncodingError"):
            ServiceClient(url, "token").models()


def test_invalid_urls_are_service_errors():
    for url in ("localhost:8000", "http://"):
        with pytest.raises(ServiceError):
            ServiceClient(url, "token").models()


def test_cli_prints_a_tunedeck_error_in_one_line_without_traceback_and_exits_non_zero(home, tmp_path):
    env = {**os.environ, "TUNEDECK_URL": closed_port_url(), "TUNEDECK_TOKEN": "token"}
    done = subprocess.run([sys.executable, "-m", "tunedeck.cli", "runs"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"tunedeck: the tunedeck service at {env['TUNEDECK_URL']} is not answering")
    assert "tunedeck serve --port" in done.stderr and done.stdout == ""
    assert not (home / "service.json").exists()  # TUNEDECK_URL is set: nothing was started
