"""The device scheduler: concurrent runs hold disjoint devices (CPU cores here), the rest wait in order
and say why; a run asking more devices than there are is refused at create(); a re-attached worker
keeps its devices across a service restart.

The end-to-end tests train the tiny model with real workers; a small wrapper (WRAPPER below) records
what each worker process saw (its CPU affinity, OMP_NUM_THREADS, torch's thread count) and then runs
the real worker in the same process.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from tunedeck import InvalidInputError, RunStatus
from tunedeck.inputs.validate import RunRequest
from tunedeck.service.core import RunService
from tunedeck.service.devices import (
    Assignment,
    DevicePool,
    DeviceScheduler,
    discover,
    format_cpu_list,
    parse_cpu_list,
    parse_setting,
)
from tunedeck.service.store import Store
from tunedeck.service.worker_process import torchrun_command
from tests.helpers import PAIRS, wait_for, write_jsonl

CORES = sorted(os.sched_getaffinity(0))
TWO_CORES = pytest.mark.skipif(len(CORES) < 2, reason="needs 2 CPU cores")

WRAPPER = """\
import json, os, runpy, sys
import torch
run_dir = sys.argv[-1]
seen = {"cpus": sorted(os.sched_getaffinity(0)), "omp": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "rank": int(os.environ.get("RANK", "0")), "world": int(os.environ.get("WORLD_SIZE", "1"))}
with open(os.path.join(run_dir, "seen-rank%d.json" % seen["rank"]), "w") as f:
    json.dump(seen, f)
