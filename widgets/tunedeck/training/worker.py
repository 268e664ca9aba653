"""Entry point of a training worker: ``python -m tunedeck.training.worker RUN_DIR``.

Reads ``RUN_DIR/spec.json``, trains, and reports on the pipe ``TUNEDECK_REPORT_FD`` (see report.py).
Exit codes: 0 done; 1 failed (after a ``failure`` report naming the problem); 143 stopped by SIGTERM.
Logs and warnings go to stderr, which the service keeps as the run's log.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

from tunedeck.errors import InvalidInputError
from tunedeck.training.failures import StopRequested, StopSignal, TrainingFailure
from tunedeck.training.report import Reporter

log = logging.getLogger("tunedeck.worker")

EXIT_FAILED = 1
EXIT_STOPPED = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM


def main(argv: list[str] | None = None) -> int:
    stop = StopSignal().install()  # first: a cancel during the slow imports below must work too
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tunedeck.training.worker RUN_DIR", file=sys.stderr)
        return 2
    _quiet_libraries()
    reporter = Reporter.from_env()
    try:
        from tunedeck.inputs.spec import RunSpec

        spec = RunSpec.load(Path(args[0]) / "spec.json")
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
    except Exception as error:  # noqa: BLE001 - the service must hear about every failure
        log.exception("run failed with an internal error")
        reporter.failure(f"internal error in the trainer: {type(error).__name__}: {error} (details in the run's log)")
    return EXIT_FAILED


def _quiet_libraries() -> None:
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
    sys.exit(main())
