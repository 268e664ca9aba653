"""Hardware use: achieved training FLOP/s against this machine's fp32 matmul peak, measured in the same run.

What is compared, and how:
  * tunedeck: the real recipe (``tunedeck.training.recipe.run``, RunSpec from ``build_spec``, in this
    process) fully fine-tuning SmolLM2-135M-Instruct (``--quick``: a tiny Llama) on length-skewed
    instruction data; each ``train_step`` is timed; the first is warm-up.
  * peak: float32 ``torch.mm`` of two n x n matrices (n = 2048), on the same threads, one
    measurement after every training step (lockstep, ``_race.Lockstep``): the median is the peak the
    training steps saw, the best is the machine's best moment.
  Achieved FLOP/s, two ways:
    MFU  = (6 x parameters x tokens + attention 12 x layers x d_model x sum of example_length^2) / s
           (the usual model-FLOPs convention; attention within each example, causal half not discounted)
    HFU  = FLOPs the CPU really executed / s: 6 x (parameters - vocab x d_model) x tokens,
           + 6 x vocab x d_model x loss tokens (tunedeck projects only loss-bearing positions onto the
           vocabulary), + attention over whole packed rows (a dense L x L block per row, masked or not).
  Target: MFU >= 70% on SmolLM2-135M full fine-tuning.
  Experiments: ``--rows 2048`` (other packed-row lengths), ``--bf16`` (bf16 autocast patched into the
  recipe's device choice, measured against a bf16 matmul peak taken the same way).

    python benchmarks/hardware.py [--quick] [--steps 5] [--rows 2048] [--bf16]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import isolated_home, median, parse_args, print_table, run_spec, save_json, skewed_rows, smollm2_folder, tiny_model, verdict, write_jsonl  # noqa: E402
from _race import lap_table, Lockstep, RecipeProbe  # noqa: E402


def matmul_peak(gate, race: Lockstep, watch: list[str], n: int, dtype: str = "float32", repeats: int = 3) -> list[float]:
    """One matmul measurement (GFLOP/s) per turn, right after each step of the ``watch``ed contestants."""
    import torch

    a, b = torch.randn(n, n, dtype=getattr(torch, dtype)), torch.randn(n, n, dtype=getattr(torch, dtype))
    a @ b
    found = []
    gate.begin()
    while True:
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        found.append(2 * n**3 * repeats / (time.perf_counter() - started) / 1e9)
        behind = min(race._progress[w] for w in watch)  # the training contestants' progress
        done = behind >= 1 or all(w in race._finished for w in watch)
        gate.lap(1.0 if done else behind + 1e-9, kind="peak")  # just ahead of them: next turn after their next step
        if done:
            return found


def flops(laps, cfg: dict, params: int) -> tuple[float, float, float]:
    """(model FLOPs, executed FLOPs, seconds) over the timed steps (first one left out)."""
    layers, d, vocab = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]
    use = laps[1:] if len(laps) > 1 else laps
    tokens = sum(lap.info["tokens"] for lap in use)
    loss_tokens = sum(lap.info["loss_tokens"] for lap in use)
    model = 6 * params * tokens + 12 * layers * d * sum(lap.info["attn_needed"] for lap in use)
    executed = (6 * (params - vocab * d) * tokens + 6 * vocab * d * loss_tokens
                + 12 * layers * d * sum(lap.info["attn_computed"] for lap in use))
    return model, executed, sum(lap.seconds for lap in use)


def main() -> None:
    args = parse_args(__doc__, [(("--steps",), dict(type=int, default=5, help="optimizer steps to time (the first is warm-up)")),
                                (("--rows",), dict(default="", help="also race tunedeck with packed rows of these lengths: an experiment")),
                                (("--bf16",), dict(action="store_true", help="also race tunedeck with bf16 autocast, and measure the bf16 matmul peak"))])
    quick = args.quick
    steps = 3 if quick else args.steps
    with isolated_home() as home:
        rows = skewed_rows(64 if quick else 256, seed=4)
        data = write_jsonl(home / "data" / "train.jsonl", rows)
        model_dir = None if quick else smollm2_folder()
        model_name = "SmolLM2-135M-Instruct"
        if model_dir is None:
            model_dir = tiny_model(home / "models" / "tiny", rows, hidden_size=128 if quick else 256, layers=2 if quick else 4)
            model_name = "tiny Llama (SmolLM2 not installed)" if not quick else "tiny Llama (--quick)"
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
        budget = 1024 if quick else None
        contestants = {"tunedeck": (None, None)}
        for n in (int(x) for x in args.rows.split(",") if x.strip()):
            contestants[f"tunedeck, rows of {n}"] = (n, None)
        if args.bf16:
            contestants["tunedeck, bf16 autocast"] = (None, "bfloat16")
        probes = {name: RecipeProbe(None, pack_tokens=p, autocast=a) for name, (p, a) in contestants.items()}

        def tunedeck(k: int, probe: RecipeProbe):
            def loop(gate):
                spec = run_spec(home, Path(model_dir), data, duration=f"{steps}ba", batch_tokens=budget, name=f"hw-{k}")
                spec.mlflow_tracking_uri = f"sqlite:///{Path(spec.run_dir) / 'mlflow.db'}"
                probe.run_recipe(spec, gate)
            return loop

        race = Lockstep()
        loops = {name: tunedeck(k, probe) for k, (name, probe) in enumerate(probes.items())}
        n = 512 if quick else 2048
        loops["fp32 matmul peak"] = lambda gate: matmul_peak(gate, race, list(probes), n)
        if args.bf16:
            loops["bf16 matmul peak"] = lambda gate: matmul_peak(gate, race, list(probes), n, "bfloat16")
        results = race.run(loops)

    peaks = {k.split()[0]: (median(v), max(v), len(v)) for k, v in results.items() if k.endswith("matmul peak")}
    peak_med, peak_best = peaks["fp32"][:2]
    table, figures = [], {"model": model_name, "peak_gflops_median": peak_med, "peak_gflops_best": peak_best,
                          "peaks": peaks, "contestants": {}}
    for name, probe in probes.items():
        laps = race.laps[name]
        params = int(probe.plan["parameters"])
        model, executed, seconds = flops(laps, cfg, params)
        tps = sum(lap.info["tokens"] for lap in laps[1:]) / seconds
        own = peaks["bf16"][0] if probe.autocast else peak_med  # against the peak of the precision it computes in
        mfu, hfu = model / seconds / 1e9 / own, executed / seconds / 1e9 / own
        figures["contestants"][name] = {"tok_s": tps, "model_gflops": model / seconds / 1e9, "executed_gflops": executed / seconds / 1e9,
                                        "mfu": mfu, "hfu": hfu, "mfu_vs_fp32_peak": model / seconds / 1e9 / peak_med,
                                        "mfu_vs_best_peak": model / seconds / 1e9 / peak_best,
                                        "row_tokens": probe.plan["row_tokens"], "parameters": params}
        table.append([name, probe.plan["row_tokens"], len(laps) - 1, tps, model / seconds / 1e9, "bf16" if probe.autocast else "fp32",
                      f"{100 * mfu:.0f}%", executed / seconds / 1e9, f"{100 * hfu:.0f}%"])
    print_table(f"Hardware use: {model_name} ({figures['contestants']['tunedeck']['parameters']:,} parameters), full fine-tuning; "
                + "; ".join(f"{k} matmul peak {m:.0f} GFLOP/s median / {b:.0f} best ({c} measurements)" for k, (m, b, c) in peaks.items()),
                ["trainer", "row tokens", "timed steps", "tok/s", "model GFLOP/s", "vs peak", "MFU", "executed GFLOP/s", "HFU"], table)
    mfu = figures["contestants"]["tunedeck"]["mfu"]
    print_table("Verdict", ["figure", "value", "target", ""], [
        [f"MFU on {model_name} (vs median peak)", f"{100 * mfu:.0f}%", ">= 70%", verdict(mfu, 0.70)],
    ])
    figures["laps"] = lap_table(race)
    save_json(args.json, figures)


if __name__ == "__main__":
    main()
