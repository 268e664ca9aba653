"""Several processes per run: the worker under torchrun (2 ranks, gloo on CPU), launched as the service does.

The same tiny run trains with 1 and with 2 processes and gives the same loss curve; rank 0 alone
reports and registers; a cancel stops every rank; a failing rank fails the run with its own reason.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tunedeck.inputs.validate import RunRequest, check_num_devices, request_problems
from tunedeck.service.worker_process import WorkerExit, WorkerProcess, torchrun_command
from tunedeck.training.distributed import TEST_FAIL_RANK

from .conftest import PAIRS, jsonl_source, make_spec, write_jsonl

# 1 vs 2 processes: the same rows and the same global normalization per step, so the gradients are
# equal up to float32 summation order (micro-batches are grouped differently and DDP all-reduces
# the ranks' partial gradients). Measured here: ~1e-7 relative over 20 steps; the issue's target is 1e-3.
LOSS_RTOL = 1e-4


class Launched:
    """A WorkerProcess (the service's launcher) and what it reported."""

    def __init__(self, run_dir: str, processes: int):
        self.reports: list[dict[str, Any]] = []
        self.exit: WorkerExit | None = None
        self._done = threading.Event()
        self.worker = WorkerProcess(Path(run_dir), self._report, self._exit, processes=processes)
        self.worker.start()

    def _report(self, report: dict[str, Any], offset: int) -> None:
        self.reports.append(report)

    def _exit(self, ex: WorkerExit) -> None:
        self.exit = ex
        self._done.set()

    def wait(self, timeout: float) -> WorkerExit:
        assert self._done.wait(timeout), f"the worker did not end in {timeout} s:\n{self.log()}"
        assert self.exit is not None
        return self.exit

    def log(self) -> str:
        path = self.worker.run_dir / "worker.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def losses(self) -> dict[int, float]:
        return {r["step"]: r["values"]["train/loss"] for r in self.reports
                if r["kind"] == "metrics" and "train/loss" in r["values"]}

    def events(self) -> list[str]:
        return [r["type"] for r in self.reports if r["kind"] == "event"]


def _data(tmp_path: Path) -> Path:
    """48 examples of varied lengths: 7 packed rows, 3 per step (2 on rank 0, 1 on rank 1) and every
    third step a single row (rank 1's zero-weight pass)."""
    rows = [{"prompt": f"{p} ({i})" + " please" * (i % 7), "response": r * (1 + i % 3)}
            for i, (p, r) in enumerate(PAIRS * 8)]
    return write_jsonl(tmp_path / "data" / "train.jsonl", rows)


def _spec(tmp_path: Path, tiny_model: Path, name: str, duration: str = "20ba"):
    return make_spec(tmp_path / name, tiny_model, jsonl_source(_data(tmp_path)), training_duration=duration,
                     learning_rate=3e-3, batch_tokens=700, precision="fp32", resume_every_seconds=None)


def _last(run: Launched, name: str) -> float:
    return [r["values"][name] for r in run.reports if r["kind"] == "metrics" and name in r["values"]][-1]


def _ranks(launcher_pid: int) -> list[int]:
    """The launcher's child processes (torchrun's ranks)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == launcher_pid:
            children.append(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.e2e
def test_two_processes_train_like_one(tmp_path, tiny_model):
    from mlflow import MlflowClient

    one = _spec(tmp_path, tiny_model, "one")
    two = _spec(tmp_path, tiny_model, "two")
    started = time.monotonic()
    single = Launched(one.run_dir, 1)
    assert single.wait(180).returncode == 0, single.log()
    one_seconds = time.monotonic() - started
    started = time.monotonic()
    double = Launched(two.run_dir, 2)
    ex = double.wait(180)
    two_seconds = time.monotonic() - started
    assert ex.returncode == 0 and ex.failure is None, double.log()
    assert "torch.distributed.run" in " ".join(double.worker._command)

    a, b = single.losses(), double.losses()
    assert sorted(a) == sorted(b) == list(range(1, 21))
    worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
    print(f"\nmax relative loss difference 1 vs 2 processes over 20 steps: {worst:.2e}; "
          f"wall time {one_seconds:.1f} s vs {two_seconds:.1f} s")
    assert worst <= LOSS_RTOL, (a, b)
    assert b[20] < b[1] * 0.75  # it learns
    init = next(r["data"] for r in double.reports if r["kind"] == "event" and r["type"] == "MODEL_INITIALIZED")
    packed = next(r["data"] for r in double.reports if r["kind"] == "event" and r["type"] == "DATA_VALIDATED")["packed_rows"]
    speeds = [_last(run, "train/tokens_per_second") for run in (single, double)]
    print(f"{packed} packed rows, {init['rows_per_step']} per step, {init['steps_per_epoch']} steps per epoch; "
          f"tokens/s (last step) {speeds[0]:.0f} vs {speeds[1]:.0f}")
    assert packed % init["rows_per_step"] == 1  # each epoch ends with a step of one row: rank 1's zero-weight pass

    # Rank 0 alone reports: the same events as one process, one exit line, no failure line (rank 1
    # writes nothing else), and the model registered once.
    def milestones(run: Launched) -> list[str]:  # TRAIN_UPDATED is paced by time, not by step
        return [e for e in run.events() if e != "TRAIN_UPDATED"]

    assert milestones(double) == milestones(single)
    assert double.events().count("MODEL_REGISTERED") == 1
    kinds = [r["kind"] for r in double.reports]
    assert kinds.count("exit") == 1 and "failure" not in kinds
    journal = [json.loads(line) for line in (Path(two.run_dir) / "journal.jsonl").read_text().splitlines()]
    assert len(journal) == len(double.reports)
    run_id = next(r["fields"]["mlflow_run_id"] for r in double.reports if r["kind"] == "run" and "mlflow_run_id" in r["fields"])
    client = MlflowClient(two.mlflow_tracking_uri, registry_uri=two.mlflow_tracking_uri)
    versions = client.search_model_versions(f"name='{two.register_to}'")
    assert [int(v.version) for v in versions] == [1] and versions[0].run_id == run_id
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1  # no MLflow run from rank 1
    assert (Path(two.run_dir) / "model" / "model.safetensors").is_file()


@pytest.mark.e2e
def test_cancel_stops_every_rank(tmp_path, tiny_model):
    spec = _spec(tmp_path, tiny_model, "cancel", duration="100000ba")
    run = Launched(spec.run_dir, 2)
    deadline = time.monotonic() + 120
    while not run.losses() and time.monotonic() < deadline and run.exit is None:
        time.sleep(0.1)
    assert run.losses(), run.log()
    ranks = _ranks(run.worker.pid)
    assert len(ranks) == 2, ranks
    started = time.monotonic()
    run.worker.cancel()
    ex = run.wait(5)
    while any(_alive(pid) for pid in ranks) and time.monotonic() - started < 5:
        time.sleep(0.05)
    stopped = time.monotonic() - started
    print(f"\ncancel: launcher and both ranks gone in {stopped:.2f} s")
    assert stopped < 5 and not any(_alive(pid) for pid in ranks)
    assert ex.cancelled and ex.failure is None, (ex, run.log())  # a rank stopped by the cancel is no failure
    assert "MODEL_REGISTERED" not in run.events()


@pytest.mark.e2e
def test_failure_on_one_rank_fails_the_run_with_its_reason(home, monkeypatch):
    """Through the service, as create(num_devices=2) runs: rank 1 fails at step 2 (the test hook in
    training/distributed.py), rank 0 then loses its peer; the run fails with rank 1's reason."""
    from tests.helpers import wait_for

    from tunedeck.service.core import RunService
    from tunedeck.service.store import Store
    from tunedeck.training.tiny import build_tiny_model
    from tunedeck.types import RunStatus

    monkeypatch.setenv(TEST_FAIL_RANK, "1")
    build_tiny_model(home / "models" / "tiny", [t for p in PAIRS for t in p])
    data = write_jsonl(home.parent / "train.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    service = RunService(Store(home / "t.db"), max_concurrent=1)
    service.start()
    try:
        run = service.create(RunRequest(model="tiny", train_data_path=str(data), register_to="main.tests",
                                        task_type="INSTRUCTION_FINETUNE", training_duration="5ba", num_devices=2))
        wait_for(lambda: service.get(run.name).status.is_terminal(), timeout=120)
        failed = service.get(run.name)
        log = (Path(failed.run_dir or "") / "worker.log").read_text(errors="replace")
        assert failed.status is RunStatus.FAILED, (failed.details, log[-3000:])
        assert failed.details == f"Failed: rank 1 of 2: test failure injected on rank 1 ({TEST_FAIL_RANK})", log[-3000:]
        # torchrun launched the ranks: its elastic agent reports the failed child (the banner about
        # OMP_NUM_THREADS is printed only where that variable is unset, so it is no evidence here)
        assert "elastic/errors.html" in log and "ChildFailedError" in log, log[-3000:]
        assert failed.registered_model_version is None
    finally:
        service.shutdown()

def test_num_devices_is_checked_and_launches_torchrun():
    assert check_num_devices(None) is None and check_num_devices(1) == 1
    for bad in (0, -1, True, 2.0, "2", (os.cpu_count() or 1) + 1):
        with pytest.raises((TypeError, ValueError)):
            check_num_devices(bad)
    problems = request_problems(RunRequest("m", "/Volumes/a/b/c/d.jsonl", "main.a.b", num_devices=0))
    assert [p.field for p in problems if p.field == "num_devices"] == ["num_devices"]
    assert torchrun_command(["py", "-m", "tunedeck.training.worker", "/runs/r"], 2) == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--max-restarts=0",
        "-m", "tunedeck.training.worker", "/runs/r",
    ]
    worker = WorkerProcess(Path("/runs/r"), lambda *a: None, lambda ex: None)
    assert "torch.distributed.run" not in worker._command  # one process: exactly as before, no torchrun
