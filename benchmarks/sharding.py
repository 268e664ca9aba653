"""Seconds per optimizer step of one run at 1 process, 2 DDP processes and 2 FSDP processes (CPU, gloo).

Each contestant is the real worker as the service launches it (service/worker_process.WorkerProcess: one
process, or torchrun with 2 ranks, TUNEDECK_SHARDING=ddp or fsdp), on the same random Llama (4 layers,
256 wide), data and seed, fp32, ~1,000 tokens a step. Figures: the median seconds per step (the step's planned tokens / its
tokens per second), the whole run's wall time (process start to exit: imports, loading, checkpoints,
MLflow, export), and the largest relative loss difference per step against the 1-process run.

The contestants run one after the other (not in lockstep: the worker's ranks are separate processes),
so outside load on a shared machine moves the figures; the loss differences do not depend on it.
A lone process gets all the cores (torch's own thread count), as the service starts it, and once more
with one OpenMP thread; torchrun gives each rank one OpenMP thread. On a busy machine a process of
several OpenMP threads loses more to outside load than single-threaded ones (its threads wait for
each other), which is why the 1-thread row is there.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import parse_args, print_table, save_json, skewed_rows, tiny_model, write_jsonl

# Each step: ~1,000 tokens in rows of up to 256 (small, so that the figure is taken in minutes on 2 busy cores).
CONTEXT, BATCH_TOKENS = 256, 1024

# (name, processes, TUNEDECK_SHARDING, OMP_NUM_THREADS of the lone process: None = torch's own choice, every core)
CONTESTANTS = [("1 process", 1, "ddp", None), ("1 process, 1 thread", 1, "ddp", "1"),
               ("2 processes, DDP", 2, "ddp", None), ("2 processes, FSDP", 2, "fsdp", None)]


def train(root: Path, model: Path, data: Path, processes: int, sharding: str, steps: int,
          threads: str | None = None) -> dict[str, Any]:
    from tunedeck.inputs.spec import DataSource, RunSpec
    from tunedeck.service.worker_process import WorkerExit, WorkerProcess

    run_dir = root / f"run-{processes}-{sharding}-{threads or 'all'}"
    run_dir.mkdir(parents=True)
    spec = RunSpec(
        name=run_dir.name, task_type="INSTRUCTION_FINETUNE", model_name="bench", model_path=str(model),
        train_data=DataSource("jsonl", [str(data)], str(data)), register_to="main.bench.sharding",
        experiment_path="/Users/bench/sharding", run_dir=str(run_dir),
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}", mlflow_artifact_root=str(root / "mlartifacts"),
        training_duration=f"{steps}ba", context_length=CONTEXT, batch_tokens=BATCH_TOKENS, learning_rate=1e-3,
        precision="fp32", resume_every_seconds=None,
    )
    spec.save(run_dir / "spec.json")
    reports: list[dict[str, Any]] = []
    done = threading.Event()
    ended: list[WorkerExit] = []
    os.environ["TUNEDECK_SHARDING"] = sharding
    outside = os.environ.get("OMP_NUM_THREADS")
    if threads:
        os.environ["OMP_NUM_THREADS"] = threads
    started = time.monotonic()
    worker = WorkerProcess(run_dir, lambda report, offset: reports.append(report),
                           lambda ex: (ended.append(ex), done.set()), processes=processes)
    worker.start()
    if outside is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = outside
    if not done.wait(1800) or ended[0].returncode != 0:
        raise SystemExit(f"{run_dir.name} failed:\n{(run_dir / 'worker.log').read_text()[-3000:]}")
    wall = time.monotonic() - started
    init = next(r["data"] for r in reports if r.get("type") == "MODEL_INITIALIZED")
    metrics = {r["step"]: r["values"] for r in reports if r["kind"] == "metrics" and "train/loss" in r["values"]}
    per_step = [init["tokens_per_step"] / v["train/tokens_per_second"] for v in metrics.values()]
    return {"losses": {s: v["train/loss"] for s, v in metrics.items()}, "seconds_per_step": statistics.median(per_step),
            "wall_seconds": wall, "sharding": init.get("sharding"), "parameters": init["parameters"]}


def main() -> None:
    args = parse_args(__doc__, [(("--steps",), dict(type=int, default=20, help="optimizer steps per run (default 20)"))])
    steps = 4 if args.quick else args.steps
    with tempfile.TemporaryDirectory(prefix="tunedeck-bench-sharding-") as tmp:
        root = Path(tmp)
        rows = skewed_rows(48 if args.quick else 400)
        data = write_jsonl(root / "train.jsonl", rows)
        model = tiny_model(root / "model", rows, hidden_size=64 if args.quick else 256, layers=2 if args.quick else 4)
        results = {name: train(root, model, data, n, sharding, steps, threads) for name, n, sharding, threads in CONTESTANTS}
    base = results["1 process"]
    table, figures = [], {}
    for name, r in results.items():
        worst = max(abs(base["losses"][s] - v) / abs(base["losses"][s]) for s, v in r["losses"].items())
        table.append([name, r["sharding"] or "-", r["seconds_per_step"], base["seconds_per_step"] / r["seconds_per_step"],
                      r["wall_seconds"], f"{worst:.1e}"])
        figures[name] = {"seconds_per_step": r["seconds_per_step"], "wall_seconds": r["wall_seconds"],
                         "max_relative_loss_difference": worst, "parameters": r["parameters"], "steps": steps}
    print_table(f"{steps} steps, {base['parameters']:,}-parameter Llama, fp32, CPU",
                ["run", "sharding", "s/step", "speed-up", "wall s", "max rel. loss diff"], table)
    save_json(args.json, figures)


if __name__ == "__main__":
    main()
