"""Against TRL: tunedeck versus TRL's SFTTrainer on the same data, model and token budget per step.

What is compared, and how:
  * tunedeck: the real recipe (``tunedeck.training.recipe.run``, RunSpec from ``build_spec``), timed
    per ``train_step`` (float32, as the recipe computes on CPU).
  * TRL ``SFTTrainer`` on the *same tokenized examples* (the recipe's own split handed over as a
    pre-tokenized dataset: ``input_ids`` + ``labels``, so both learn exactly the same tokens), the same
    freshly loaded model and learning rate, in five set-ups:
      - defaults: ``SFTConfig`` as it comes (only output_dir, use_cpu, no reporting) -- bf16 and
        gradient checkpointing on, also on CPU;
      - fp32, padded: ``bf16=False, gradient_checkpointing=False`` (the set-up the original design notes call best);
      - fp32, packed: the same with ``packing=True`` (bfd, padding-free rows with position ids);
      - bf16, padded / packed: ``bf16=True, gradient_checkpointing=False`` (bf16 matmuls are ~4x
        faster than fp32 on this CPU, which has AVX512-BF16).
    TRL's best is the fastest of these.
    Token budget per step: the padded set-ups take as many examples per step as tunedeck's steps hold
    on average (same number of steps per epoch); the packed one has tunedeck's row length and rows per step.
  All contestants train in lockstep (``_race.Lockstep``, TRL through a TrainerCallback), one step each
  in turn, each in its own process (Accelerate allows one precision setting per process; and all are
  timed under the same conditions); a step's time runs from its turn to its end (TRL's dataloader and
  collator included).
  tok/s counts real (non-padding) tokens; the first step of each is warm-up.
  Exactness: for each trainer's batch layout, the largest difference between an example's per-token
  losses inside a batch and alone (as trained: ``use_cache=False``).
  Experiments: ``--rows 2048`` also races tunedeck with packed rows of that length; ``--bf16`` with
  bf16 autocast (float32 weights) patched into the recipe's device choice.

    python benchmarks/vs_trl.py [--quick] [--rows 2048] [--bf16]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PY, isolated_home, parse_args, print_table, run_spec, save_json, skewed_rows, tiny_model, verdict, write_jsonl  # noqa: E402
from _race import Lockstep, PipeGate, RecipeProbe, lap_table, rate, remote, reporter_for, wasted  # noqa: E402


def trl_loop(gate, examples: list[dict], plan: dict, context_length: int, model_dir: Path, out: Path, setup: str,
             epochs: int, max_steps: int | None) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    per_step = math.ceil(len(examples) / plan["steps_per_epoch"])
    options = dict(output_dir=str(out), use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True,
                   learning_rate=plan["learning_rate"], num_train_epochs=epochs, per_device_train_batch_size=per_step,
                   max_length=context_length, seed=0)
    if setup != "defaults":
        options.update(bf16=setup.startswith("bf16"), gradient_checkpointing=False)
    if setup.endswith("packed"):
        options.update(packing=True, max_length=plan["row_tokens"], per_device_train_batch_size=plan["rows_per_step"])
    if max_steps:
        options["max_steps"] = max_steps
    dataset = Dataset.from_list(examples)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    trainer = SFTTrainer(model=model, args=SFTConfig(**options), train_dataset=dataset, processing_class=tokenizer)

    counts: list[tuple[int, int, int]] = []
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        mask = batch.get("attention_mask")
        tokens = int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
        counts.append((tokens, int((batch["labels"][:, 1:] != -100).sum()), int(batch["input_ids"].numel())))
        return batch

    trainer.data_collator = counting

    class Lap(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            gate.begin()

        def on_step_end(self, args, state, control, **kw):
            # Accelerate's dataloader collates one batch ahead: step k trained on the k-th batch.
            tokens, loss_tokens, computed = counts[state.global_step - 1]
            gate.lap(state.global_step / state.max_steps, kind="step", tokens=tokens, loss_tokens=loss_tokens, computed=computed)

    trainer.add_callback(Lap())
    trainer.train()
    return {"examples_per_step": options["per_device_train_batch_size"], "max_length": options["max_length"],
            "bf16": trainer.args.bf16, "gradient_checkpointing": trainer.args.gradient_checkpointing,
            "packing": trainer.args.packing}


def token_losses(model, batch: dict) -> "torch.Tensor":
    """Per-token cross-entropy of row 0, aligned with ``labels[1:]`` (0 where no loss)."""
    import torch
    import torch.nn.functional as F

    labels = batch.pop("labels")
    with torch.no_grad():
        logits = model(**batch, use_cache=False).logits[0, :-1].float()
    target = labels[0, 1:]
    return F.cross_entropy(logits, target.clamp(min=0), reduction="none") * (target != -100)


def exactness(model_dir: Path, row: list, pad_id: int) -> dict[str, float]:
    """Max |per-token loss in a batch - alone| over the examples of one of tunedeck's packed rows, laid
    out as tunedeck packs them and as TRL packs (one flattened row) or pads them."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from tunedeck.training.loss import per_example_losses
    from tunedeck.training.packing import collate

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    feats = [{"input_ids": e.input_ids, "labels": e.labels} for e in row]
    alone = [token_losses(model, DataCollatorForLanguageModeling(pad_id)([f])) for f in feats]
    out = {}
    packed = per_example_losses(model, collate([row], pad_id))[0]
    out["tunedeck packed rows"] = _worst(packed, alone, [len(e) for e in row])
    trl_packed = token_losses(model, DataCollatorForLanguageModeling(pad_id, padding_free=True)(feats))
    out["TRL packed (position ids)"] = _worst(torch.cat([trl_packed, torch.zeros(1)]), alone, [len(e) for e in row])
    worst = 0.0
    padded = DataCollatorForLanguageModeling(pad_id)(feats)
    labels = padded.pop("labels")
    with torch.no_grad():
        logits = model(**padded, use_cache=False).logits[:, :-1].float()
    for i, a in enumerate(alone):
        t = labels[i, 1:]
        losses = torch.nn.functional.cross_entropy(logits[i], t.clamp(min=0), reduction="none") * (t != -100)
        worst = max(worst, float((losses[: len(a)] - a).abs().max()))
    out["TRL padded"] = worst
    return out


