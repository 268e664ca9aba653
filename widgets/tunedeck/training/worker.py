"""Entry point of a training worker: ``python -m tunedeck.training.worker RUN_DIR``.

Reads ``RUN_DIR/spec.json``, trains, and appends reports to the journal ``TUNEDECK_JOURNAL`` (see
report.py). Exit codes: 0 done; 1 failed (after a ``failure`` report naming the problem); 143 stopped
by SIGTERM. The last journal line of a worker that ends on its own is ``{"kind": "exit", "code": ...}``.
Logs and warnings go to stderr, which the service keeps as the run's log.

A worker never trains without an owner: ``RUN_DIR/owner.json`` names the service process that owns it
(a restarted service re-attaches by writing its own), and a worker whose owner has been gone for
``TUNEDECK_ORPHAN_GRACE_SECONDS`` (default 120) stops itself at the next safe point. The run then
resumes from its latest checkpoint when a service comes back.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tunedeck.errors import InvalidInputError
from tunedeck.processes import OWNER_FILE, owner_alive
from tunedeck.training.failures import StopRequested, StopSignal, TrainingFailure
from tunedeck.training.report import Reporter

if TYPE_CHECKING:
    from tunedeck.inputs.spec import RunSpec

log = logging.getLogger("tunedeck.worker")

EXIT_FAILED = 1
EXIT_STOPPED = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM
RESUME_LATEST = "latest"  # spec.resume_from: this run's latest resume point, found when the worker starts


def main(argv: list[str] | None = None) -> int:
    stop = StopSignal().install()  # first: a cancel during the slow imports below must work too
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tunedeck.training.worker RUN_DIR", file=sys.stderr)
        return 2
    quiet_libraries()
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1") or 1)  # torchrun's
    if world_size > 1:
        from tunedeck.training.distributed import die_with_parent

        die_with_parent()  # a rank never outlives its torchrun launcher
    reporter = Reporter.from_env().for_rank(rank, world_size)
    code = train(Path(args[0]), reporter, stop)
    reporter.exit(code)
    return code


def train(run_dir: Path, reporter: Reporter, stop: StopSignal, *, watch_owner: bool = True,
          prepare: Callable[[RunSpec], None] | None = None) -> int:
    """Train the run in ``run_dir`` in this process (one rank of it under torchrun or Ray Train) and
    return the exit code. ``watch_owner``: stop when no service owns the run (off on a Ray worker, whose
    driver watches instead: training/ray_train.py). ``prepare(spec)`` may adjust the spec once loaded."""
    if watch_owner:
        OwnerWatch(run_dir, reporter).start()
    try:
        from tunedeck.inputs.spec import RunSpec

        spec = RunSpec.load(run_dir / "spec.json")
        if prepare is not None:
            prepare(spec)
        if os.environ.get("TUNEDECK_RESUME_EVERY_SECONDS"):
            spec.resume_every_seconds = float(os.environ["TUNEDECK_RESUME_EVERY_SECONDS"])
        if spec.resume_from == RESUME_LATEST:
            from tunedeck.training.checkpoint import latest_resume_point

            point = latest_resume_point(run_dir)
            spec.resume_from = str(point) if point else None  # none yet: train again from the start
        from tunedeck.training.recipe import run

        result = run(spec, reporter, stop)
        log.info("run finished: model in %s, registered version %s", result.model_dir, result.registered_model_version)
        return 0
    except StopRequested:
        log.info("stopped on request (SIGTERM)")
        return EXIT_STOPPED
    except TrainingFailure as error:
        log.error("run failed: %s", error)
        reporter.failure(str(error))
    except InvalidInputError as error:
        log.error("run failed: %s", error)
        first = error.problems[0] if error.problems else error
        reporter.failure(str(first))
    except MemoryError:
        log.exception("out of memory")
        reporter.failure("the trainer ran out of memory: try a shorter context_length or a smaller model")
    except Exception as error:  # the service must hear about every failure
        if stop.requested:  # e.g. a peer rank that stopped first closed the collective this rank waited in
            log.info("stopped on request (SIGTERM), then: %s", error)
            return EXIT_STOPPED
        if _is_out_of_memory(error):
            log.exception("out of memory")
            reporter.failure(f"the trainer ran out of memory ({str(error).splitlines()[0][:200]}): try LoRA "
                             "(adapter='lora'), a shorter context_length or a smaller model")
            return EXIT_FAILED
        log.exception("run failed with an internal error")
        reporter.failure(f"internal error in the trainer: {type(error).__name__}: {error} (details in the run's log)")
    finally:
        if "tunedeck.training.distributed" in sys.modules:  # leave the process group (several processes)
            from tunedeck.training.distributed import close, world_from_env

            close(world_from_env())
    return EXIT_FAILED


def _is_out_of_memory(error: BaseException) -> bool:
    """torch reports a failed allocation as a RuntimeError (or its OutOfMemoryError subclass)."""
    text = str(error)
    return type(error).__name__ == "OutOfMemoryError" or (
        isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
    )


class OwnerWatch(threading.Thread):
    """Stops the worker (SIGTERM to itself, so the usual safe points apply) when no live service has
    owned it for the grace period. The owner file holds ``{"pid", "start"}``; ``start`` tells a reused
    pid from the real owner."""

    def __init__(self, run_dir: Path, reporter: Reporter, interval: float = 1.0):
        super().__init__(name="tunedeck-owner-watch", daemon=True)
        self.run_dir = run_dir
        self.reporter = reporter
        self.interval = interval
        self.grace = float(os.environ.get("TUNEDECK_ORPHAN_GRACE_SECONDS", "120"))

    def run(self) -> None:
        if not (self.run_dir / OWNER_FILE).exists():
            return  # started by hand or by a test: nobody to watch
        lost_since: float | None = None
        while True:
            time.sleep(self.interval)
            if owner_alive(self.run_dir):
                lost_since = None
                continue
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since >= self.grace:
                log.warning("no tunedeck service has owned this worker for %.0f s: stopping", self.grace)
                self.reporter.orphaned(f"no tunedeck service owned the worker for {self.grace:.0f} s")
                os.kill(os.getpid(), signal.SIGTERM)
                return


def quiet_libraries() -> None:
    """Keep the run's log readable: no progress bars, no per-call INFO chatter from libraries."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # e.g. the GGUF conversion's own progress bar
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded by a worker
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("mlflow", "alembic", "sqlalchemy", "urllib3", "filelock"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)


if __name__ == "__main__":
    exit_code = main()
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        # One of several ranks: everything is written (journal lines go out at once), so skip the
        # interpreter's teardown of torch's state, seconds on a busy machine, that the launcher and a
        # cancel would wait for.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)
    sys.exit(exit_code)
