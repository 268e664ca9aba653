"""A run on a Ray cluster: the driver the service launches instead of a local worker, and the train
loop each Ray Train worker runs.

    python -m tunedeck.training.ray_train RUN_DIR --address ADDRESS --workers N [--max-failures K]

The service starts this driver as it starts a local worker (service/worker_process.py: its own process
group, ``TUNEDECK_JOURNAL``, the run's log, SIGTERM to cancel), so everything the service knows about a
worker holds for it. The driver connects to the cluster and submits the run as one Ray Train job: a
``TorchTrainer`` with ``ScalingConfig(num_workers=N, use_gpu=<the cluster has N GPUs>)``. Ray places the
N processes and sets up torch.distributed among them; each runs :func:`train_loop`, which calls the same
entry a local worker runs (``training/worker.py``'s ``train``: the recipe, DDP, checkpoints, MLflow,
registration), so training code is shared, not forked. Rank 0 alone reports, appending to the run's
journal, which the service tails as it tails a local worker's: the journal and the run's folder must be
on a filesystem every Ray node sees (one machine; on a cluster, a shared volume mounted at the same
path on the service and on every Ray worker).

- **Exit code** (what the service reads, as from a local worker): rank 0's own code (0 done, 1 failed
  after a ``failure`` report, 143 stopped), 1 with a ``failure`` report when Ray Train gives up.
- **Cancel**: SIGTERM to the driver writes ``RUN_DIR/ray-stop``; each rank polls for it and stops at its
  next safe point exactly as a local worker does on SIGTERM (the train loop runs in a thread of Ray's
  worker process, where no signal handler can be installed). If the driver is killed instead, Ray ends
  the job's workers with it (they are not detached).
- **One rank gives up** (fails, or stops first) while others, alive, wait for it in a collective: as
  torchrun ends the other ranks, the driver aborts the job through Ray Train (``RankWatch``); the run
  fails with that rank's reason (or stops). A lost rank (no heartbeat) is Ray Train's to restart.
- **A lost Ray worker**: Ray Train restarts the worker group (``FailureConfig(max_failures=K)``, K =
  ``TUNEDECK_AUTORESUME``) and every rank resumes from the run's latest resume point (checkpoint or
  timed snapshot), emitting ``TRAIN_RESUMED`` as a local resume does; the same MLflow run goes on.
  After K restarts the driver reports Ray's reason and exits 1: the run FAILS with it.
- **No owner**: the driver watches the service as a local worker does (``OwnerWatch``); the Ray workers
  do not (the service's pid means nothing on another node).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from tunedeck.training.failures import StopRequested, StopSignal
from tunedeck.training.report import Reporter
from tunedeck.training.worker import EXIT_FAILED, EXIT_STOPPED, RESUME_LATEST, OwnerWatch, quiet_libraries, train

log = logging.getLogger("tunedeck.ray")

STOP_FILE = "ray-stop"  # written by the driver on SIGTERM; every rank stops when it appears
RANKS_DIR = "ray-ranks"  # rank<R>.json: where each rank runs (pid, node); rank<R>.exit: how its loop ended
STOP_POLL_SECONDS = 0.2
HEARTBEAT_SECONDS = 0.5  # each rank's rank<R>.alive is rewritten this often (RankWatch)
# What each rank needs of the service's environment (a Ray worker starts from the raylet's, not ours)
ENV_PREFIXES = ("TUNEDECK_", "MLFLOW_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "TQDM_")
ENV_LEFT_OUT = ("TUNEDECK_JOURNAL", "TUNEDECK_RAY_ADDRESS", "TUNEDECK_TOKEN")


# --- the driver ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunedeck.training.ray_train")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--address", required=True, help="the Ray cluster (ray.init's address)")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (the run's num_devices)")
    parser.add_argument("--max-failures", type=int, default=2, help="worker-group restarts before the run fails")
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    stopping = Cancel(run_dir / STOP_FILE)
    stopping.install()  # first: a cancel while Ray connects must work too
    quiet_libraries()
    reporter = Reporter.from_env()
    OwnerWatch(run_dir, reporter).start()  # its SIGTERM to this process is a cancel
    try:
        code = drive(run_dir, args.address, args.workers, args.max_failures, reporter, stopping)
    except Exception as error:  # the service must hear about every failure
        log.exception("the Ray job failed")
        reporter.failure(f"could not run the training on the Ray cluster at {args.address}: "
                         f"{type(error).__name__}: {_first_line(error)}")
        code = EXIT_FAILED
    reporter.exit(code)
    return code


class Cancel:
    """The driver's SIGTERM: remembered, and passed on to every rank through ``RUN_DIR/ray-stop``."""

    def __init__(self, stop_file: Path):
        self.stop_file = stop_file
        stop_file.unlink(missing_ok=True)
        self._set = threading.Event()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self._set.set()
        self.stop_file.touch()

    def is_set(self) -> bool:
        return self._set.is_set()


