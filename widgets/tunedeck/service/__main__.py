"""Run the tunedeck service: ``python -m tunedeck.service`` (or ``tunedeck serve``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import socket
import stat
import sys
import threading
import time
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


def secure_home(home: Path) -> None:
    """The state dir holds the token and every run's data: only its owner may read it. A dir others can
    read is tightened when it is ours, and refused otherwise."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = home.stat()
    if info.st_mode & 0o077 == 0:
        return
    if info.st_uid != os.getuid():
        raise SystemExit(f"tunedeck: {home} belongs to another user and others can read it; "
                         "choose a state dir of your own with --home or TUNEDECK_HOME")
    os.chmod(home, stat.S_IMODE(info.st_mode) & 0o700)
    print(f"tunedeck: {home} was readable by others (mode {stat.S_IMODE(info.st_mode):o}); "
          "tightened to 700", file=sys.stderr, flush=True)


def log_to_stderr(level: int = logging.INFO) -> None:
    """tunedeck's own log lines, info and up, with time and level, on stderr (service.log for a
    service the client started): without a handler only warnings reached it, bare, and what the
    service reports at info (a model conversion started and finished) was lost. Libraries keep
    their own levels (httpx would log every proxied request at info)."""
    logger = logging.getLogger("tunedeck")
    if any(getattr(h, "_tunedeck", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._tunedeck = True  # type: ignore[attr-defined]  # (installed once)
    logger.addHandler(handler)
    logger.setLevel(level)


def serve(home: Path, host: str = "127.0.0.1", port: int = 0, max_concurrent: int = 1, idle_exit: float = 0) -> None:
    import uvicorn

    from tunedeck.service import mlflow_ui
    from tunedeck.service.app import create_app
    from tunedeck.service.core import RunService
    from tunedeck.service.store import Store

    log_to_stderr()
    os.environ["TUNEDECK_HOME"] = str(home)  # the workers and the MLflow store follow the service's home
    # its workers and helpers decide precision once per CPU and model shape (training/precision.py)
    os.environ.setdefault("TUNEDECK_PRECISION_DECISIONS", str(home / "precision.json"))
    secure_home(home)
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
    sock.listen(2048)  # before service.json names the port: a client that reads it is never refused
    bound_port = sock.getsockname()[1]
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    url = f"http://{shown_host}:{bound_port}"

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2))
    # uvicorn catches SIGTERM/SIGINT, shuts the server down, then raises the signal again with the
    # handler that was there before it: this one, so that the `finally` below always runs (a default
    # SIGTERM handler would end the process there, leaving workers without an owner and service.json stale).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    service.start()
    threading.Thread(target=_watch, args=(server, service, home, idle_exit), name="tunedeck-watch", daemon=True).start()
    info = {"url": url, "pid": os.getpid(), "home": str(home)}
    tmp = home / "service.json.tmp"
    tmp.write_text(json.dumps(info))
    tmp.replace(home / "service.json")
    print(f"tunedeck service on {url} (state in {home}; token in {home / 'token'})", flush=True)
    if mlflow_ui.installed():
        print(f"MLflow UI: {url}{mlflow_ui.PREFIX}/?token=$(cat {home / 'token'})  (MLflow's own server, started on first use)",
              flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        service.shutdown()
        try:
            if json.loads((home / "service.json").read_text()).get("pid") == os.getpid():
                (home / "service.json").unlink()
        except (OSError, ValueError):
            pass


def _watch(server, service, home: Path, idle_exit: float, interval: float = 2.0) -> None:
    """Stop the service when its state dir is gone (nothing left to serve), or, with ``idle_exit``,
    when no run has been active or waiting for that many seconds."""
    idle_since = time.monotonic()
    while not server.should_exit:
        time.sleep(interval)
        if not (home / "tunedeck.db").exists():
            print(f"tunedeck: {home} is gone; stopping the service", file=sys.stderr, flush=True)
            server.should_exit = True
        elif idle_exit > 0:
            if service.has_work():
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= idle_exit:
                print(f"tunedeck: idle for {idle_exit:.0f} s; stopping the service", file=sys.stderr, flush=True)
                server.should_exit = True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tunedeck serve", description="Run the tunedeck training service.")
    parser.add_argument("--home", type=Path, default=None, help="state dir (default: $TUNEDECK_HOME or ~/.tunedeck)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    parser.add_argument("--max-concurrent", type=int, default=int(os.environ.get("TUNEDECK_MAX_CONCURRENT", "1")),
                        help="runs that train at once (default 1: one run uses every CPU core)")
    parser.add_argument("--idle-exit", type=float, default=0, metavar="SECONDS",
                        help="stop when no run has been active or waiting this long (default 0: never)")
    parser.add_argument("--ray", default=os.environ.get("TUNEDECK_RAY_ADDRESS") or None, metavar="ADDRESS",
                        help="train each run as a Ray Train job on this Ray cluster (ray.init's address; needs "
                             "tunedeck[ray] and a filesystem the cluster shares with the service: docs/scale-out.md)")
    args = parser.parse_args(argv)
    if args.ray:
        os.environ["TUNEDECK_RAY_ADDRESS"] = args.ray  # read by each launch (service/worker_process.py)
    serve((args.home or config.home()).expanduser().resolve(), args.host, args.port, args.max_concurrent, args.idle_exit)


if __name__ == "__main__":
    main()
