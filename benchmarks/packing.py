"""Packing: useful tokens/s of tunedeck's training versus padded batches, on length-skewed instruction data.

What is compared, and how:
  * tunedeck: the real recipe (``tunedeck.training.recipe.run`` on a RunSpec made by ``build_spec``, in
    this process): tokenize, pack into rows, block-diagonal masks, per-example shifted targets, AdamW.
    Only its ``train_step`` calls are timed (data prep, MLflow set-up and export are not).
  * padded baseline: plain transformers training on the *same tokenized examples* (taken from the
    recipe's own split), same freshly loaded model, same optimizer settings and the same token budget
    per optimizer step (tunedeck's, default 4,096): examples in shuffled order, a batch grows while
    (examples x longest) fits the budget, ``DataCollatorForSeq2Seq`` pads, the model's own loss.
  * optionally (``--rows 512,1024``) tunedeck again with other packed-row lengths, as an experiment.
  All contestants train in lockstep (``_race.Lockstep``): one step each in turn, so outside load hits
  all alike. Useful tokens = loss-bearing (response) tokens; the first step of each is warm-up.
  "padding" = padding tokens / tokens computed; "attention wasted" = 1 - (sum of example length^2) /
  (sum of row length^2): the share of attention scores computed and then masked out, since a dense
  L x L attention (all CPU sdpa/eager can do with a block-diagonal mask) costs the same masked or not.
  Also checked: a packed row gives each example exactly the per-token losses it has alone.

    python benchmarks/packing.py [--quick] [--rows 512,1024]
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import isolated_home, parse_args, print_table, run_spec, save_json, skewed_rows, tiny_model, verdict, write_jsonl  # noqa: E402
from _race import lap_table, Lockstep, RecipeProbe, rate, wasted  # noqa: E402


def padded_batches(lengths: list[int], budget: int, seed: int) -> list[list[int]]:
    """Shuffled examples, each batch as many as fit ``budget`` tokens once padded to its longest."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    batches, current, longest = [], [], 0
    for i in order:
        if current and (len(current) + 1) * max(longest, lengths[i]) > budget:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, lengths[i])
    return batches + [current] if current else batches


def padded_loop(gate, source: RecipeProbe, model_dir: Path, budget: int, epochs: int, lr: float):
    """Plain transformers training with a padding collator (the baseline)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq

    source.split_ready.wait()
    if source.split is None:
        raise RuntimeError("the recipe failed before its data was packed")
    examples = source.split.examples
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, return_tensors="pt")
    steps = [b for e in range(epochs) for b in padded_batches([len(x) for x in examples], budget, seed=100 + e)]
    gate.begin()
    for k, batch_ids in enumerate(steps, 1):
        group = [examples[i] for i in batch_ids]
        batch = collator([{"input_ids": e.input_ids, "labels": e.labels} for e in group])
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        gate.lap(k / len(steps), kind="step", loss=float(loss.detach()), tokens=sum(len(e) for e in group),
                 loss_tokens=sum(sum(1 for x in e.labels[1:] if x != -100) for e in group),
                 computed=int(batch["input_ids"].numel()),
                 attn_needed=sum(len(e) ** 2 for e in group), attn_computed=int(batch["input_ids"].shape[0] * batch["input_ids"].shape[1] ** 2))


def masking_error(model_dir: Path, split, pad_id: int) -> tuple[float, int]:
    """Largest |loss(token in packed row) - loss(same token, example alone)| over a few packed rows."""
    import torch
    from transformers import AutoModelForCausalLM

    from tunedeck.training.loss import per_example_losses
    from tunedeck.training.packing import collate

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    rows = sorted(split.rows(0), key=len, reverse=True)[:3]
    worst, checked = 0.0, 0
    for row in rows:
        packed = per_example_losses(model, collate([row], pad_id))[0]
        start = 0
        for example in row:
            alone = per_example_losses(model, collate([[example]], pad_id))[0]
            n = len(example)
            worst = max(worst, float((packed[start : start + n] - alone[:n]).abs().max()))
            start += n
            checked += 1
    return worst, checked


def main() -> None:
    args = parse_args(__doc__, [(("--rows",), dict(default="", help="also race tunedeck with packed rows of these lengths (e.g. 512,1024): an experiment"))])
    quick = args.quick
    n_rows, epochs, hidden, layers = (48, 1, 64, 2) if quick else (512, 2, 256, 4)
    budget = 1024 if quick else 4096

    with isolated_home() as home:
        rows = skewed_rows(n_rows, seed=1)
        data = write_jsonl(home / "data" / "train.jsonl", rows)
        model_dir = tiny_model(home / "models" / "tiny", rows, hidden_size=hidden, layers=layers)
        contestants = {"tunedeck (packed)": None}
        for n in (int(x) for x in args.rows.split(",") if x.strip()):
            contestants[f"tunedeck, rows of {n}"] = n
        probes = {name: RecipeProbe(None, pack_tokens=p) for name, p in contestants.items()}

        def tunedeck(k: int, probe: RecipeProbe):
            def loop(gate):
                spec = run_spec(home, model_dir, data, duration=f"{epochs}ep", batch_tokens=budget, name=f"packing-{k}")
                spec.mlflow_tracking_uri = f"sqlite:///{Path(spec.run_dir) / 'mlflow.db'}"  # one store per thread
                probe.run_recipe(spec, gate)
            return loop

        loops = {name: tunedeck(k, probe) for k, (name, probe) in enumerate(probes.items())}
        loops["padded (transformers)"] = lambda gate: padded_loop(gate, probes["tunedeck (packed)"], model_dir, budget, epochs, lr=1e-3)  # lr: no effect on speed
        race = Lockstep()
        race.run(loops)

        main_probe = probes["tunedeck (packed)"]
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        worst, checked = masking_error(model_dir, main_probe.split, pad_id)

    base = rate(race.laps["padded (transformers)"], "loss_tokens")
    table, figures = [], {"masking_max_abs_diff": worst, "examples_checked": checked, "contestants": {}}
    for name, laps in race.laps.items():
        useful = rate(laps, "loss_tokens")
        pad, masked = wasted(laps, "tokens", "computed"), wasted(laps, "attn_needed", "attn_computed")
        row_tokens = probes[name].split.capacity if name in probes else "-"
        figures["contestants"][name] = {"useful_tok_s": useful, "tok_s": rate(laps, "tokens"), "padding": pad,
                                        "attention_wasted": masked, "steps": len(laps), "row_tokens": row_tokens}
        table.append([name, row_tokens, len(laps), rate(laps, "tokens"), useful, f"{100 * pad:.1f}%", f"{100 * masked:.0f}%",
                      f"{useful / base:.2f}x"])
    ratio = figures["contestants"]["tunedeck (packed)"]["useful_tok_s"] / base
    figures["ratio"] = ratio
    print_table(f"Packing vs padding: {n_rows} length-skewed rows x {epochs} epoch(s), {hidden}-wide {layers}-layer Llama, "
                f"{budget:,} tokens per step (lockstep)",
                ["trainer", "row tokens", "steps", "tok/s", "useful tok/s", "padding", "attention wasted", "vs padded"], table)
    print_table("Verdict", ["figure", "value", "target", ""], [
        ["useful tokens/s, tunedeck vs padded", f"{ratio:.2f}x", ">= 2.0x", verdict(ratio, 2.0)],
        [f"packed vs alone, max |token loss diff| ({checked} examples)", f"{worst:.2e}", "<= 1e-4", verdict(worst, 1e-4, False)],
    ])
    figures["laps"] = lap_table(race)
    save_json(args.json, figures)


if __name__ == "__main__":
    main()