def drive(run_dir: Path, address: str, workers: int, max_failures: int, reporter: Reporter, stopping: Cancel) -> int:
    """Submit the run as one Ray Train job, wait for it, and return the worker's exit code."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    ray.init(address=address, logging_level=logging.WARNING, configure_logging=False)
    stopping.install()  # again: ray.init replaced the driver's SIGTERM handler with its own
    log.info("connected to the Ray cluster at %s", address)
    if stopping.is_set():
        return EXIT_STOPPED
    use_gpu = ray.cluster_resources().get("GPU", 0) >= workers
    if not wait_for_room(ray.cluster_resources, "GPU" if use_gpu else "CPU", workers, address, reporter, stopping):
        return EXIT_STOPPED if stopping.is_set() else EXIT_FAILED
    trainer = TorchTrainer(
        cast(Any, train_loop),  # Ray's annotation says it returns None; Ray Train V2 hands rank 0's value back
        train_loop_config={"run_dir": str(run_dir), "journal": os.environ.get("TUNEDECK_JOURNAL") or "",
                           "env": {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES) and k not in ENV_LEFT_OUT}},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(
            name=run_dir.name, storage_path=str(run_dir / "ray"),
            failure_config=FailureConfig(max_failures=max_failures),
        ),
    )
    log.info("submitting %s to Ray Train: %d worker(s), %s", run_dir.name, workers, "GPUs" if use_gpu else "CPUs")
    watch = RankWatch(run_dir, workers)
    if workers > 1:
        watch.start()
    try:
        result = trainer.fit()
    except TrainingFailedError as error:  # a worker group failed more than max_failures times
        if stopping.is_set() or watch.aborted.is_set():
            log.info("stopped; Ray said: %s", _first_line(error))
            return EXIT_STOPPED if stopping.is_set() else EXIT_FAILED
        log.error("Ray Train gave up: %s", error)
        reporter.failure(f"the Ray Train job failed after {max_failures} restart(s): {_first_line(error)}")
        return EXIT_FAILED
    except BaseException:  # Ray's SIGINT handler leaves fit() with SystemExit after the abort RankWatch asked for
        if not watch.aborted.is_set():
            raise
        log.info("the job was aborted after a rank gave up")
        return EXIT_STOPPED if stopping.is_set() else EXIT_FAILED
    finally:
        watch.done.set()
    value = getattr(result, "return_value", None)  # (ray.train.Result is typed as V1's, which has none)
    if isinstance(value, int):
        return value
    return EXIT_STOPPED if stopping.is_set() else EXIT_FAILED


def wait_for_room(
    resources: Callable[[], dict[str, float]], kind: str, workers: int, address: str, reporter: Reporter, stopping: Cancel,
    *, timeout: float | None = None, every: float = 2.0,
) -> bool:
    """Whether the cluster holds the run's workers (one ``kind``, CPU or GPU, each), waiting up to
    ``timeout`` (TUNEDECK_RAY_START_TIMEOUT, default 600 s) for an autoscaling cluster to grow, and
    saying so in the run's details meanwhile. Ray Train would wait for them for ever, the run silent
    in STARTING; here it fails with the reason instead (False), or stops when cancelled (False)."""
    timeout = float(os.environ.get("TUNEDECK_RAY_START_TIMEOUT") or 600) if timeout is None else timeout
    deadline, said = time.monotonic() + timeout, False
    while True:
        have = float(resources().get(kind, 0))
        if have >= workers:
            return True
        if stopping.is_set():
            return False
        what = f"the Ray cluster at {address} has {have:g} {kind}(s) and this run's {workers} worker(s) need {workers}"
        if time.monotonic() >= deadline:
            reporter.failure(f"{what}, one each; it did not grow within {timeout:g} s (TUNEDECK_RAY_START_TIMEOUT)")
            return False
        if not said:
            reporter.run(details=f"Waiting: {what}")
            said = True
        time.sleep(every)


class RankWatch(threading.Thread):
    """Ends the job when one rank of several has given up (failed or stopped) while the others, alive,
    have not followed within ``grace`` seconds: they wait in a collective for it, and unlike torchrun's
    ranks a Ray Train worker's process outlives its train loop, so nothing would wake them. The abort is
    Ray Train's own (the SIGINT handler ``fit()`` installs: the controller aborts the worker group); the
    failing rank's reason is in the journal already.

    A rank is alive while its heartbeat (``rank<R>.alive``, rewritten every HEARTBEAT_SECONDS by the rank)
    changes; one that stopped beating was lost (killed, its node gone): that is Ray Train's to handle
    (it restarts the group), so the job is left alone. Changes are timed on this process's clock, so
    the nodes' clocks need not agree."""

    def __init__(self, run_dir: Path, workers: int, grace: float = 3.0, stale: float = 2.0):
        super().__init__(name="tunedeck-ray-ranks", daemon=True)
        self.folder = run_dir / RANKS_DIR
        self.workers = workers
        self.grace = grace
        self.stale = stale
        self.aborted = threading.Event()
        self.done = threading.Event()
        self._beats: dict[int, tuple[str, float]] = {}  # rank -> (last heartbeat seen, when it changed)

    def _alive(self, rank: int, now: float) -> bool:
        try:
            beat = (self.folder / f"rank{rank}.alive").read_text()
        except OSError:
            return False
        seen = self._beats.get(rank)
        if seen is None or seen[0] != beat:
            self._beats[rank] = (beat, now)
            return seen is not None  # one reading is not yet a beat
        return now - seen[1] < self.stale

    def run(self) -> None:
        since: float | None = None
        while not self.done.wait(STOP_POLL_SECONDS):
            now = time.monotonic()
            codes = rank_exits(self.folder)
            waiting = [r for r in range(self.workers) if r not in codes]
            alive = [self._alive(r, now) for r in waiting]
            if waiting and all(alive) and any(code != 0 for code in codes.values()):
                since = since or now
                if now - since >= self.grace:
                    log.warning("rank(s) %s ended (%s) and rank(s) %s wait for them: ending the job",
                                sorted(codes), codes, waiting)
                    self.aborted.set()
                    os.kill(os.getpid(), signal.SIGINT)
                    return
            else:
                since = None