def _worst(packed, alone, lengths) -> float:
    worst, start = 0.0, 0
    for a, n in zip(alone, lengths):
        worst = max(worst, float((packed[start : start + n - 1] - a[: n - 1]).abs().max()))
        start += n
    return worst


def tunedeck_child(run_dir: Path, work: Path, pack_tokens: int, autocast: str = "") -> None:
    """In a child process, like the TRL set-ups: the real recipe on the RunSpec in ``run_dir``.

    The main contestant (no ``pack_tokens`` override) hands its tokenized examples and plan to the
    TRL children through ``work/input.json`` as soon as it has planned its steps.
    """
    from tunedeck.inputs.spec import RunSpec
    from tunedeck.training.recipe import run

    gate = PipeGate.from_env()
    probe = RecipeProbe(gate, pack_tokens=pack_tokens or None, autocast=autocast or None).attach()

    def hand_over() -> None:
        probe.planned.wait()
        if pack_tokens or autocast or probe.split is None:
            return
        row = max(probe.split.rows(0), key=len)  # the packed row holding the most examples: for the exactness check
        tmp = work / "input.json.tmp"
        tmp.write_text(json.dumps({
            "examples": [{"input_ids": e.input_ids, "labels": e.labels} for e in probe.split.examples],
            "plan": probe.plan, "context_length": probe.split.context_length, "exact_row": [[e.input_ids, e.labels] for e in row]}))
        tmp.replace(work / "input.json")

    threading.Thread(target=hand_over, daemon=True).start()
    try:
        run(RunSpec.load(run_dir / "spec.json"), reporter_for(probe))
    finally:
        probe.planned.set()
    gate.result({"plan": probe.plan})


