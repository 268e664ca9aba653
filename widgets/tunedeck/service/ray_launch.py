"""Runs on a Ray cluster, the service's side: the command that submits one run as a Ray Train job.

With a Ray address (``tunedeck serve --ray ADDRESS`` or ``TUNEDECK_RAY_ADDRESS``) the service launches,
for each run, ``python -m tunedeck.training.ray_train RUN_DIR --address ADDRESS --workers N`` in place of
the local worker (service/worker_process.py), and owns it exactly as it owns a local worker: its own
process group, the run's journal and log, SIGTERM to cancel, SIGKILL after the grace period, its exit
code. That driver process submits the run to the cluster (training/ray_train.py): Ray places the run's
N processes and sets up torch.distributed among them; the driver is the job's owner, so when it dies Ray
ends the job's workers too.

Why a driver process the service starts, not the Ray Jobs API: the service already knows how to own,
follow, cancel and recover a process that appends to a journal, and a driver is one more such process;
the Jobs API would need the dashboard's HTTP server on the cluster, a second way to cancel and to
learn how a run ended, and an entrypoint whose environment the service cannot see. The service itself
never imports ray (nor torch): Ray is needed where the driver runs, ``pip install 'tunedeck[ray]'``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tunedeck import config

DRIVER_MODULE = "tunedeck.training.ray_train"


def ray_command(run_dir: Path, address: str, processes: int, python: str = sys.executable) -> list[str]:
    """The driver that runs ``run_dir`` as a Ray Train job of ``processes`` workers on the cluster at
    ``address``. Ray Train restarts a lost worker group up to TUNEDECK_AUTORESUME times (each restart
    resumes from the run's latest resume point), as the service resumes a local worker that died."""
    return [python, "-m", DRIVER_MODULE, str(run_dir), "--address", address, "--workers", str(int(processes)),
            "--max-failures", str(config.autoresume())]
