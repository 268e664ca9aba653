"""Memory estimate vs measured: the peak RSS of real training loops next to ``inputs.memory.estimate``.

What is measured, and how: each case runs in a fresh interpreter that first imports what the worker
imports (torch, transformers, PEFT, MLflow, tunedeck's trainer), builds a random model of the given
shape in the run's dtype (as from_pretrained would load it: no float32 detour for a bf16 base), attaches
LoRA with tunedeck's own ``adapters.attach_lora`` (its defaults: rank 16, no dropout, every linear layer) or
not, turns on activation checkpointing when asked, then resets the kernel's high-water mark
(``/proc/self/clear_refs``) and trains as the recipe does: packed rows collated with their
block-diagonal mask, ``loss_sum`` (the chunked loss), bf16 autocast or not, AdamW, two optimizer steps
(the second with two micro-batches, so gradients, AdamW's moments and a micro-batch's activations
coexist). The peak is ``VmHWM`` of that process: training only, runtime included (not the model
build, which the worker's loading replaces). The estimate gets the same settings; the error is
(estimate - measured) / measured: positive = conservative.

    python benchmarks/memory_estimate.py [--quick] [--only smol135-full,qwen05-lora]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PY, parse_args, print_table, save_json  # noqa: E402

MIB = 2**20

SHAPES = {
    "tiny": dict(model_type="llama", vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False),
    # SmolLM2-135M and -360M, Qwen2.5-0.5B: their real shapes, random weights
    "small": dict(model_type="llama", vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=12,
                  num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=False),
    # MLP tensors of 2,048 tokens x 8,192 x 4 bytes = 64 MiB: above glibc's mmap threshold, as in 7B models
    "wide": dict(model_type="llama", vocab_size=8192, hidden_size=1024, intermediate_size=8192, num_hidden_layers=4,
                 num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=True),
    "smol135": dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
    "smol360": dict(model_type="llama", vocab_size=49152, hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                    num_attention_heads=15, num_key_value_heads=5, tie_word_embeddings=True),
    "qwen05": dict(model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                   num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
}

# name: (shape, mode, bf16 autocast, micro-batch tokens, row tokens, examples per row, checkpointing)
CASES = {
    "tiny-full": ("tiny", "full", False, 1024, 256, 4, False),
    "tiny-lora": ("tiny", "lora", False, 1024, 256, 4, False),
    "tiny-full-ckpt": ("tiny", "full", False, 1024, 256, 4, True),
    "smol135-full": ("smol135", "full", False, 1024, 256, 4, False),
    "smol135-full-512": ("smol135", "full", False, 512, 256, 4, False),
    "smol135-full-ckpt": ("smol135", "full", False, 1024, 256, 4, True),
    "smol135-full-row2048": ("smol135", "full", False, 1024, 2048, 1, False),
    "smol135-lora": ("smol135", "lora", False, 1024, 256, 4, False),
    "smol360-full-ckpt": ("smol360", "full", False, 1024, 256, 4, True),
    "smol360-lora": ("smol360", "lora", False, 1024, 256, 4, False),
    "qwen05-lora": ("qwen05", "lora", False, 1024, 256, 4, False),
    "qwen05-lora-512": ("qwen05", "lora", False, 512, 256, 2, False),
    "wide-lora-2048": ("wide", "lora", False, 1024, 2048, 1, False),
    "wide-lora-2048-ckpt": ("wide", "lora", False, 1024, 2048, 1, True),
    "wide-lora-512": ("wide", "lora", False, 512, 256, 2, False),
    # bf16 is emulated on CPUs without bf16 units (~12x slower than float32 here): a smaller model
    "small-full": ("small", "full", False, 512, 256, 2, False),
    "small-full-bf16": ("small", "full", True, 512, 256, 2, False),
    "small-full-ckpt": ("small", "full", False, 512, 256, 2, True),
    "small-lora": ("small", "lora", False, 512, 256, 2, False),
    "small-lora-bf16": ("small", "lora", True, 512, 256, 2, False),
    "qwen05-lora-ckpt": ("qwen05", "lora", False, 512, 512, 2, True),
}
QUICK = ["tiny-full", "tiny-lora"]
ADAPTER = {"type": "lora", "rank": 16, "alpha": 32.0, "dropout": 0.0, "target_modules": None, "quantize_base": None}  # tunedeck's default


def status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def child(case: str) -> None:
    """Runs in its own interpreter: import like the worker, build, reset the peak, train, report."""
    import mlflow  # noqa: F401 - the worker's imports, so the runtime part is the worker's
    import peft  # noqa: F401
    import torch
    import transformers

    import tunedeck.training.recipe  # noqa: F401
    import tunedeck.training.worker  # noqa: F401
    from tunedeck.training import adapters
    from tunedeck.training.loss import loss_sum
    from tunedeck.training.packing import collate, micro_batches
    from tunedeck.training.tokenize import Tokenized

    runtime = status_kib("VmRSS") * 1024
    shape_name, mode, bf16, micro, row, per_row, ckpt = CASES[case]
    cfg = dict(SHAPES[shape_name])
    config_class = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[cfg.pop("model_type")]
    config = config_class(**cfg, max_position_embeddings=4096)
    config._attn_implementation = "sdpa"
    dtype = torch.bfloat16 if bf16 and mode == "lora" else torch.float32  # recipe: LoRA base in the compute dtype
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    model = transformers.AutoModelForCausalLM.from_config(config)
    torch.set_default_dtype(torch.float32)
    model.config.use_cache = False
    if mode == "lora":
        model = adapters.attach_lora(model, ADAPTER, "base")
    if ckpt:
        model.activation_checkpointing_enable()
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, betas=(0.9, 0.95), weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    n = row // per_row

    def rows(count: int):
        return [[Tokenized(ids, ids) for ids in (torch.randint(0, config.vocab_size, (n,), generator=g).tolist() for _ in range(per_row))]
                for _ in range(count)]

    rows_per_micro = max(1, micro // row)
    built = status_kib("VmRSS") * 1024
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts here: training only
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    for step_micro_batches in (1, 2):
        step_rows = rows(rows_per_micro * step_micro_batches)
        count = sum(e.loss_tokens for r in step_rows for e in r)
        for group in micro_batches(step_rows, micro):
            batch = collate(group, 0, torch.bfloat16 if bf16 else torch.float32)
            with autocast:
                loss, _ = loss_sum(model, batch)
            (loss / count).backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    print(json.dumps({"runtime": runtime, "built": built, "peak": status_kib("VmHWM") * 1024,
                      "parameters": sum(p.numel() for p in model.parameters()), "trainable": sum(p.numel() for p in trainable)}))


def run_case(case: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    out = subprocess.run([PY, __file__, "--child", case], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def estimate_case(case: str):
    from tunedeck.inputs.memory import ModelShape, estimate

    shape_name, mode, bf16, micro, row, per_row, ckpt = CASES[case]
    shape = ModelShape.from_config(SHAPES[shape_name])
    return shape, estimate(shape, micro_batch_tokens=micro, row_tokens=row, adapter=ADAPTER if mode == "lora" else None,
                           autocast=bf16, checkpointing=ckpt, device="cpu", dense_mask=per_row > 1)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
        return
    args = parse_args(__doc__, [(("--only",), dict(default=None, help="comma-separated case names"))])
    cases = QUICK if args.quick else (args.only.split(",") if args.only else list(CASES))
    results = []
    for case in cases:
        measured = run_case(case)
        shape, est = estimate_case(case)
        error = (est.total - measured["peak"]) / measured["peak"]
        results.append({"case": case, "parameters": measured["parameters"], "estimated_parameters": shape.parameters,
                        "trainable": measured["trainable"], "measured_mib": measured["peak"] / MIB,
                        "runtime_mib": measured["runtime"] / MIB, "estimate_mib": est.total / MIB, "error": error,
                        "parts_mib": {k: v / MIB for k, v in est.parts.items()}})
        r = results[-1]
        print(f"{case}: measured {r['measured_mib']:,.0f} MiB, estimate {r['estimate_mib']:,.0f} MiB ({100 * error:+.1f}%)", flush=True)
    print_table("Estimated vs measured peak memory (MiB; training loop, runtime included)",
                ["case", "parameters", "trainable", "measured", "estimate", "error", "runtime (measured)", "activations est.", "logits est."],
                [[r["case"], r["parameters"], r["trainable"], r["measured_mib"], r["estimate_mib"], f"{100 * r['error']:+.1f}%",
                  r["runtime_mib"], r["parts_mib"]["activations"], r["parts_mib"]["logits"]] for r in results])
    save_json(args.json, {"cases": results})


if __name__ == "__main__":
    main()
