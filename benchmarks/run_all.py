"""Run every benchmark, each in a fresh interpreter, then print one summary of the headline figures.

    python benchmarks/run_all.py [--quick] [--only packing,overhead] [--out DIR]

Each script prints its own tables as it goes and writes its figures to DIR/<script>.json (default: a
``tunedeck-bench-results`` folder in the system temp dir). ``make bench`` runs this.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import print_table  # noqa: E402

SCRIPTS = [
    ("client_service", "client and service costs"),
    ("packing", "packing vs padded batches"),
    ("overhead", "worker overhead vs bare PyTorch"),
    ("vs_trl", "tunedeck vs TRL SFTTrainer"),
    ("hardware", "FLOP/s vs fp32 matmul peak"),
    ("memory", "peak memory vs floor"),
    ("scale", "0.5B-7B Llama, full and LoRA, vs bare loops"),
    ("estimate", "estimate before Start vs the demo run's actual time"),
    ("faults", "service and worker kill -9 cycles, cancel in each phase"),
]


def headlines(name: str, f: dict) -> list[list[str]]:
    """(figure, value, target) rows of one script's JSON."""
    if name == "client_service":
        last = f["events"][-1]
        return [["import tunedeck / import ipywidgets", f"{f['import']['ratio']:.2f}x", "<= 1.2x"],
                ["torch imported by `import tunedeck`", "yes" if "torch" in f["import"]["heavy_modules"] else "no", "no"],
                ["create() p50 / p99 (warm service)", f"{f['create']['p50_ms']:.1f} / {f['create']['p99_ms']:.1f} ms", ""],
                [f"get_events poll p99 at {last['events']:,} events", f"{max(last['poll10_p99_ms'], last['empty_p99_ms']):.1f} ms", "<= 10 ms, flat"],
                [f"poll p50 at {last['events']:,} vs {f['events'][0]['events']:,} events",
                 f"{last['poll10_p50_ms'] / f['events'][0]['poll10_p50_ms']:.2f}x", "~1x"],
                [f"full event listing at {last['events']:,} events", f"{last['full_s']:.2f} s", ""]]
    if name == "packing":
        return [["useful tok/s, tunedeck vs padded", f"{f['ratio']:.2f}x", ">= 2.0x"],
                ["padding fraction, padded baseline", f"{100 * f['contestants']['padded (transformers)']['padding']:.0f}%", ""],
                ["packed vs alone, max token-loss diff", f"{f['masking_max_abs_diff']:.1e}", "<= 1e-4"]]
    if name == "overhead":
        return [["worker tok/s vs bare loop", f"{f['ratio']:.3f}x", ">= 0.95x"]]
    if name == "vs_trl":
        return [[f"tok/s vs TRL's best here ({f['best_trl']})", f"{f['ratio_vs_best']:.2f}x", ">= 1.5x"],
                ["tunedeck per-example losses, max diff", f"{f['exactness']['tunedeck packed rows']:.1e}", "<= 1e-4"]]
    if name == "hardware":
        t = f["contestants"]["tunedeck"]
        return [[f"MFU, {f['model']}", f"{100 * t['mfu']:.0f}%", ">= 70%"],
                [f"HFU (executed FLOPs), {f['model']}", f"{100 * t['hfu']:.0f}%", ""]]
    if name == "memory":
        return [[f"peak RSS, {r['model']}", f"{r['peak_mib']:,.0f} MiB (floor {r['floor_mib']:,.0f} + runtime {r['runtime_mib']:,.0f})", ""]
                for r in f["runs"]]
    if name == "scale":
        return scale_headlines(f)
    if name == "estimate":
        first, last = f["rounds"][0], f["rounds"][-1]
        rows = [[f"demo ({f['model']}): actual / estimated time, first estimate (probe)", f"{first['ratio']:.2f}x", "0.7x-1.3x"]]
        if len(f["rounds"]) > 1:
            rows.append([f"... after {len(f['rounds']) - 1} run(s) taught the cache", f"{last['ratio']:.2f}x", "0.7x-1.3x"])
        rows.append(["tokens/epoch and steps, estimate = worker", "yes" if f["exact_plan"] else "no", "yes"])
        return rows
    if name == "faults":
        s, w, c = f["service_kills"], f["worker_kills"], f["cancel"]
        worst = max(w["final_loss_diff_pct"], default=float("nan"))
        return [[f"service kill -9 x{s['cycles']}: orphans / lost / doubled steps / not COMPLETED",
                 f"{s['orphans']} / {s['lost_steps']} / {s['doubled_steps']} / {s['not_completed']}", "0 / 0 / 0 / 0"],
                [f"worker kill -9 x{w['cycles']}: resumed / worst final-loss diff", f"{w['resumed']} / {worst:.3f}%", f"{w['cycles']} / <= 1%"],
                ["cancel, 5 phases: slowest STOPPED / SIGKILLs / MLflow left RUNNING",
                 f"{max(v['seconds'] for v in c.values()):.1f} s / {sum(v['sigkill'] for v in c.values())} / "
                 f"{sum(v['mlflow'] == 'RUNNING' for v in c.values())}", "<= 5 s / 0 / 0"]]
    return []


