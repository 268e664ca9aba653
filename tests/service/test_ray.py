"""Runs on a Ray cluster (issue 11 part 2): with TUNEDECK_RAY_ADDRESS set, the service submits each run as
a Ray Train job (training/ray_train.py) instead of a local worker, and the run behaves as a local one.

A local Ray cluster of 2 CPUs (benchmarks/ray_launch.py's LocalRayCluster: loopback, its own temp dir
and auth token) is started once for the module and always stopped; the service core runs in this
process with real drivers and real Ray Train workers training the tiny model:

- a 2-worker run completes and registers, with the same events (types, in order) as a local 2-process
  run of the same request;
- a cancelled run is STOPPED within seconds, and its Ray workers and driver are gone;
- a rank's failure fails the run with that rank's reason, word for word as under torchrun;
- a run that loses a Ray worker (SIGKILL to rank 1 once its first checkpoint is written) resumes from
  its latest resume point and completes: Ray Train restarts the worker group; no run is left RUNNING.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from tests.helpers import PAIRS, wait_for, write_jsonl

from tunedeck import RunStatus
from tunedeck.inputs.validate import RunRequest
from tunedeck.service.core import RunService
from tunedeck.service.store import Store

try:
    import ray  # noqa: F401  (the optional extra: tunedeck[ray], in the test extra)

    RAY_MISSING = None
except ImportError as error:
    RAY_MISSING = f"ray is not installed (pip install 'tunedeck[ray]'): {error}"

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

pytestmark = [
    pytest.mark.skipif(RAY_MISSING is not None, reason=RAY_MISSING or ""),
    pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPU cores (2 Ray Train workers)"),
    pytest.mark.e2e,
]


@pytest.fixture(scope="module")
def cluster():
    from ray_launch import LocalRayCluster

    started = LocalRayCluster(cpus=2)
    try:
        yield started
    finally:
        left = started.stop()
    assert left == [], f"Ray processes left after the cluster stopped: {left}"


@pytest.fixture
def service(home, tmp_path, cluster, monkeypatch):
    """The service core on the cluster (the test's own environment is the service's)."""
    from tunedeck.training.tiny import build_tiny_model

    build_tiny_model(home / "models" / "tiny", [t for p in PAIRS for t in p])
    for key, value in cluster.env.items():
        monkeypatch.setenv(key, value)
    core = RunService(Store(home / "t.db"), max_concurrent=1)
    core.start()
    try:
        yield core
    finally:
        core.shutdown()


def request(data: Path, **kw) -> RunRequest:
    return RunRequest(model="tiny", train_data_path=str(data), register_to="main.tests",
                      task_type="INSTRUCTION_FINETUNE", **kw)


def data_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])


def finished(service: RunService, name: str, timeout: float):
    return wait_for(lambda: (run := service.get(name)).status.is_terminal() and run, timeout=timeout, interval=0.2)


def ranks(service: RunService, name: str) -> dict[int, dict]:
    folder = Path(service.get(name).run_dir or "") / "ray-ranks"
    return {int(p.stem.removeprefix("rank")): json.loads(p.read_text()) for p in folder.glob("rank*.json")}


def driver_pid(service: RunService, name: str) -> int:
    return next(e for e in service.events(name) if e.type == "STARTED").data["pid"]


def test_with_a_ray_address_the_service_launches_a_ray_train_driver_in_place_of_the_worker(tmp_path, monkeypatch):
    """The launch seam, without a cluster: the command and environment each way; the service loads no ray."""
    import subprocess

    from tunedeck.service.devices import Assignment
    from tunedeck.service.worker_process import WorkerProcess

    held = Assignment("cpu", ("0", "1"), 2, rank_cores=((0,), (1,)))

    def command(**kw) -> list[str]:
        return WorkerProcess(tmp_path, lambda *a: None, lambda *a: None, processes=2, devices=held, **kw)._command

    monkeypatch.delenv("TUNEDECK_RAY_ADDRESS", raising=False)
    monkeypatch.setenv("TUNEDECK_AUTORESUME", "3")
    local = command()
    assert "torch.distributed.run" in local and "tunedeck.training.ray_train" not in local
    monkeypatch.setenv("TUNEDECK_RAY_ADDRESS", "10.0.0.5:6379")
    assert command() == [sys.executable, "-m", "tunedeck.training.ray_train", str(tmp_path), "--address", "10.0.0.5:6379",
                         "--workers", "2", "--max-failures", "3"]  # Ray places the processes: no torchrun, no pinning
    explicit = command(command=["python", "wrapper.py", str(tmp_path)])  # a service given its worker command keeps it
    assert "torch.distributed.run" in explicit and "tunedeck.training.ray_train" not in explicit
    code = ("import sys, tunedeck.service.core, tunedeck.service.worker_process;"
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_run_on_the_cluster_completes_and_registers_with_the_local_workers_events(service, tmp_path, monkeypatch):
    data = data_file(tmp_path)
    address = os.environ["TUNEDECK_RAY_ADDRESS"]
    monkeypatch.delenv("TUNEDECK_RAY_ADDRESS")  # first the same request on a local worker (torchrun, 2 processes)
    local = service.create(request(data, training_duration="3ba", num_devices=2))
    local = finished(service, local.name, timeout=300)
    assert local.status is RunStatus.COMPLETED, local.details
    assert not ranks(service, local.name)

    monkeypatch.setenv("TUNEDECK_RAY_ADDRESS", address)
    on_ray = service.create(request(data, training_duration="3ba", num_devices=2))
    on_ray = finished(service, on_ray.name, timeout=300)
    assert on_ray.status is RunStatus.COMPLETED, on_ray.details
    assert on_ray.registered_model_version and on_ray.mlflow_run_id and on_ray.progress == 100.0
    assert sorted(ranks(service, on_ray.name)) == [0, 1]  # 2 Ray Train workers trained it
    log = (Path(on_ray.run_dir or "") / "worker.log").read_text()
    assert "submitting" in log and "2 worker(s)" in log

    local_types = [e.type for e in service.events(local.name)]
    ray_types = [e.type for e in service.events(on_ray.name)]
    assert ray_types == local_types
    assert [m["step"] for m in service.metrics(on_ray.name)] == [m["step"] for m in service.metrics(local.name)]
    assert len(service.checkpoints(on_ray.name)) == len(service.checkpoints(local.name)) >= 1


def test_a_cancelled_run_stops_within_seconds_and_leaves_no_ray_worker(service, tmp_path):
    run = service.create(request(data_file(tmp_path), training_duration="400ba"))
    wait_for(lambda: any(e.type == "TRAIN_UPDATED" for e in service.events(run.name)), timeout=240)
    workers = ranks(service, run.name)
    driver = driver_pid(service, run.name)
    assert list(workers) == [0]
    started = time.monotonic()
    service.cancel(run.name)
    stopped = finished(service, run.name, timeout=60)
    took = time.monotonic() - started
    assert stopped.status is RunStatus.STOPPED, stopped.details
    assert took < 30, f"cancel took {took:.1f} s"
    assert not stopped.registered_model_version
    types = [e.type for e in service.events(run.name)]
    assert types[-1] == "STOPPED" and "CANCEL_REQUESTED" in types and "TRAIN_FINISHED" not in types
    print(f"cancel -> STOPPED in {took:.1f} s")
    # the driver is gone, and so is the Ray worker that trained (Ray ends the job's actors with it)
    wait_for(lambda: not _alive(driver), timeout=10)
    wait_for(lambda: not any(_alive(w["pid"]) for w in workers.values()), timeout=30)
    log = (Path(stopped.run_dir or "") / "worker.log").read_text()
    assert "SIGKILL" not in stopped.details and "stopped on request" in log


def test_a_rank_that_fails_fails_the_run_with_its_reason_as_under_torchrun(service, tmp_path, monkeypatch):
    """The failure a local 2-process run reports (tests/training/test_distributed.py), on the cluster."""
    monkeypatch.setenv("TUNEDECK_TEST_FAIL_RANK", "1")  # rank 1 fails at its second step (training/distributed.py)
    run = service.create(request(data_file(tmp_path), training_duration="5ba", num_devices=2))
    failed = finished(service, run.name, timeout=300)
    assert failed.status is RunStatus.FAILED
    assert failed.details == "Failed: rank 1 of 2: test failure injected on rank 1 (TUNEDECK_TEST_FAIL_RANK)"
    assert not failed.registered_model_version
    assert sorted(ranks(service, run.name)) == [0, 1]
    log = (Path(failed.run_dir or "") / "worker.log").read_text()
    assert log.count("Started training worker group") == 1, "a failure of the training itself is not retried"


def test_a_run_that_loses_a_ray_worker_resumes_from_its_latest_resume_point(service, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEDECK_AUTORESUME", "1")  # Ray Train's max_failures
    run = service.create(request(data_file(tmp_path), training_duration="200ba", num_devices=2))
    run_dir = Path(service.get(run.name).run_dir or "")
    wait_for(lambda: any((run_dir / "checkpoints").glob("*/checkpoint.json")) and len(ranks(service, run.name)) == 2,
             timeout=300, interval=0.05)
    lost = ranks(service, run.name)[1]["pid"]
    os.kill(lost, signal.SIGKILL)
    ended = finished(service, run.name, timeout=420)
    types = [e.type for e in service.events(run.name)]
    assert ended.status is RunStatus.COMPLETED, (ended.details, types)
    resumed = [e for e in service.events(run.name) if e.type == "TRAIN_RESUMED"]
    assert len(resumed) == 1 and resumed[0].data["step"] >= 1, types
    assert ranks(service, run.name)[1]["pid"] != lost  # a new worker group trained on
    assert ended.registered_model_version
    losses = [m["step"] for m in service.metrics(run.name) if m["name"] == "train/loss"]
    assert losses == list(range(1, 201)), "each step's loss once: the steps trained again replaced the lost ones"
    assert resumed[0].data.get("mlflow_run_id") == ended.mlflow_run_id  # the same MLflow run went on


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