def rank_exits(folder: Path) -> dict[int, int]:
    """The exit code of each rank whose train loop has returned in this attempt."""
    codes = {}
    for path in folder.glob("rank*.exit"):
        try:
            codes[int(path.stem.removeprefix("rank"))] = int(path.read_text())
        except (OSError, ValueError):
            continue
    return codes


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:500]


# --- each Ray Train worker -------------------------------------------------------------------------


def train_loop(config: dict[str, Any]) -> int:
    """One rank of the run, on a Ray Train worker: the same ``train`` a local worker runs. Ray Train set
    up torch.distributed and RANK / WORLD_SIZE / LOCAL_RANK before this is called."""
    import ray.train

    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    run_dir = Path(config["run_dir"])
    # The service's settings (state dir, MLflow store, TUNEDECK_*): set here, not as a runtime_env of the
    # job, so that Ray can hand the job its already started worker processes
    os.environ.update(config.get("env") or {})
    quiet_libraries()
    ranks = run_dir / RANKS_DIR
    ranks.mkdir(exist_ok=True)
    exit_file = ranks / f"rank{rank}.exit"  # written when this attempt's loop ends (RankWatch)
    exit_file.unlink(missing_ok=True)
    beating = threading.Event()
    threading.Thread(target=_heartbeat, args=(ranks / f"rank{rank}.alive", beating), name="tunedeck-ray-heartbeat",
                     daemon=True).start()
    (ranks / f"rank{rank}.json").write_text(json.dumps({"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}))
    log.info("rank %d of %d on Ray worker pid %d", rank, world_size, os.getpid())
    _use_ray_device()
    journal = config["journal"]
    reporter = (Reporter(journal_fd=os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)) if journal
                else Reporter(sys.stderr)).for_rank(rank, world_size)
    stop = ThreadStop()
    try:
        try:
            threading.Thread(target=stop.watch, args=(run_dir / STOP_FILE,), name="tunedeck-ray-stop", daemon=True).start()
            code = train(run_dir, reporter, stop, watch_owner=False, prepare=lambda spec: _resume_latest(spec, journal))
        finally:
            stop.leave()
    except StopRequested:  # delivered before train() began or just as it returned: never an error for Ray to retry
        code = EXIT_STOPPED
    exit_file.write_text(str(code))
    beating.set()
    return code


def _heartbeat(path: Path, done: threading.Event) -> None:
    """Rewrite ``path`` every HEARTBEAT_SECONDS until ``done``: this rank is alive (RankWatch)."""
    beat = 0
    while not done.is_set():
        beat += 1
        try:
            path.write_text(f"{os.getpid()} {beat}")
        except OSError:
            pass
        done.wait(HEARTBEAT_SECONDS)


def _use_ray_device() -> None:
    import torch

    if torch.cuda.is_available():
        from ray.train.torch import get_device

        torch.cuda.set_device(get_device())


def _resume_latest(spec: Any, journal: str) -> None:
    """Ray Train runs this loop again after it restarts a lost worker group: every attempt goes on from
    the run's latest resume point (none on a first attempt: it trains from the start), in the MLflow
    run the earlier attempt began."""
    if spec.resume_from is None:
        spec.resume_from = RESUME_LATEST
    if spec.resume_mlflow_run_id is None and journal:
        spec.resume_mlflow_run_id = _journaled_mlflow_run_id(Path(journal))


def _journaled_mlflow_run_id(journal: Path) -> str | None:
    found = None
    try:
        with open(journal, "rb") as f:
            for line in f:
                if b'"mlflow_run_id"' in line and b'"kind": "run"' in line:
                    try:
                        found = json.loads(line)["fields"].get("mlflow_run_id") or found
                    except (ValueError, KeyError, AttributeError):
                        continue
    except OSError:
        return None
    return found


class ThreadStop(StopSignal):
    """StopSignal for a train loop that runs in a thread (Ray Train's): ``request()`` does what SIGTERM
    does in a worker's main thread. Inside ``safe_points()`` it sets the flag the recipe checks; outside
    them it raises ``StopRequested`` in the training thread at once (at its next Python instruction)."""

    def __init__(self) -> None:
        super().__init__()
        self._thread_id = threading.get_ident()
        self._lock = threading.Lock()
        self._active = True

    def request(self) -> None:
        with self._lock:
            if self.requested or not self._active:
                return
            self.requested = True
            if not self._deferred:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread_id), ctypes.py_object(StopRequested))

    def leave(self) -> None:
        """The training thread is done: nothing is raised in it from now on."""
        with self._lock:
            self._active = False

    def watch(self, stop_file: Path) -> None:
        while self._active:
            if stop_file.exists():
                log.info("stop requested (%s)", stop_file.name)
                self.request()
                return
            time.sleep(STOP_POLL_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
