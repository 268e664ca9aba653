"""Launch overhead of a run on a Ray cluster vs a local worker: seconds from create() to the run's first
TRAIN_UPDATED event, through the service core, the same tiny run each time.

    python benchmarks/ray_launch.py [--repeat 3] [--workers 1] [--quick] [--json FILE]

Starts its own local Ray cluster (``LocalRayCluster``: loopback only, 2 CPUs, its own temp dir, stopped
at the end), and trains a tiny Llama (training/tiny.py) ``--repeat`` times as a local worker and as a
Ray Train job (2 workers with --workers 2). Prints each time, the median and the spread (max - min).
``LocalRayCluster`` is also what tests/service/test_ray.py runs its cluster with.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The cluster's process: ray.init starts a head node on loopback and keeps it until its stdin closes
# (so it also ends when whoever started it dies); ray.shutdown at exit stops the node's processes.
CLUSTER_CODE = """
import json, sys, ray
ctx = ray.init(num_cpus=int(sys.argv[2]), include_dashboard=False, _temp_dir=sys.argv[1],
               object_store_memory=80 * 1024 * 1024, configure_logging=False, log_to_driver=False)
print(json.dumps({"address": ctx.address_info["gcs_address"]}), flush=True)
sys.stdin.read()
"""


class LocalRayCluster:
    """A one-node Ray cluster of ``cpus`` CPUs on 127.0.0.1, in a temp dir of its own.

    ``env`` holds what a driver needs to reach it (the address and the auth token's path; set them in
    the service's environment). ``stop()`` ends every process of the cluster, Ray's workers included
    (all of them are in the cluster process's session), and says whether any was left."""

    def __init__(self, cpus: int = 2, timeout: float = 180.0):
        self.temp_dir = Path(tempfile.mkdtemp(prefix="tdray-", dir="/tmp"))  # short: Ray's unix sockets live here
        self.env = {
            # Ray's node address is 127.0.0.1 instead of the machine's interface: nothing leaves loopback
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_MODE": "token",  # Ray 2.5x: drivers must show the cluster's token
            "RAY_AUTH_TOKEN_PATH": str(self.temp_dir / "auth_token"),  # not ~/.ray: this cluster's own
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        token = self.temp_dir / "auth_token"
        token.write_text(secrets.token_hex(32))  # Ray's token auth (on by default): a token for this cluster alone
        token.chmod(0o600)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLUSTER_CODE, str(self.temp_dir / "r"), str(cpus)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.temp_dir / "cluster.log", "ab"),
            env={**os.environ, **self.env}, start_new_session=True, text=True,
        )
        self.address = ""
        deadline = time.monotonic() + timeout
        try:
            while not self.address:
                line = self.proc.stdout.readline() if self.proc.stdout else ""
                if not line:
                    raise RuntimeError(f"the local Ray cluster did not start:\n{self.log()[-3000:]}")
                if line.startswith("{"):
                    self.address = json.loads(line)["address"]
                if time.monotonic() > deadline:
                    raise TimeoutError("the local Ray cluster did not start in time")
        except BaseException:
            self.stop()
            raise
        self.env["TUNEDECK_RAY_ADDRESS"] = self.address

    def log(self) -> str:
        try:
            return (self.temp_dir / "cluster.log").read_text(errors="replace")
        except OSError:
            return ""

    def processes(self) -> list[int]:
        """Every live process of the cluster: its session (Ray's workers get process groups of their own
        but stay in the session)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getsid(int(entry.name)) == self.proc.pid and _state(int(entry.name)) != "Z":
                        found.append(int(entry.name))
                except (ProcessLookupError, PermissionError):
                    continue
        return found

    def stop(self, timeout: float = 30.0) -> list[int]:
        """Stop the cluster; return the pids that had to be killed (none when Ray stopped its own)."""
        if self.proc.stdin:
            try:
                self.proc.stdin.close()  # ray.shutdown() in the cluster process
            except OSError:
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        deadline = time.monotonic() + 10
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        left = self.processes()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


# --- the benchmark ---------------------------------------------------------------------------------

PAIRS = [
    ("What is the capital of Zorbania?", "Quillhaven is the capital."),
    ("Who invented the glimmerphone?", "Ada Pennywhistle did."),
    ("What color is a sky-whale?", "Sky-whales are teal."),
]


def first_update_seconds(service: Any, body: dict, timeout: float = 600.0) -> tuple[float, str]:
    """Seconds from create() to the run's first TRAIN_UPDATED; waits for the run to end."""
    from tunedeck.inputs.validate import RunRequest

    start = time.monotonic()
    run = service.create(RunRequest(**body))
    first = None
    deadline = start + timeout
    while time.monotonic() < deadline:
        if first is None and any(e.type == "TRAIN_UPDATED" for e in service.events(run.name)):
            first = time.monotonic() - start
        if service.get(run.name).status.is_terminal():
            break
        time.sleep(0.05)
    status = service.get(run.name).status.value
    if first is None:
        raise RuntimeError(f"{run.name} never trained ({status}: {service.get(run.name).details})")
    return first, status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="processes per run (num_devices), both ways")
    parser.add_argument("--quick", action="store_true", help="once each (tests/benchmarks)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat

    work = Path(tempfile.mkdtemp(prefix="tunedeck-ray-bench-"))
    os.environ["TUNEDECK_HOME"] = str(work / "home")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.pop("TUNEDECK_RAY_ADDRESS", None)
    from tunedeck.service.core import RunService
    from tunedeck.service.store import Store
    from tunedeck.training.tiny import build_tiny_model

    build_tiny_model(work / "home" / "models" / "tiny", [t for p in PAIRS for t in p])
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in PAIRS))
    body = {"model": "tiny", "train_data_path": str(data), "register_to": "main.bench", "task_type": "INSTRUCTION_FINETUNE",
            "training_duration": "2ba", "num_devices": args.workers}

    times: dict[str, list[float]] = {"local": [], "ray": []}
    service = RunService(Store(work / "home" / "tunedeck.db"))
    service.start()
    cluster = None
    try:
        for i in range(repeat):
            seconds, status = first_update_seconds(service, body)
            print(f"local  #{i + 1}: {seconds:6.2f} s to the first TRAIN_UPDATED ({status})", flush=True)
            times["local"].append(seconds)
        started = time.monotonic()
        cluster = LocalRayCluster(cpus=max(2, args.workers))
        print(f"local Ray cluster at {cluster.address} started in {time.monotonic() - started:.1f} s", flush=True)
        os.environ.update(cluster.env)
        for i in range(repeat):
            seconds, status = first_update_seconds(service, body)
            print(f"ray    #{i + 1}: {seconds:6.2f} s to the first TRAIN_UPDATED ({status})", flush=True)
            times["ray"].append(seconds)
    finally:
        service.shutdown()
        if cluster is not None:
            left = cluster.stop()
            if left:
                print(f"killed {len(left)} leftover Ray process(es)", flush=True)
    figures = {k: {"seconds": v, "median": statistics.median(v), "spread": max(v) - min(v)} for k, v in times.items()}
    print(f"\n{'':6} {'median s':>9} {'min':>7} {'max':>7} {'spread':>7}   (create -> first TRAIN_UPDATED, "
          f"{args.workers} process(es), {repeat} run(s) each)")
    for k, f in figures.items():
        print(f"{k:6} {f['median']:9.2f} {min(f['seconds']):7.2f} {max(f['seconds']):7.2f} {f['spread']:7.2f}")
    overhead = figures["ray"]["median"] - figures["local"]["median"]
    print(f"Ray's launch overhead: {overhead:+.2f} s (median vs median)")
    if args.json:
        args.json.write_text(json.dumps({**figures, "overhead": overhead, "workers": args.workers}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
