"""Faults: a real service training a tiny model, killed and restarted at random points.

    python benchmarks/faults.py [--quick] [--service-kills 20] [--worker-kills 10] [--json FILE]

Prints, against the reliability targets (issue 8):
  service kill -9 cycles   each cycle: a run, the service killed at a random step, restarted after a
                           random pause. Orphan workers (a worker left with no owner after the service
                           restarted), lost or doubled metric steps, runs not COMPLETED.
  worker kill -9 cycles    each cycle: a run whose worker is killed at a random step under a live
                           service; it must resume from its latest resume point and end with the same
                           final loss as an uninterrupted run measured in the same session (within 1%).
  cancel in each phase     cancel while loading, training, evaluating at a checkpoint, generating for
                           eval_prompts, and exporting: seconds to STOPPED, SIGKILL fallbacks (the
                           worker's exit code), MLflow runs left RUNNING, models registered by a
                           cancelled run.
Random points come from --seed, so a rerun kills at the same steps.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import isolated_home, parse_args, print_table, save_json, skewed_rows, tiny_model, verdict, write_jsonl  # noqa: E402
from _service import ServiceProcess, wait_for, worker_pids  # noqa: E402

TERMINAL = {"COMPLETED", "FAILED", "STOPPED"}


def main() -> None:
    args = parse_args(__doc__, [
        (("--service-kills",), {"type": int, "default": 20}),
        (("--worker-kills",), {"type": int, "default": 10}),
        (("--steps",), {"type": int, "default": 120, "help": "optimizer steps per run"}),
        (("--seed",), {"type": int, "default": 0}),
    ])
    if args.quick:
        args.service_kills, args.worker_kills, args.steps = 1, 1, 30
    rng = random.Random(args.seed)
    figures: dict = {}
    with isolated_home("tunedeck-faults-") as home:
        os.environ["TUNEDECK_RESUME_EVERY_SECONDS"] = "1"
        rows = skewed_rows(48, seed=1)
        tiny_model(home / "models" / "tiny", rows)
        data = write_jsonl(home.parent / "train.jsonl", rows)
        body = {"model": "tiny", "train_data_path": str(data), "register_to": "main.faults.tiny",
                "task_type": "INSTRUCTION_FINETUNE", "training_duration": f"{args.steps}ba", "learning_rate": 1e-3}
        services: list[ServiceProcess] = []
        try:
            figures["service_kills"] = service_kills(home, body, args.service_kills, args.steps, rng, services)
            figures["worker_kills"] = worker_kills(home, body, args.worker_kills, args.steps, rng, services)
            figures["cancel"] = cancel_phases(home, body, services)
        finally:
            for s in services:
                s.stop()
    report(figures)
    save_json(args.json, figures)


def start(home: Path, services: list[ServiceProcess]) -> ServiceProcess:
    services.append(ServiceProcess(home))
    return services[-1]


def history_ok(service: ServiceProcess, name: str, steps: int) -> tuple[int, int]:
    """(lost steps, doubled steps) of a run's train/loss metrics."""
    seen = [s for s, _ in service.losses(name)]
    return len(set(range(1, steps + 1)) - set(seen)), len(seen) - len(set(seen))


def service_kills(home, body, cycles, steps, rng, services) -> dict:
    service = start(home, services)
    out = {"cycles": cycles, "orphans": 0, "lost_steps": 0, "doubled_steps": 0, "not_completed": 0, "reattached": 0,
           "resumed": 0, "restart_seconds": []}
    for i in range(cycles):
        name = service.api("POST", "/api/runs", json=body)["name"]
        at = rng.randint(1, steps - 1)
        wait_for(lambda: len(service.losses(name)) >= at or service.run(name)["status"] in TERMINAL, timeout=1200)
        service.kill9()
        time.sleep(rng.uniform(0, 2))
        started = time.monotonic()
        service = start(home, services)
        out["restart_seconds"].append(time.monotonic() - started)
        run = service.wait_status(name, TERMINAL, timeout=1200)
        wait_for(lambda: not worker_pids(home), timeout=30)
        messages = [e["message"] for e in service.events(name)]
        out["reattached"] += any("re-attached" in m for m in messages)
        out["resumed"] += any(e["type"] == "TRAIN_RESUMED" for e in service.events(name))
        lost, doubled = history_ok(service, name, steps)
        out["lost_steps"] += lost
        out["doubled_steps"] += doubled
        out["not_completed"] += run["status"] != "COMPLETED"
        print(f"  service kill {i + 1}/{cycles} at step ~{at}: {run['status']}, lost {lost}, doubled {doubled}", flush=True)
    out["orphans"] = len(worker_pids(home))
    return out


