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
        started = time.monotonic()
        estimate = client.estimate(params)
        asked = time.monotonic() - started
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
        })
    print_table("Estimate vs actual, the demo's run (time from started to completed)",
                ["round", "estimated", "took", "actual / estimated", "tok/s est. / measured", "source", "tokens/epoch, steps (est. = worker)"],
                [[r["round"], f"{r['estimate_seconds']:.1f} s (train {r['estimate_train_seconds']:.1f} + rest {r['estimate_other_seconds']:.1f})",
                  f"{r['actual_seconds']:.1f} s", f"{r['ratio']:.2f}x",
                  f"{r['estimate_tok_s']:.0f} / {r['actual_tok_s']:.0f}", r["throughput_source"],
                  "yes" if r["tokens_per_epoch"][0] == r["tokens_per_epoch"][1] and r["total_steps"][0] == r["total_steps"][1] else "NO"]
                 for r in results])
    return {"model": model, "rounds": results, "first_ratio": results[0]["ratio"], "last_ratio": results[-1]["ratio"],
            "exact_plan": all(r["tokens_per_epoch"][0] == r["tokens_per_epoch"][1] and r["total_steps"][0] == r["total_steps"][1]
                              for r in results)}


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
        # the first estimate of SmolLM2 converts its GGUF file once (as the first run would): past the
        # data check's default 120 s on this busy machine
        os.environ.setdefault("TUNEDECK_DATA_CHECK_TIMEOUT", "900")
        try:
            figures = measure(args.quick, max(1, args.rounds), home)
        finally:
            _stop_service(home)
    save_json(args.json, figures)


if __name__ == "__main__":
    main()
