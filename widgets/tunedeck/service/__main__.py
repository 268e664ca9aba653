"""Run the tunedeck service: ``python -m tunedeck.service`` (or ``tunedeck serve``)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
from pathlib import Path

from tunedeck import config


def read_or_create_token(home: Path) -> str:
    """The bearer token, in a file only its owner can read."""
    path = home / "token"
    if path.exists():
        os.chmod(path, 0o600)
        return path.read_text().strip()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


def serve(home: Path, host: str = "127.0.0.1", port: int = 0, max_concurrent: int = 1) -> None:
    import uvicorn

    from tunedeck.service.app import create_app
    from tunedeck.service.core import RunService
    from tunedeck.service.store import Store

    os.environ["TUNEDECK_HOME"] = str(home)  # the workers and the MLflow store follow the service's home
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = read_or_create_token(home)
    service = RunService(Store(home / "tunedeck.db"), max_concurrent=max_concurrent)
    app = create_app(service, token, home)

    # IPPROTO_TCP, not 0: asyncio turns Nagle off on accepted connections only when the listening socket
    # says it is TCP, and with Nagle on every keep-alive request waited ~40 ms for a delayed ACK
    # (benchmarks/client_service.py: poll p99 48 ms -> ~2 ms). TCP_NODELAY here is inherited on Linux.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    url = f"http://{shown_host}:{bound_port}"

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2))
    service.start()
    info = {"url": url, "pid": os.getpid(), "home": str(home)}
    tmp = home / "service.json.tmp"
    tmp.write_text(json.dumps(info))
    tmp.replace(home / "service.json")
    print(f"tunedeck service on {url} (state in {home}; token in {home / 'token'})", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        service.shutdown()
        try:
            if json.loads((home / "service.json").read_text()).get("pid") == os.getpid():
                (home / "service.json").unlink()
        except (OSError, ValueError):
            pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tunedeck serve", description="Run the tunedeck training service.")
    parser.add_argument("--home", type=Path, default=None, help="state dir (default: $TUNEDECK_HOME or ~/.tunedeck)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    parser.add_argument("--max-concurrent", type=int, default=int(os.environ.get("TUNEDECK_MAX_CONCURRENT", "1")),
                        help="runs that train at once (default 1: one run uses every CPU core)")
    args = parser.parse_args(argv)
    serve((args.home or config.home()).expanduser().resolve(), args.host, args.port, args.max_concurrent)


if __name__ == "__main__":
    main()