def worker_kills(home, body, cycles, steps, rng, services) -> dict:
    service = services[-1] if services and services[-1].proc.poll() is None else start(home, services)
    base = service.api("POST", "/api/runs", json=body)["name"]
    service.wait_status(base, TERMINAL, timeout=1200)
    baseline = service.losses(base)[-1][1]
    out = {"cycles": cycles, "baseline_final_loss": baseline, "final_loss_diff_pct": [], "not_completed": 0, "resumed": 0}
    for i in range(cycles):
        name = service.api("POST", "/api/runs", json=body)["name"]
        at = rng.randint(2, steps - 1)
        wait_for(lambda: len(service.losses(name)) >= at, timeout=1200)
        for pid in worker_pids(home):
            os.killpg(pid, signal.SIGKILL)
        run = service.wait_status(name, TERMINAL, timeout=1200)
        out["not_completed"] += run["status"] != "COMPLETED"
        out["resumed"] += any(e["type"] == "TRAIN_RESUMED" for e in service.events(name))
        final = service.losses(name)[-1][1]
        diff = 100 * abs(final - baseline) / baseline
        out["final_loss_diff_pct"].append(diff)
        print(f"  worker kill {i + 1}/{cycles} at step ~{at}: {run['status']}, final loss {final:.4f} "
              f"(uninterrupted {baseline:.4f}, {diff:.3f}%)", flush=True)
    return out


PHASES = {
    # phase: (extra create() fields, the event after which cancel is sent; None = right after STARTED)
    "loading": ({}, None),
    "training": ({}, "TRAIN_UPDATED"),
    "eval at checkpoint": ({"eval_data_path": "TRAIN"}, "CHECKPOINT_SAVED"),
    "generation": ({"eval_prompts": ["Tell me a long story about the model."] * 4}, "EVAL_COMPLETED"),
    "export": ({}, "TRAIN_FINISHED"),
}


def cancel_phases(home, body, services) -> dict:
    from mlflow import MlflowClient

    service = services[-1] if services and services[-1].proc.poll() is None else start(home, services)
    out = {}
    for phase, (extra, after) in PHASES.items():
        req = {**body, **{k: (body["train_data_path"] if v == "TRAIN" else v) for k, v in extra.items()}}
        if phase == "generation":
            req["eval_data_path"] = body["train_data_path"]
        name = service.api("POST", "/api/runs", json=req)["name"]
        wanted = after or "STARTED"
        wait_for(lambda: any(e["type"] == wanted for e in service.events(name)) or service.run(name)["status"] in TERMINAL,
                 timeout=900, interval=0.1)
        sent = time.monotonic()
        service.api("POST", f"/api/runs/{name}/cancel")
        run = service.wait_status(name, TERMINAL, timeout=120)
        seconds = time.monotonic() - sent
        stopped = next((e for e in reversed(service.events(name)) if e["type"] == "STOPPED"), None)
        code = stopped["data"].get("returncode") if stopped else None
        mlflow_status = None
        if run.get("mlflow_run_id"):
            client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
            mlflow_status = client.get_run(run["mlflow_run_id"]).info.status
        out[phase] = {"status": run["status"], "seconds": seconds, "sigkill": code == -9, "returncode": code,
                      "mlflow": mlflow_status, "registered": run.get("registered_model_version") is not None}
        print(f"  cancel during {phase}: {run['status']} in {seconds:.1f} s, exit {code}, MLflow {mlflow_status}", flush=True)
    return out


def report(f: dict) -> None:
    s = f["service_kills"]
    print_table("Service kill -9 mid-training (random step, random pause, restart)", ["figure", "value", "target", "verdict"], [
        ["cycles", s["cycles"], "20", ""],
        ["runs not COMPLETED", s["not_completed"], "0", verdict(s["not_completed"], 0, False)],
        ["orphan workers left", s["orphans"], "0", verdict(s["orphans"], 0, False)],
        ["lost metric steps", s["lost_steps"], "0", verdict(s["lost_steps"], 0, False)],
        ["doubled metric steps", s["doubled_steps"], "0", verdict(s["doubled_steps"], 0, False)],
        ["re-attached / resumed", f"{s['reattached']} / {s['resumed']}", "", ""],
        ["restart to health, median s", statistics.median(s["restart_seconds"]) if s["restart_seconds"] else float("nan"), "", ""],
    ])
    w = f["worker_kills"]
    worst = max(w["final_loss_diff_pct"], default=float("nan"))
    print_table("Worker kill -9 mid-training, service alive (autoresume)", ["figure", "value", "target", "verdict"], [
        ["cycles", w["cycles"], "10", ""],
        ["runs not COMPLETED", w["not_completed"], "0", verdict(w["not_completed"], 0, False)],
        ["resumed from a checkpoint", w["resumed"], str(w["cycles"]), verdict(w["resumed"], w["cycles"])],
        ["worst final-loss difference vs uninterrupted, %", worst, "<= 1", verdict(worst, 1.0, False)],
    ])
    c = f["cancel"]
    print_table("Cancel in each phase", ["phase", "status", "seconds", "SIGKILL", "MLflow run", "registered"], [
        [p, v["status"], v["seconds"], "yes" if v["sigkill"] else "no", v["mlflow"] or "-", "yes" if v["registered"] else "no"]
        for p, v in c.items()
    ])


if __name__ == "__main__":
    main()
