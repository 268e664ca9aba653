"""Estimate vs actual: the demo's run (widgets/tunedeck/demo.py: SmolLM2-135M-Instruct, 20 chat rows, 6 epochs,
eval data and an eval prompt) estimated before Start, then created and followed to COMPLETED.

    python benchmarks/estimate.py [--quick] [--rounds 2] [--json FILE]

Through the public client on a launcher-started service in a fresh state dir: ``estimate(params)`` (the
first time for the model, a throughput probe of a few real training steps), ``record_estimate``,
``fm.create(**params)``, ``get_events(follow=True)``, then ``run_estimate`` (the run's own time, started to
completed, against the estimate). Round 1 is the estimate a new user gets (probe only); round 2 is the
same run estimated after round 1 taught the cache its measured tok/s and its time outside training.
Target: |actual / estimated - 1| <= 30%. Tokens per epoch and steps are compared too (they must be equal).
--quick: the demo's tiny model and 20 steps (seconds to a minute; figures mean little).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import isolated_home, parse_args, print_table, save_json  # noqa: E402


def measure(quick: bool, rounds: int, home: Path) -> dict[str, Any]:
    from tunedeck import demo
    from tunedeck import foundation_model as fm
    from tunedeck.client.http import get_client

    demo.write_dataset()
    model, options = demo.pick_model(None) if not quick else _tiny(demo)
    params = {"model": fm._model_path(model), "train_data_path": fm._data_path(demo.DATA_PATH),
              "eval_data_path": fm._data_path(demo.EVAL_PATH), "register_to": "main.demo",
              "task_type": "CHAT_COMPLETION", "eval_prompts": [demo.FACTS[0][0]], **options}
    client = get_client()
    results = []
    for k in range(1, rounds + 1):
        load_before = os.getloadavg()
        estimate, asked = _estimate(client, params)
        if not estimate.get("ok"):
            raise SystemExit(f"no estimate: {estimate.get('message')}")
        print(f"round {k}: {estimate['message']} (answered in {asked:.1f} s)", flush=True)
        run = fm.create(**params)
        client.record_estimate(run.name, estimate)
        events = fm.get_events(run, follow=True)
        if events[-1].type != "COMPLETED":
            raise SystemExit(f"run {run.name} ended {events[-1].type}: {events[-1].message}")
        record = client.run_estimate(run.name)
        reported = {e.type: e.data for e in events}
        actual = record["actual"]
        load_after = os.getloadavg()
        results.append({
            "round": k, "run": run.name, "model": model, "estimate_seconds": estimate["seconds"],
            "estimate_train_seconds": estimate["train_seconds"], "estimate_other_seconds": estimate["other_seconds"],
            "actual_seconds": actual["seconds"], "ratio": record["ratio"],
            "estimate_tok_s": estimate["tokens_per_second"], "actual_tok_s": actual["tokens_per_second"],
            "throughput_source": estimate["throughput_source"], "probe_seconds": estimate["probe_seconds"],
            "estimate_answer_seconds": round(asked, 2),
            "tokens_per_epoch": [estimate["tokens_per_epoch"], reported["DATA_VALIDATED"]["tokens"]],
            "total_steps": [estimate["total_steps"], reported["MODEL_INITIALIZED"]["total_steps"]],
            "peak_memory_estimate_gib": round((estimate["peak_memory_bytes"] or 0) / 2**30, 2),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
        })
    print_table("Estimate vs actual, the demo's run (time from started to completed)",
                ["round", "estimated", "took", "actual / estimated", "tok/s est. / measured", "source",
                 "tokens/epoch, steps (est. = worker)", "load avg 1/5/15 min after"],
                [_row(r) for r in results])
    return {"model": model, "rounds": results, "first_ratio": results[0]["ratio"], "last_ratio": results[-1]["ratio"],
            "exact_plan": all(_exact(r) for r in results)}


def _exact(r: dict[str, Any]) -> bool:
    return r["tokens_per_epoch"][0] == r["tokens_per_epoch"][1] and r["total_steps"][0] == r["total_steps"][1]


def _row(r: dict[str, Any]) -> list[Any]:
    return [r["round"],
            f"{r['estimate_seconds']:.1f} s (train {r['estimate_train_seconds']:.1f} + rest {r['estimate_other_seconds']:.1f})",
            f"{r['actual_seconds']:.1f} s", f"{r['ratio']:.2f}x", f"{r['estimate_tok_s']:.0f} / {r['actual_tok_s']:.0f}",
            r["throughput_source"], "yes" if _exact(r) else "NO", " / ".join(f"{x:.1f}" for x in r["load_average_after"])]


def _estimate(client, params: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """The service's estimate and how long it took, from the first ask to the answer. The first one for
    SmolLM2 converts its GGUF file once and probes the throughput, each a step of its own with its own
    timeout: while one goes on the service answers ``pending`` with what it is doing, and this asks again."""
    started = time.monotonic()
    while True:
        estimate = client.estimate(params)
        if not estimate.get("pending"):
            return estimate, time.monotonic() - started
        print(f"  {estimate['message']}", flush=True)
        time.sleep(5)


def _tiny(demo) -> tuple[str, dict]:
    from tunedeck import config
    from tunedeck.training.tiny import build_tiny_model

    texts = [t for q, a, _, ps in demo.FACTS for t in (q, a, *ps)]
    build_tiny_model(config.models_root() / demo.TINY_MODEL, texts)
    return demo.TINY_MODEL, {"training_duration": "20ba", "learning_rate": 3e-3, "context_length": 256}


def _stop_service(home: Path) -> None:
    try:
        pid = json.loads((home / "service.json").read_text())["pid"]
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, KeyError):
        pass


def main() -> None:
    args = parse_args(__doc__, [(("--rounds",), {"type": int, "default": 2, "help": "runs estimated and made (default 2)"})])
    with isolated_home("tunedeck-bench-estimate-") as home:
        try:
            figures = measure(args.quick, max(1, args.rounds), home)
        finally:
            _stop_service(home)
    save_json(args.json, figures)


if __name__ == "__main__":
    main()