def scale_headlines(f: dict) -> list[list[str]]:
    rows = [[f"largest size trained, {'full fine-tuning' if mode == 'full' else 'LoRA'}", v["largest"] or "none",
             "1B" if mode == "full" else "7B"] for mode, v in f["largest"].items()]
    for r in f["runs"]:
        t, b = r["tunedeck"], r.get("bare") or {}
        if t.get("status") == "completed" and b.get("status") == "completed" and t.get("tok_s") and t.get("peak_steps_mib"):
            target = ">= 0.95x / <= 1.1x" if (r["size"], r["mode"]) == ("7B", "lora") else ""
            rows.append([f"{r['size']} {r['mode']}: tok/s / peak RSS vs bare loop ({t['peak_steps_mib'] / 1024:.1f} GiB)",
                         f"{t['tok_s'] / b['tok_s']:.2f}x / {t['peak_steps_mib'] / b['peak_mib']:.2f}x", target])
    smol = f.get("smollm2") or {}
    for key, what, target in (("lora_vs_full_peak", "LoRA / full peak RSS", "<= 0.5x"), ("lora_vs_full_tok_s", "LoRA / full tok/s", ">= 1.3x"),
                              ("auto_vs_fp32_tok_s", "default precision / fp32 tok/s", ">= 1.7x")):
        v = smol.get(key)
        if v is not None and v == v:
            rows.append([f"{smol['model']}: {what}", f"{v:.2f}x", target])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks every script runs")
    parser.add_argument("--only", default="", help="comma-separated script names")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "tunedeck-bench-results")
    args = parser.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    args.out.mkdir(parents=True, exist_ok=True)
    summary, failed = [], []
    for name, what in SCRIPTS:
        if only and name not in only:
            continue
        print(f"\n=== {name}: {what} ===", flush=True)
        out = args.out / f"{name}.json"
        out.unlink(missing_ok=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / f"{name}.py"), "--json", str(out), *(["--quick"] if args.quick else [])])
        seconds = time.perf_counter() - started
        if code != 0 or not out.exists():
            failed.append(name)
            summary.append([name, "FAILED", f"exit code {code}", "", f"{seconds:.0f}"])
            continue
        try:
            rows = headlines(name, json.loads(out.read_text()))
        except (KeyError, ValueError, TypeError) as error:  # figures of an unexpected shape: say so, go on
            rows = [["(could not read the figures)", repr(error), ""]]
        for figure, value, target in rows:
            summary.append([name, figure, value, target, "" if seconds is None else f"{seconds:.0f}"])
            name, seconds = "", None  # once per script
    print_table("Summary" + (" (--quick: figures mean little)" if args.quick else ""), ["benchmark", "figure", "value", "target", "s"], summary)
    print(f"\nfigures: {args.out}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