sys.argv = [sys.argv[0], run_dir]
runpy.run_module("tunedeck.training.worker", run_name="__main__", alter_sys=True)
"""


# --- the pool and its setting -------------------------------------------------------------------


def test_cpu_lists_read_and_write_like_taskset():
    assert parse_cpu_list("0-3,8") == [0, 1, 2, 3, 8]
    assert format_cpu_list([8, 0, 1, 2, 3]) == "0-3,8"
    assert format_cpu_list([0, 2, 3]) == "0,2-3"
    for bad in ("", "a", "3-1", "-1"):
        with pytest.raises(ValueError):
            parse_cpu_list(bad)


def test_the_setting_names_gpus_or_cores_and_a_bad_one_says_what_is_expected():
    assert parse_setting("cuda:0,1") == DevicePool("cuda", ("0", "1"), "TUNEDECK_DEVICES=cuda:0,1")
    cpu = parse_setting("cpu")
    assert cpu.kind == "cpu" and cpu.ids == tuple(str(c) for c in CORES) and cpu.hide_gpus
    assert parse_setting(f"cpu:{CORES[0]}").ids == (str(CORES[0]),)
    for bad, said in (("gpus", "is not a device list"), ("cuda:", "is not a device list"), ("cuda:0,0", "distinct"),
                      ("cpu:9999", "not among the cores")):
        with pytest.raises(ValueError, match=said):
            parse_setting(bad)


def test_discovery_without_torch_reads_the_setting_then_cuda_visible_devices_then_the_cpu_affinity():
    assert discover({"TUNEDECK_DEVICES": "cuda:3"}).ids == ("3",)
    hidden = discover({"CUDA_VISIBLE_DEVICES": ""})
    assert hidden.kind == "cpu" and hidden.ids == tuple(str(c) for c in CORES) and hidden.source == "CPU affinity"
    import shutil

    if shutil.which("nvidia-smi") is None:  # no GPU tool here: the variable alone names the GPUs
        assert discover({"CUDA_VISIBLE_DEVICES": "2,3"}) == DevicePool("cuda", ("2", "3"), "CUDA_VISIBLE_DEVICES")
        assert discover({}).kind == "cpu"


def test_the_service_imports_no_torch_to_find_its_devices():
    import subprocess

    code = ("import sys, tunedeck.service.core as c, tunedeck.service.devices as d; d.discover();"
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the scheduler's accounting -----------------------------------------------------------------


def test_cpu_runs_get_disjoint_shares_of_the_cores_and_each_process_its_own_cores():
    pool = DevicePool("cpu", tuple(str(c) for c in range(8)), "test")
    devices = DeviceScheduler(pool, max_concurrent=2)
    assert devices.need(1) == 4 and devices.need(3) == 4 and devices.need(6) == 6  # a share, at least one each
    a = devices.take("a", 1)
    b = devices.take("b", 2)
    assert a is not None and b is not None
    assert set(a.ids).isdisjoint(b.ids) and len(a.ids) == len(b.ids) == 4
    assert b.rank_cores == ((4, 5), (6, 7)) and b.pin_sets() == "4,5;6,7" and b.launcher_cores() == "4,5,6,7"
    assert a.env() == {} and devices.take("c", 1) is None and not devices.fits_now(1)
    assert devices.waiting_reason(1) == "waiting for 4 CPU cores (0 of 8 free; held by a, b)"
    devices.release("a")
    assert devices.free() == ["0", "1", "2", "3"]
    assert Assignment.from_json(b.to_json()) == b


def test_one_run_at_a_time_gets_every_core_and_gpu_runs_one_gpu_per_process():
    cpu = DeviceScheduler(DevicePool("cpu", ("0", "1", "2", "3"), "test"), max_concurrent=1)
    assert cpu.need(1) == 4 and cpu.take("a", 2).rank_cores == ((0, 1), (2, 3))
    gpus = DeviceScheduler(DevicePool("cuda", ("0", "1", "2"), "test"), max_concurrent=3)
    one, two = gpus.take("a", 1), gpus.take("b", 2)
    assert one.env() == {"CUDA_VISIBLE_DEVICES": "0"} and two.env() == {"CUDA_VISIBLE_DEVICES": "1,2"}
    assert two.pin_sets() is None and gpus.take("c", 1) is None
    forced = DeviceScheduler(parse_setting("cpu"), max_concurrent=1).take("a", 1)
    assert forced.env() == {"CUDA_VISIBLE_DEVICES": ""}  # TUNEDECK_DEVICES=cpu: the workers see no GPU


def test_the_ranks_are_pinned_by_torchrun_before_the_worker_runs():
    command = torchrun_command(["py", "-m", "tunedeck.training.worker", "/runs/r"], 2, "0;1")
    assert command[:7] == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--max-restarts=0",
                           "--no-python"]
    assert command[7:9] == ["py", "-c"] and command[10:] == ["0;1", "py", "-m", "tunedeck.training.worker", "/runs/r"]


# --- create() refuses what can never run ---------------------------------------------------------


@pytest.fixture
def model_and_data(home, tmp_path):
    from tunedeck.training.tiny import build_tiny_model

    build_tiny_model(home / "models" / "tiny", [t for p in PAIRS for t in p])
    data = write_jsonl(tmp_path / "train.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    home.mkdir(parents=True, exist_ok=True)
    return "tiny", str(data)


def request(model: str, data: str, **kw) -> RunRequest:
    return RunRequest(model=model, train_data_path=data, register_to="main.tests", task_type="INSTRUCTION_FINETUNE", **kw)


def test_a_run_asking_more_devices_than_exist_is_refused_naming_what_there_is(model_and_data, monkeypatch):
    service = RunService(Store(Path(os.environ["TUNEDECK_HOME"]) / "t.db"), max_concurrent=0)
    too_many = len(CORES) + 1
    with pytest.raises(InvalidInputError) as err:
        service.create(request(*model_and_data, num_devices=too_many))
    (problem,) = err.value.problems
    assert problem.field == "num_devices"
    assert problem.message == (f"asks for {too_many} devices (one per process) and this service has "
                               f"{service.devices.pool.describe()}: at most {len(CORES)}")
    assert service.list() == []
    # the same without validation, and through the default setting
    with pytest.raises(InvalidInputError):
        service.create(request(*model_and_data, num_devices=too_many, validate_inputs=False))
    monkeypatch.setenv("TUNEDECK_NUM_DEVICES", str(too_many))
    with pytest.raises(InvalidInputError) as err:
        service.create(request(*model_and_data))
    assert [p.field for p in err.value.problems] == ["TUNEDECK_NUM_DEVICES (service environment)"]
    assert service.list() == []
    # a GPU service counts GPUs
    gpus = RunService(service.store, max_concurrent=0, devices=DevicePool("cuda", ("0",), "test"))
    with pytest.raises(InvalidInputError) as err:
        gpus.create(request(*model_and_data, num_devices=2))
    assert "this service has 1 GPU (0; test): at most 1" in str(err.value)


# --- the scheduler with real workers -----------------------------------------------------------------


def _seen(run_dir: str | None) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(run_dir or "").glob("seen-rank*.json"))]


def _started(service: RunService, name: str):
    return next(e for e in service.events(name) if e.type == "STARTED")


@TWO_CORES
@pytest.mark.e2e
def test_concurrent_runs_train_on_disjoint_cores_and_the_rest_wait_in_order_saying_why(model_and_data, tmp_path):
    """Two cores, two slots: two 1-process runs train at once, one core each; a 2-process run waits for
    both cores (and says so), then trains with one core per process; a later 1-process run does not
    overtake it while a core and a slot are free. The long run is held still (SIGSTOP) while the
    others are checked, then cancelled: no step of the test depends on how fast anything trains."""
    wrapper = tmp_path / "record_devices.py"
    wrapper.write_text(WRAPPER)
    pool = DevicePool("cpu", tuple(str(c) for c in CORES[:2]), "test")
    service = RunService(Store(Path(os.environ["TUNEDECK_HOME"]) / "t.db"), max_concurrent=2,
                         worker_command=[sys.executable, str(wrapper)], devices=pool)
    service.start()
    held_still = None
    try:
        long = service.create(request(*model_and_data, training_duration="400ba"))
        short = service.create(request(*model_and_data, training_duration="3ba"))
        wait_for(lambda: len(service.devices.held()) == 2, timeout=60)
        held = service.devices.held()
        assert set(held) == {long.name, short.name} and set(held[long.name].ids).isdisjoint(held[short.name].ids)
        wait_for(lambda: _seen(service.get(long.name).run_dir), timeout=120)
        held_still = _started(service, long.name).data["pid"]
        os.killpg(held_still, signal.SIGSTOP)

        big = service.create(request(*model_and_data, training_duration="3ba", num_devices=2))
        late = service.create(request(*model_and_data, training_duration="2ba"))
        assert big.status is RunStatus.QUEUED and late.status is RunStatus.QUEUED
        wait_for(lambda: service.get(short.name).status.is_terminal(), timeout=300)
        waiting = f"Queued: waiting for 2 CPU cores (1 of 2 free; held by {long.name})"
        wait_for(lambda: service.get(big.name).details == waiting, timeout=30)
        assert any(e.type == "QUEUED" and e.message == waiting for e in service.events(big.name))
        assert service.get(late.name).status is RunStatus.QUEUED  # a core and a slot are free: it waits its turn
        assert service.get(late.name).details.startswith("Queued: ")

        service.cancel(long.name)
        os.killpg(held_still, signal.SIGCONT)
        held_still = None
        wait_for(lambda: all(service.get(r.name).status.is_terminal() for r in (long, big, late)), timeout=600)
        runs = {r.name: service.get(r.name) for r in (long, short, big, late)}
        assert runs[long.name].status is RunStatus.STOPPED
        for run in (runs[short.name], runs[big.name], runs[late.name]):
            assert run.status is RunStatus.COMPLETED, (run.name, run.details)

        # what each worker process saw: its own core, and as many OpenMP and torch threads
        seen_long, seen_short = _seen(runs[long.name].run_dir), _seen(runs[short.name].run_dir)
        assert len(seen_long) == len(seen_short) == 1
        for run, seen in ((long, seen_long[0]), (short, seen_short[0])):
            assert seen["cpus"] == [int(i) for i in _started(service, run.name).data["devices"]]
            assert len(seen["cpus"]) == 1 and seen["omp"] == "1" and seen["torch_threads"] == 1 and seen["world"] == 1
        assert set(seen_long[0]["cpus"]).isdisjoint(seen_short[0]["cpus"])
        # the 2-process run: one rank per core
        ranks = _seen(runs[big.name].run_dir)
        assert [s["rank"] for s in ranks] == [0, 1] and all(s["world"] == 2 for s in ranks)
        assert sorted(c for s in ranks for c in s["cpus"]) == CORES[:2] and all(len(s["cpus"]) == 1 for s in ranks)
        assert all(s["omp"] == "1" and s["torch_threads"] == 1 for s in ranks)
        assert _started(service, big.name).message.endswith(f"on CPU cores {format_cpu_list(CORES[:2])} "
                                                             f"(processes on {CORES[0]} / {CORES[1]})")
        # strictly in order: the later run started after the 2-process run
        assert _started(service, late.name).time >= _started(service, big.name).time
        assert service.health()["devices"]["free"] == 2
    finally:
        if held_still:
            os.killpg(held_still, signal.SIGCONT)
        service.shutdown()


@TWO_CORES
@pytest.mark.e2e
def test_a_reattached_worker_keeps_its_core_across_a_service_restart(home, model_and_data, monkeypatch):
    """A real service process (max 2 runs, 2 cores) is killed while its run trains; the restarted service
    re-attaches to the worker, which keeps its core, and gives the next run the other one."""
    from benchmarks._service import ServiceProcess, worker_pids

    monkeypatch.setenv("TUNEDECK_DEVICES", f"cpu:{CORES[0]},{CORES[1]}")
    services: list[ServiceProcess] = []

    def create(service: ServiceProcess, steps: int) -> str:
        body = {"model": "tiny", "train_data_path": model_and_data[1], "register_to": "main.tests",
                "task_type": "INSTRUCTION_FINETUNE", "training_duration": f"{steps}ba"}
        return service.api("POST", "/api/runs", json=body)["name"]

    def trained(name: str) -> bool:
        journal = home / "runs" / name / "journal.jsonl"
        return journal.exists() and b'"kind": "metrics"' in journal.read_bytes()

    def started(service: ServiceProcess, name: str) -> dict:
        return wait_for(lambda: next((e for e in service.events(name) if e["type"] == "STARTED"), None), timeout=120)

    try:
        services.append(ServiceProcess(home, args=("--max-concurrent", "2")))
        first = create(services[-1], 400)
        event = started(services[-1], first)
        pid, cores = event["data"]["pid"], [int(c) for c in event["data"]["devices"]]
        wait_for(lambda: trained(first), timeout=180, interval=0.05)
        os.kill(pid, signal.SIGSTOP)  # held still while its service is replaced
        assert sorted(os.sched_getaffinity(pid)) == cores and len(cores) == 1
        services[-1].kill9()

        services.append(ServiceProcess(home, args=("--max-concurrent", "2")))
        health = services[-1].api("GET", "/api/health")
        assert health["devices"]["held"] == {first: [str(c) for c in cores]}, health
        second = create(services[-1], 400)
        other = [int(c) for c in started(services[-1], second)["data"]["devices"]]
        assert other == [c for c in CORES[:2] if c not in cores]
        wait_for(lambda: trained(second), timeout=180, interval=0.05)
        pids = set(worker_pids(home))
        assert pid in pids and len(pids) == 2
        assert [sorted(os.sched_getaffinity(p)) for p in pids if p != pid] == [other]
        assert any("re-attached to the worker" in e["message"] for e in services[-1].events(first))
        os.kill(pid, signal.SIGCONT)
    finally:
        for service in services:
            service.stop()
        for p in worker_pids(home):
            os.killpg(p, signal.SIGKILL)


def test_a_version_2_store_gains_the_workers_devices_and_keeps_its_rows(tmp_path):
    import sqlite3

    from tunedeck.service.store import MIGRATIONS, SCHEMA, SCHEMA_VERSION

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA + ";" + MIGRATIONS[0])
    db.execute("INSERT INTO workers (run, pid, journal_offset) VALUES ('r', 42, 7)")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION == 3
    state = store.worker("r")
    assert (state.pid, state.journal_offset, state.devices) == (42, 7, None)
    held = Assignment("cpu", ("1",), 1, rank_cores=((1,),))
    store.set_worker("r", devices=held.to_json())
    assert Assignment.from_json(store.worker("r").devices) == held
