"""Several processes for one run: torch.distributed data parallelism (DDP).

The service launches ``num_devices`` > 1 processes with torchrun (service/worker_process.py), which
sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; each process runs the same recipe.
One process (no WORLD_SIZE, or 1) is exactly the single-process run: nothing here does anything.

The run means the same at every world size: each optimizer step trains the same rows as one process
would, each rank taking the disjoint share ``rows[rank::world]``. Every rank divides its summed loss
by the step's *global* count of loss tokens (all-reduced), times the world size because DDP averages
gradients over ranks: the averaged gradient is then the one-process gradient (up to the order in
which floats are added). Rank 0 alone reports, logs to MLflow, saves and registers (see recipe.py).

Test hook: ``TUNEDECK_TEST_FAIL_RANK=R`` (read only here, set only by tests) makes rank R fail at
its second optimizer step, to test that a rank's failure fails the run with that rank's reason.
"""

from __future__ import annotations

import ctypes
import datetime
import logging
import os
import signal
from dataclasses import dataclass
from typing import Any

import torch

from tunedeck.training.failures import TrainingFailure
from tunedeck.training.tracking import Tracker

log = logging.getLogger(__name__)

TEST_FAIL_RANK = "TUNEDECK_TEST_FAIL_RANK"
# Checkpoint saves, eval and export run on rank 0 while the others wait at a barrier: allow them long.
BARRIER_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, rows: list) -> list:
        """This rank's disjoint share of a step's rows (all of them in one process)."""
        return rows[self.rank :: self.size] if self.enabled else rows

    def sum(self, *values: float) -> list[float]:
        """``values`` summed over the ranks (float64: counts and losses add up exactly enough)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def max(self, value: float) -> float:
        """The largest ``value`` over the ranks."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return float(tensor.item())

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self.enabled:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def label(self) -> str:
        return f"rank {self.rank} of {self.size}"


def world_from_env() -> World:
    """The torchrun-launched world this process belongs to (one process when not launched so)."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def die_with_parent() -> None:
    """A rank is killed when its torchrun launcher dies: torchrun starts each rank in its own session,
    so a SIGKILL the service sends to the launcher's process group reaches the launcher alone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher is already gone
        os.kill(os.getpid(), signal.SIGKILL)


def init(world: World) -> None:
    """Join the process group: NCCL with one GPU per rank, else gloo."""
    if not world.enabled:
        return
    if torch.cuda.is_available():
        if world.local_rank >= torch.cuda.device_count():
            raise TrainingFailure(
                f"num_devices: {world.size} processes on this machine but it has {torch.cuda.device_count()} GPU(s)"
            )
        torch.cuda.set_device(world.local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    if torch.distributed.is_initialized():  # Ray Train joined it already (training/ray_train.py)
        return
    torch.distributed.init_process_group(backend, timeout=BARRIER_TIMEOUT)
    log.info("%s joined the process group (%s)", world.label(), backend)


class LossOf(torch.nn.Module):
    """``loss_sum`` as a module's forward: what DDP wraps. The recipe's loss calls the decoder and the
    head itself (chunked cross-entropy), so DDP must wrap the loss, not the model's own forward, for
    its forward hooks to see every micro-batch."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> torch.Tensor:
        from tunedeck.training.loss import loss_sum

        return loss_sum(self.model, batch)[0]


def wrap(model: torch.nn.Module) -> Any:
    """DDP over ``model``'s loss: each backward all-reduces (averages) the gradients over the ranks.

    No device_ids: the model already sits on this rank's one device and batches are moved there by
    the recipe (DDP would otherwise rebuild each Batch to move it)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(LossOf(model))


def close(world: World) -> None:
    if world.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def test_hook(world: World, step: int) -> None:
    """See the module's docstring: a failure injected by tests on one rank."""
    if step == 2 and os.environ.get(TEST_FAIL_RANK) == str(world.rank):
        raise TrainingFailure(f"test failure injected on rank {world.rank} ({TEST_FAIL_RANK})")


class NoTracking(Tracker):
    """The Tracker of ranks other than 0: MLflow is rank 0's alone (they never export or register)."""

    def __init__(self, run_id: str | None = None):  # no MLflow client: nothing is logged
        self.experiment_id = ""
        self.run_id = run_id or ""

    def log_metrics(self, step: int, values: dict[str, float], force: bool = False) -> None:
        pass

    def flush(self) -> None:
        pass

    def log_generations(self, checkpoint: str, step: int, generations: list[dict[str, str]]) -> None:
        pass  # a sharded run's ranks all generate (sharding.py); rank 0 logs

    def finish(self, status: str = "FINISHED") -> None:
        pass
