"""Fakes at the edge: real local sockets that misbehave the way a dead, stuck or foreign server does.

They stand in for the network only (no tunedeck code is faked), for the failures a real service cannot
be made to show on cue: a port nobody listens on, a listener that never answers, an answer that is
not the service's.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Callable, Iterator


def closed_port_url() -> str:
    """The url of a local port nobody listens on: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def silent_listener() -> Iterator[str]:
    """A port whose connections are taken (by the kernel's backlog) but never answered: reads time out."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


@contextlib.contextmanager
def raw_server(respond: Callable[[bytes], bytes | None]) -> Iterator[tuple[str, list[bytes]]]:
    """A local server that reads each whole request, sends ``respond(request)`` verbatim (None: nothing)
    and closes the connection. Yields its url and the list of requests it received."""
    received: list[bytes] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(5)
                try:
                    request = _read_request(conn)
                    received.append(request)
                    answer = respond(request)
                    if answer:
                        conn.sendall(answer)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", received
    finally:
        done.set()
        thread.join(5)
        listener.close()


def http_answer(status: str, body: bytes, content_type: str = "text/html", extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\n\r\n").encode() + body