def main() -> None:
    args = parse_args(__doc__, [(("--rows",), dict(default="", help="also race tunedeck with packed rows of these lengths: an experiment")),
                                (("--child",), dict(help=argparse.SUPPRESS)), (("--work",), dict(type=Path, help=argparse.SUPPRESS)),
                                (("--max-steps",), dict(type=int, default=0, help=argparse.SUPPRESS)),
                                (("--run-dir",), dict(type=Path, help=argparse.SUPPRESS)), (("--pack",), dict(type=int, default=0, help=argparse.SUPPRESS)),
                                (("--model",), dict(type=Path, help=argparse.SUPPRESS)), (("--epochs",), dict(type=int, help=argparse.SUPPRESS)),
                                (("--bf16",), dict(action="store_true", help="also race tunedeck with bf16 autocast on CPU: an experiment")),
                                (("--autocast",), dict(default="", help=argparse.SUPPRESS))])
    if args.child == "tunedeck":
        return tunedeck_child(args.run_dir, args.work, args.pack, args.autocast)
    if args.child:
        job = json.loads((args.work / "input.json").read_text())
        gate = PipeGate.from_env()
        return gate.result(trl_loop(gate, job["examples"], job["plan"], job["context_length"], args.model,
                                    args.work / args.child, args.child, args.epochs, args.max_steps or None))
    quick = args.quick
    n_rows, epochs, hidden, layers, default_steps = (32, 1, 64, 2, 2) if quick else (256, 2, 256, 4, None)
    budget = 1024 if quick else None  # None: tunedeck's default tokens per step

    with isolated_home() as home:
        from transformers import AutoTokenizer

        from tunedeck.training.tokenize import Tokenized

        rows = skewed_rows(n_rows, seed=2)
        data = write_jsonl(home / "data" / "train.jsonl", rows)
        model_dir = tiny_model(home / "models" / "tiny", rows, hidden_size=hidden, layers=layers)
        work = home / "work"
        work.mkdir()
        me = str(Path(__file__).resolve())

        def tunedeck(k: int, pack: int, autocast: str = ""):
            spec = run_spec(home, model_dir, data, duration=f"{epochs}ep", batch_tokens=budget, name=f"vs-trl-{k}")
            # One MLflow store per contestant: two workers migrating a fresh SQLite store at once collide.
            spec.mlflow_tracking_uri = f"sqlite:///{Path(spec.run_dir) / 'mlflow.db'}"
            spec.save(Path(spec.run_dir) / "spec.json")
            cmd = [PY, me, "--child", "tunedeck", "--run-dir", spec.run_dir, "--work", str(work), "--pack", str(pack),
                   "--autocast", autocast]
            return remote(cmd, Path(spec.run_dir) / "bench.log")

        def trl(setup: str, steps: int | None):
            def loop(gate):
                while not (work / "input.json").exists():  # the main tunedeck contestant writes it once planned
                    if "tunedeck" in gate.race._finished:
                        raise RuntimeError("tunedeck failed before planning its steps")
                    time.sleep(0.1)
                cmd = [PY, me, "--child", setup, "--work", str(work), "--model", str(model_dir), "--epochs", str(epochs),
                       "--max-steps", str(steps or 0)]
                return remote(cmd, work / f"{setup}.log")(gate)
            return loop

        loops = {"tunedeck": tunedeck(0, 0)}
        for k, n in enumerate((int(x) for x in args.rows.split(",") if x.strip()), 1):
            loops[f"tunedeck, rows of {n}"] = tunedeck(k, n)
        if args.bf16:
            loops["tunedeck, bf16 autocast"] = tunedeck(len(loops), 0, "bfloat16")
        setups = {"TRL defaults (bf16, grad. ckpt)": ("defaults", default_steps),
                  "TRL fp32, padded": ("padded", None), "TRL fp32, packed": ("packed", None),
                  "TRL bf16, padded": ("bf16-padded", None), "TRL bf16, packed": ("bf16-packed", None)}
        for name, (setup, steps) in setups.items():
            loops[name] = trl(setup, steps)
        race = Lockstep()
        configs = race.run(loops)
        job = json.loads((work / "input.json").read_text())
        tok = AutoTokenizer.from_pretrained(model_dir)
        row = [Tokenized(ids, labels) for ids, labels in job["exact_row"]]
        exact = exactness(model_dir, row, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)

    plans = {name: (configs.get(name) or {}).get("plan") for name in race.laps if name.startswith("tunedeck")}
    figures: dict = {"contestants": {}, "exactness": exact, "plan": job["plan"]}
    best_name = max((n for n in race.laps if n.startswith("TRL")), key=lambda n: rate(race.laps[n], "tokens"))
    best = rate(race.laps[best_name], "tokens")
    table = []
    for name, laps in race.laps.items():
        cfg = {} if name in plans else (configs.get(name) or {})
        tps = rate(laps, "tokens")
        pad = wasted(laps, "tokens", "computed")
        figures["contestants"][name] = {"tok_s": tps, "useful_tok_s": rate(laps, "loss_tokens"), "steps": len(laps), "padding": pad, **cfg}
        layout = (f"rows of {plans[name]['row_tokens']:,}, ~{plans[name]['rows_per_step']} per step" if name in plans
                  else f"rows of {cfg['max_length']:,} x {cfg['examples_per_step']}, flattened" if cfg.get("packing")
                  else f"{cfg['examples_per_step']} examples, padded")
        table.append([name, layout, len(laps), tps, rate(laps, "loss_tokens"), f"{100 * pad:.1f}%", f"{tps / best:.2f}x"])
    ratio = figures["contestants"]["tunedeck"]["tok_s"] / best
    figures.update(ratio_vs_best=ratio, best_trl=best_name)
    print_table(f"tunedeck vs TRL SFTTrainer: {n_rows} length-skewed prompt/completion rows x {epochs} epoch(s), "
                f"{hidden}-wide {layers}-layer Llama (lockstep, each in its own process)",
                ["trainer", "step layout", "steps", "tok/s", "useful tok/s", "padding", f"vs {best_name}"], table)
    print_table("Per-example losses inside a batch vs alone, as trained (max |diff|)", ["layout", "max diff", "exact (<= 1e-4)"],
                [[k, f"{v:.2e}", "yes" if v <= 1e-4 else "NO"] for k, v in exact.items()])
    print_table("Verdict", ["figure", "value", "target", ""], [
        [f"tok/s, tunedeck vs {best_name}", f"{ratio:.2f}x", ">= 1.5x", verdict(ratio, 1.5)],
        ["tunedeck per-example losses exact", f"{exact['tunedeck packed rows']:.1e}", "<= 1e-4", verdict(exact["tunedeck packed rows"], 1e-4, False)],
    ])
    figures["laps"] = lap_table(race)
    save_json(args.json, figures)


if __name__ == "__main__":
    main()
