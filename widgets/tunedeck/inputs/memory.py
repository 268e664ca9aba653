"""How much memory a training run needs, estimated before anything is loaded, and whether it fits.

Pure Python (no torch): the service uses it to refuse a run at create() time, the worker to plan the
run (activation checkpointing, micro-batch size) right before it loads the weights.

    ModelShape      a decoder-only transformer's sizes, from its config.json (and safetensors headers)
    estimate()      peak memory of one training process for given settings, with a breakdown
    plan_memory()   the fastest settings that fit the memory available, or MemoryShortfall saying
                    how much the run needs, how much there is, and what would fit
    available_memory()   what this machine can still give a process (MemAvailable, cgroup limit,
                    TUNEDECK_MEMORY_LIMIT)

What the estimate counts (peak resident memory of the process, CPU; GPU memory on CUDA):

    weights      every parameter, float32 for full fine-tuning; under LoRA the frozen base in the
                 compute dtype (bf16 when the run trains in bf16) and the adapters in float32
    gradients    one per trainable parameter, in its dtype (all of them from the 2nd micro-batch of a
                 step on: gradient accumulation keeps them while the next micro-batch runs)
    optimizer    AdamW's two moments per trainable parameter
    weight copies  bf16 autocast over float32 weights keeps a bf16 copy of each matrix for backward
    activations  what autograd keeps for backward: per token and decoder layer, a linear function of
                 the hidden, attention, key/value and MLP widths measured for each training mode
                 (``ACTIVATION_BYTES``), plus the packing mask (B x L x L) and the backward's own
                 temporaries (about one layer); with activation checkpointing only each layer's
                 input is kept and one layer at a time is recomputed. On CPU, plus what glibc's
                 malloc keeps of the backward's freed temporaries (``RETAINED_BYTES``: tensors under
                 32 MiB come from its heaps, which do not give memory back mid-step)
    logits       the loss: one chunk of (positions x vocabulary) logits with its log-softmax and
                 gradients (``training/loss.py`` never materializes more), or all of them for
                 architectures it cannot chunk
    runtime      the worker's interpreter, torch, transformers, PEFT, MLflow, and the first step's
                 one-off set-up: measured here
    The optimizer step's temporaries (two copies of the largest trainable tensor for CPU AdamW) replace
    activations + logits when larger: they never coexist.
    ddp buckets  with several processes (``num_devices`` > 1, training/distributed.py), each one's DDP
                 keeps its gradients a second time in its all-reduce buckets (gradient_as_bucket_view off)

Several processes (``processes``): data-parallel replicas, each holding all of the above. On CPU they
share the machine's memory: the run needs processes x the estimate, plus torchrun's launcher
(``LAUNCHER_BYTES``, measured here: 224 MiB). On GPUs each process has its own GPU's memory, so each
estimate is checked against one GPU.

The constants come from measurements on this machine (``benchmarks/memory_estimate.py``: peak RSS of
real training loops, random Llama/Qwen2 models of 3M-500M parameters, full and LoRA, fp32 and bf16,
with and without checkpointing, rows on both sides of glibc's mmap threshold) and err on the high
side: from 1% under to 20% over the measured peaks of 21 cases (up to 22% over for 3M-parameter
models, where the runtime dominates). Measured on glibc's default malloc; CUDA's figures are not
measured (no GPU here): saved bytes x 1.25, + 10%.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

# --- the loss ---------------------------------------------------------------------------------------

# training/loss.py projects and scores at most this many logits at a time (32 MB of float32).
LOSS_CHUNK_ELEMENTS = 1 << 23
# Model types whose causal-LM forward is exactly lm_head(decoder(...)): loss.py chunks their loss.
CHUNKED_LOSS_MODEL_TYPES = frozenset({
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi", "phi3", "gemma",
    "smollm3", "olmo", "olmo2", "starcoder2", "stablelm",
})


def loss_chunk_rows(vocab_size: int) -> int:
    """Loss positions per chunk of the chunked cross-entropy (at least 64, for a decent matmul)."""
    return max(64, LOSS_CHUNK_ELEMENTS // max(1, int(vocab_size)))


# --- calibration (benchmarks/memory_estimate.py) ------------------------------------------------

# Bytes kept for backward per token and decoder layer, per unit of (hidden_size, heads x head_dim,
# kv_heads x head_dim, intermediate_size), by (mode, bf16 autocast). Measured with saved-tensor hooks
# on Llama layers of several widths (LoRA rank 16, dropout 0.05; "lora" = attention projections,
# "lora-all" = every linear layer), rounded up.
ACTIVATION_BYTES: dict[tuple[str, bool], tuple[float, float, float, float]] = {
    ("full", False): (28.0, 8.5, 8.0, 16.0),
    ("full", True): (30.0, 4.5, 4.0, 8.0),
    ("lora", False): (26.5, 16.5, 8.0, 12.0),
    ("lora", True): (20.5, 10.5, 4.0, 6.0),
    ("lora-all", False): (43.0, 16.5, 8.0, 20.0),
    ("lora-all", True): (32.5, 10.5, 4.0, 12.0),
}
# The same without LoRA dropout (tunedeck's default): the adapters read the layers' inputs as they are,
# so no dropped-out copies (and their masks) are kept.
ACTIVATION_BYTES_NO_DROPOUT: dict[tuple[str, bool], tuple[float, float, float, float]] = {
    ("lora", False): (13.0, 8.5, 8.0, 12.0),
    ("lora", True): (14.5, 6.5, 4.0, 6.0),
    ("lora-all", False): (17.0, 8.5, 8.0, 16.0),
    ("lora-all", True): (18.5, 6.5, 4.0, 8.0),
}
# What the process holds at the peak, beyond the bytes autograd saves, on CPU: glibc's malloc serves
# allocations below its largest mmap threshold (32 MiB) from heaps that keep much of what the backward
# frees (each layer's gradient temporaries, mostly intermediate-sized). Measured here as bytes per token,
# per layer, per unit of intermediate_size, by (mode, bf16 autocast): 9-13 for full fine-tuning, 46-59
# under LoRA (its frozen layers' backward makes more temporaries); with checkpointing 11 and 23.
# Tensors of 32 MiB and more are mapped and unmapped whole: past that size little is kept, so a longer
# row can need less than a shorter one (glibc's cliff; measured on both sides of it).
# (glibc.malloc.mmap_threshold=131072 in GLIBC_TUNABLES would map every tensor and drop this part, at
# +20% CPU time here for the page faults.)
SAVED_RSS = 1.15  # resident bytes per saved byte (allocation granularity, the backward's own temporaries)
RETAINED_BYTES: dict[tuple[str, bool], float] = {
    ("full", False): 16.0, ("full", True): 32.0, ("lora", False): 64.0, ("lora", True): 32.0,
}
RETAINED_BYTES_CHECKPOINTED = {"full": 14.0, "lora": 26.0}  # float32; half under bf16 autocast
RETAINED_BYTES_MAPPED = 6.0  # measured 4 (LoRA, 2,048 x 8,192 float32 MLP tensors: 64 MiB each)
GLIBC_MMAP_THRESHOLD_MAX = 32 * MIB
# On CUDA the caching allocator reuses freed blocks: saved bytes plus its fragmentation.
CUDA_ACTIVATION_RSS = 1.25
# The worker's own footprint before any model: interpreter, torch, transformers, PEFT, MLflow, tunedeck
# (~470 MiB imported), plus what the first training step sets up once (~140 MiB).
RUNTIME_BYTES = {"cpu": 600 * MIB, "cuda": 1024 * MIB}
# torchrun's launcher process (it imports torch) when a run trains as several processes: 224 MiB
# resident measured here (torch 2.13, CPU), rounded up.
LAUNCHER_BYTES = 256 * MIB
# On CUDA the caching allocator's fragmentation comes on top of what tensors hold.
CUDA_FRAGMENTATION = 1.10
# A plan fits when its estimate is at most this share of the memory available.
SAFETY = 0.90
# Most tokens in one forward/backward pass (gradient accumulation splits a step into these): on CPU
# bigger micro-batches run no faster (measured: 2 rows of 256 ~ 1 row of 512 in tok/s) and only cost
# memory; on a GPU more fit and run faster. 512 would save SmolLM2-135M ~1.1 GB of peak memory at the
# same speed, but cost small models ~15% (benchmarks/packing.py: 1.93x vs 2.32x of padded batches).
# The default a memory plan starts from; the trainer uses it through training/plan.py.
MICRO_BATCH_TOKENS = {"cpu": 1024, "cuda": 16384}
# The smallest micro-batch a plan tries (a micro-batch is never smaller than one row anyway).
MIN_MICRO_BATCH_TOKENS = 256
# What "adapter='lora'" means (types.LoRA's defaults), for the suggestions of a shortfall.
DEFAULT_LORA = {"type": "lora", "rank": 16, "alpha": 32.0, "dropout": 0.0, "target_modules": None, "quantize_base": None}

ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_NAMES = ("gate_proj", "up_proj", "down_proj")


# --- the model --------------------------------------------------------------------------------------


def _pick(cfg: dict, *names: str, default: Any = None) -> Any:
    for name in names:
        if cfg.get(name) is not None:
            return cfg[name]
    return default


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer that decide its training memory."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int  # MLP width a token goes through (MoE: active experts x expert width + shared)
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied_embeddings: bool
    parameters: int
    largest_tensor: int  # elements of the largest parameter tensor (the optimizer step's temporaries)
    model_type: str = ""
    gated_mlp: bool = True
    exact: bool = True  # False: the parameter count is a Llama-style guess for an unknown architecture

    @classmethod
    def from_config(cls, config: dict) -> ModelShape:
        """The shape of a Hugging Face ``config.json`` (a dict); ValueError when it has no usable sizes.

        The parameter count is exact for Llama-style models (Llama, Mistral, Mixtral, Qwen2/3 and
        their MoE variants, Gemma, Phi-3, OLMo, SmolLM): embeddings (+ the output head unless tied),
        per layer the q/k/v/o projections (+ Qwen2's q/k/v biases, Qwen3/OLMo2's q/k norms), the gated
        MLP or the experts and router, and the norms. Other model types get the same formula with
        ``exact=False``; ``from_folder`` then counts the weights in the safetensors files instead.
        """
        cfg = dict(config.get("text_config") or config) if isinstance(config.get("text_config"), dict) else dict(config)
        model_type = str(cfg.get("model_type") or config.get("model_type") or "")
        try:
            h = int(_pick(cfg, "hidden_size", "n_embd", "d_model"))
            layers = int(_pick(cfg, "num_hidden_layers", "n_layer", "num_layers"))
            vocab = int(cfg["vocab_size"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("the model config has no hidden_size / num_hidden_layers / vocab_size") from None
        heads = int(_pick(cfg, "num_attention_heads", "n_head", default=1))
        kv = int(_pick(cfg, "num_key_value_heads", "num_kv_heads", default=heads) or heads)
        head_dim = int(cfg.get("head_dim") or h // max(1, heads))
        inter = int(_pick(cfg, "intermediate_size", "n_inner", "ffn_dim", default=0) or 4 * h)
        tied = bool(cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", True)))
        ad, kvd = heads * head_dim, kv * head_dim
        gated = model_type not in ("starcoder2", "phi", "gpt2", "gpt_neox", "gpt_bigcode", "opt", "falcon", "bloom")
        known = model_type in CHUNKED_LOSS_MODEL_TYPES

        # attention
        attention = h * ad + 2 * h * kvd + ad * h
        qkv_bias = model_type in ("qwen2", "qwen2_moe", "starcoder2", "phi") or cfg.get("use_qkv_bias")
        if qkv_bias or cfg.get("attention_bias"):
            attention += ad + 2 * kvd
        if cfg.get("attention_bias") or model_type in ("starcoder2", "phi"):
            attention += h  # o_proj bias (Llama's attention_bias covers all four)
        if model_type in ("qwen3", "qwen3_moe"):
            attention += 2 * head_dim
        elif model_type == "olmo2":
            attention += ad + kvd
        # MLP or experts
        experts = int(_pick(cfg, "num_local_experts", "num_experts", default=0) or 0)
        active_inter = inter
        largest_mlp = 0
        if experts:
            expert_inter = int(cfg.get("moe_intermediate_size") or inter)
            per_token = int(cfg.get("num_experts_per_tok") or 2)
            shared = int(cfg.get("shared_expert_intermediate_size") or 0)
            mlp = experts * 3 * h * expert_inter + h * experts + (3 * h * shared + h if shared else 0)
            active_inter = per_token * expert_inter + shared
            largest_mlp = experts * 2 * h * expert_inter  # transformers 5 keeps experts in fused 3D tensors
        elif gated:
            mlp = 3 * h * inter + (2 * inter + h if cfg.get("mlp_bias") else 0)
            largest_mlp = h * inter * (2 if model_type == "phi3" else 1)  # Phi-3 fuses gate and up
        else:
            mlp = 2 * h * inter + (inter + h if model_type in ("starcoder2", "phi") or cfg.get("use_bias") else 0)
            largest_mlp = h * inter
        # norms: RMSNorm weights (LayerNorm weight + bias where the architecture uses it; OLMo has none)
        norm = {"olmo": 0, "starcoder2": 2 * h, "stablelm": 2 * h, "phi": 2 * h}.get(model_type, h)
        per_layer_norms = norm if model_type == "phi" else 2 * norm  # phi: one norm for parallel attn + MLP
        embed = vocab * h
        head = 0 if tied else vocab * h + (vocab if model_type == "phi" else 0)
        params = embed + head + layers * (attention + mlp + per_layer_norms) + norm
        return cls(
            vocab_size=vocab, hidden_size=h, intermediate_size=active_inter, layers=layers, heads=heads,
            kv_heads=kv, head_dim=head_dim, tied_embeddings=tied, parameters=int(params),
            largest_tensor=int(max(embed, largest_mlp, h * ad)), model_type=model_type, gated_mlp=gated,
            exact=known,
        )

    @classmethod
    def from_folder(cls, folder: str | Path) -> ModelShape | None:
        """The shape of a Hugging Face model folder: its config, with the parameter count read from the
        safetensors headers when there are any (exact for every architecture); None without a config."""
        folder = Path(folder)
        try:
            config = json.loads((folder / "config.json").read_text())
            shape = cls.from_config(config)
        except (OSError, ValueError, TypeError):
            return None
        counted = stored_parameters(folder)
        if counted:
            shape = _replace(shape, parameters=counted[0], largest_tensor=max(counted[1], 1), exact=True)
        return shape

    @property
    def weight_matrices(self) -> int:
        """Parameters in the decoder layers' matrices (what autocast casts and 4-bit quantizes)."""
        return max(0, self.parameters - self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2))

    def lora_parameters(self, adapter: dict | None) -> int:
        """Trainable parameters of a LoRA ``adapter`` (``params.parse_adapter``'s dict) on this model."""
        if not adapter:
            return 0
        r = int(adapter.get("rank") or 16)
        h, ad, kvd, i = self.hidden_size, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate_size
        sizes = {"q_proj": h + ad, "k_proj": h + kvd, "v_proj": h + kvd, "o_proj": ad + h,
                 "gate_proj": h + i, "up_proj": h + i, "down_proj": i + h}
        per_layer = sum(sizes.get(name, h + i) for name in _lora_targets(adapter.get("target_modules")))  # unknown: MLP-sized
        return r * per_layer * self.layers


def _replace(shape: ModelShape, **changes: Any) -> ModelShape:
    from dataclasses import replace

    return replace(shape, **changes)


def stored_parameters(folder: str | Path) -> tuple[int, int] | None:
    """(parameters, elements of the largest tensor) stored in a folder's safetensors files, read from
    their headers only (8 bytes of length + a JSON table: no weights are read); None without any."""
    total, largest, found = 0, 0, False
    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with open(path, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                if length > 100 * MIB:
                    return None
                header = json.loads(f.read(length))
        except (OSError, ValueError, struct.error):
            return None
        for name, entry in header.items():
            if name == "__metadata__" or not isinstance(entry, dict):
                continue
            n = 1
            for d in entry.get("shape", []):
                n *= int(d)
            total += n
            largest = max(largest, n)
            found = True
    return (total, largest) if found else None


# --- the estimate -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of a training process, in bytes, and what it is made of (``parts``, in order)."""

    total: int
    parts: dict[str, int]

    def describe(self, limit: int = 4) -> str:
        """'weights 26.9 GiB, gradients 26.9 GiB, optimizer 53.9 GiB, activations 4.1 GiB, ...'."""
        ranked = sorted(((v, k) for k, v in self.parts.items() if v >= 0.05 * GIB), reverse=True)[:limit]
        keep = {k for _, k in ranked}
        return ", ".join(f"{k} {gib(v)}" for k, v in self.parts.items() if k in keep)


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= 0.1 * GIB else f"{n / MIB:.0f} MiB"


def _mode(adapter: dict | None) -> str:
    """'full', 'lora' (adapters on attention projections only) or 'lora-all' (on MLP layers too)."""
    if not adapter:
        return "full"
    return "lora" if set(_lora_targets(adapter.get("target_modules"))) <= set(ATTENTION_NAMES) else "lora-all"


def _lora_targets(modules: Any) -> list[str]:
    """params.parse_adapter's target_modules: None = every linear layer but the head, "attention" = the
    attention projections, or a list of layer names."""
    if modules is None or modules == "all-linear":
        return list(ATTENTION_NAMES + MLP_NAMES)
    if modules == "attention":
        return list(ATTENTION_NAMES)
    return [modules] if isinstance(modules, str) else list(modules)


def estimate(
    shape: ModelShape,
    *,
    micro_batch_tokens: int,
    row_tokens: int | None = None,
    adapter: dict | None = None,
    autocast: bool = False,
    weight_bytes: float | None = None,
    checkpointing: bool = False,
    device: str = "cpu",
    loss_tokens: int | None = None,
    chunked_loss: bool | None = None,
    dense_mask: bool = True,
    processes: int = 1,
) -> MemoryEstimate:
    """Peak memory of training ``shape`` with these settings.

    micro_batch_tokens: most tokens in one forward/backward (``MICRO_BATCH_TOKENS``); row_tokens: the
    longest row (a row is never split, so a micro-batch holds ``max(micro_batch_tokens, row_tokens)``
    tokens, and the packing mask is B x L x L with L <= row_tokens); loss_tokens: positions with a loss
    in a micro-batch (default: all of them). adapter: None (full fine-tuning) or parse_adapter's dict.
    weight_bytes: bytes per stored weight; default 4 for full fine-tuning (float32 master weights) and
    for LoRA 2 under autocast (bf16 base) else 4; under LoRA it applies to the layers' matrices
    (2 with frozen_base.store_in_bf16: bf16 matrices computed in float32). chunked_loss: default, whether loss.py chunks this
    model type. dense_mask: packed rows carry a (B, 1, L, L) mask (sdpa/eager; not flash varlen).
    processes: the run's processes (DDP replicas); the estimate is still one process's, with DDP's
    gradient buckets when there are several (``run_total`` adds the processes up).
    """
    h, layers, vocab = shape.hidden_size, shape.layers, shape.vocab_size
    ad, kvd, inter = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim, shape.intermediate_size
    row = max(1, int(row_tokens or micro_batch_tokens))
    tokens = max(int(micro_batch_tokens), row)
    positions = min(tokens, int(loss_tokens or tokens))
    mode = _mode(adapter)
    quantized = bool(adapter and adapter.get("quantize_base"))
    if weight_bytes is None:
        weight_bytes = 4 if not adapter else (2 if autocast else 4)

    # weights, gradients, optimizer
    parts: dict[str, int] = {}
    if not adapter:
        trainable = shape.parameters
        parts["weights"] = int(shape.parameters * weight_bytes)
        parts["gradients"] = int(trainable * weight_bytes)
        parts["optimizer"] = int(2 * trainable * weight_bytes)
        largest = shape.largest_tensor * weight_bytes
    else:
        trainable = shape.lora_parameters(adapter)
        matrices = shape.weight_matrices
        # the layers' matrices in weight_bytes; embeddings and norms in the loading dtype (bf16 under
        # autocast, else float32: frozen_base.py keeps them float32 when only the matrices are bf16)
        rest = (shape.parameters - matrices) * (2 if autocast else 4)
        if quantized:  # NF4: half a byte per weight + double-quantized scales
            base = matrices * 0.5 * 1.04 + rest
        else:
            base = matrices * weight_bytes + rest
        parts["weights"] = int(base + 4 * trainable)
        parts["gradients"] = int(4 * trainable)
        parts["optimizer"] = int(8 * trainable)
        largest = 4 * max(1, trainable // max(1, layers * 4))
    if processes > 1:
        parts["ddp buckets"] = parts["gradients"]
    if autocast and weight_bytes >= 4 and not quantized:
        # bf16 copies of the float32 matrices, kept for backward (one layer at a time when recomputed under LoRA)
        copies = shape.weight_matrices + (0 if shape.tied_embeddings else vocab * h) + vocab * h
        if adapter and checkpointing:
            copies = copies // max(1, layers)
        parts["weight copies"] = int(2 * copies)

    # activations: bytes saved for backward (per token of one layer: ACTIVATION_BYTES), and on CPU what
    # glibc's heaps keep of the backward's temporaries (RETAINED_BYTES)
    table = ACTIVATION_BYTES_NO_DROPOUT if adapter and not adapter.get("dropout") else ACTIVATION_BYTES
    ch, ca, ck, ci = table[(mode, bool(autocast))]
    layer = ch * h + ca * ad + ck * kvd + ci * inter
    residual = 4 * h  # a layer's input: all that checkpointing keeps of it
    kept = (residual if checkpointing else layer) * layers + 3 * residual  # + embeddings, final norm
    kept += (2 if checkpointing else 1) * layer  # the backward's own temporaries (+ the layer recomputed)
    if device == "cuda":
        resident = tokens * kept * CUDA_ACTIVATION_RSS
    else:
        resident = tokens * kept * SAVED_RSS
        # the heaps keep the backward's temporaries while the big ones (tokens x intermediate) are under
        # 32 MiB; above, those are mapped and unmapped whole and little is kept (RETAINED_BYTES_MAPPED)
        element = 2 if autocast else 4
        if tokens * inter * element < GLIBC_MMAP_THRESHOLD_MAX:
            key = ("full" if not adapter else "lora", bool(autocast))
            retained = RETAINED_BYTES_CHECKPOINTED[key[0]] * element / 4 if checkpointing else RETAINED_BYTES[key]
        else:
            retained = RETAINED_BYTES_MAPPED
        resident += layers * tokens * inter * retained
    mask = tokens * min(row, tokens) * (2 if autocast and device == "cuda" else 4) if dense_mask else 0
    parts["activations"] = int(resident + mask)

    # the loss
    chunked = shape.model_type in CHUNKED_LOSS_MODEL_TYPES if chunked_loss is None else chunked_loss
    if chunked:
        chunk = min(positions, loss_chunk_rows(vocab))
        # a chunk's logits and softmax, the hidden states and their gradient; a trainable head's
        # gradient is computed in the forward and held until backward hands it on
        logits = 4 * chunk * vocab * 4 + 2 * positions * h * 4 + (vocab * h * 4 if not adapter else 0)
    else:
        logits = 4 * positions * vocab * 4 + (positions * vocab * 2 if autocast else 0)
    parts["logits"] = int(logits)

    step = 2 * largest  # CPU AdamW: sqrt + division temporaries of the largest tensor (after backward)
    parts["runtime"] = RUNTIME_BYTES.get(device, RUNTIME_BYTES["cpu"])
    static = sum(v for k, v in parts.items() if k not in ("activations", "logits", "runtime"))
    dynamic = max(parts["activations"] + parts["logits"], step)
    total = static + dynamic
    if device == "cuda":
        total *= CUDA_FRAGMENTATION
    return MemoryEstimate(int(total + parts["runtime"]), parts)


# --- the machine --------------------------------------------------------------------------------

PROC_MEMINFO = Path("/proc/meminfo")
CGROUP_ROOT = Path("/sys/fs/cgroup")
_NO_LIMIT = 1 << 60


def memory_limit() -> int | None:
    """TUNEDECK_MEMORY_LIMIT in bytes ('16GiB', '16G', '12.5GB', '17179869184'), None when unset."""
    value = (os.environ.get("TUNEDECK_MEMORY_LIMIT") or "").strip()
    if not value:
        return None
    return parse_bytes(value)


def parse_bytes(text: str) -> int:
    """'16GiB' / '16G' / '16GB' / '512MiB' / '1e9' / '17179869184' -> bytes (K, M, G, T are powers of 1024)."""
    s = text.strip().lower().replace("_", "").replace(" ", "")
    units = {"": 1, "b": 1, "k": KIB, "kb": KIB, "kib": KIB, "m": MIB, "mb": MIB, "mib": MIB,
             "g": GIB, "gb": GIB, "gib": GIB, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}
    number = s.rstrip("kmgtib")
    unit = s[len(number):]
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not an amount of memory (e.g. 16GiB, 512MiB or a number of bytes)") from None
    if unit not in units or value <= 0:
        raise ValueError(f"{text!r} is not an amount of memory (e.g. 16GiB, 512MiB or a number of bytes)")
    return int(value * units[unit])


def _meminfo() -> dict[str, int]:
    info: dict[str, int] = {}
    try:
        for line in PROC_MEMINFO.read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                info[name] = int(parts[0]) * (KIB if len(parts) > 1 and parts[1].lower() == "kb" else 1)
    except (OSError, ValueError):
        pass
    return info


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_free() -> int | None:
    """The cgroup's memory limit minus what it uses (less its reclaimable page cache); None without a limit.

    cgroup v2 (``memory.max``, ``memory.current``) or v1 (``memory/memory.limit_in_bytes``,
    ``memory.usage_in_bytes``), as mounted in this container.
    """
    v2 = CGROUP_ROOT / "memory.max"
    if v2.exists():
        limit, used = _read_int(v2), _read_int(CGROUP_ROOT / "memory.current")
        cache = _stat(CGROUP_ROOT / "memory.stat", "inactive_file")
    else:
        v1 = CGROUP_ROOT / "memory"
        limit, used = _read_int(v1 / "memory.limit_in_bytes"), _read_int(v1 / "memory.usage_in_bytes")
        cache = _stat(v1 / "memory.stat", "total_inactive_file")
    if limit is None or limit >= _NO_LIMIT or used is None:
        return None
    return max(0, limit - max(0, used - cache))


def available_memory() -> int:
    """Bytes this machine can still give a process: the smaller of /proc/meminfo's MemAvailable and
    the cgroup limit minus usage, capped by TUNEDECK_MEMORY_LIMIT. (On CUDA callers pass
    ``torch.cuda.mem_get_info()[0]`` to ``plan_memory`` instead.)"""
    info = _meminfo()
    candidates = [v for v in (info.get("MemAvailable", info.get("MemFree")), cgroup_free()) if v is not None]
    value = min(candidates) if candidates else 0
    limit = memory_limit()
    return min(value, limit) if limit else value


def resident_memory() -> int:
    """This process's resident memory now (VmRSS), in bytes; 0 where /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KIB
    except (OSError, ValueError, IndexError):
        pass
    return 0


def gpu_free_memory(include_pids: list[int] | None = None) -> int | None:
    """Free memory of the first visible NVIDIA GPU (nvidia-smi), plus what ``include_pids`` hold on it;
    None when there is no GPU or no answer. For the service, which does not import torch; the worker
    asks ``torch.cuda.mem_get_info()`` itself."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return None
    if not shutil.which("nvidia-smi"):
        return None
    index = (visible or "0").split(",")[0].strip()

    def query(*args: str) -> list[str]:
        return subprocess.run(["nvidia-smi", f"--id={index}", *args, "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=5, check=True).stdout.strip().splitlines()

    try:
        free = int(float(query("--query-gpu=memory.free")[0])) * MIB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    if include_pids:
        try:
            for line in query("--query-compute-apps=pid,used_memory"):
                pid, used = (x.strip() for x in line.split(","))
                if int(pid) in include_pids:
                    free += int(float(used)) * MIB
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    return free


# --- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryPlan:
    """What a run will do to fit: activation checkpointing or not, and the micro-batch size."""

    needed: int
    available: int
    activation_checkpointing: bool
    micro_batch_tokens: int
    breakdown: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """'~5.2 GiB of 21.4 GiB (weights 0.5 GiB, ...); micro-batches of 1,024 tokens' for events."""
        parts = MemoryEstimate(self.needed, self.breakdown).describe(limit=6)
        how = ", activation checkpointing" if self.activation_checkpointing else ""
        return f"~{gib(self.needed)} of {gib(self.available)} ({parts}); micro-batches of {self.micro_batch_tokens:,} tokens{how}"

    def to_dict(self) -> dict[str, Any]:
        return {"needed_bytes": self.needed, "available_bytes": self.available,
                "activation_checkpointing": self.activation_checkpointing,
                "micro_batch_tokens": self.micro_batch_tokens, "breakdown_bytes": dict(self.breakdown)}


class MemoryShortfall(ValueError):
    """The run cannot fit in the memory available, whatever the plan; the message says what would."""

    def __init__(self, message: str, needed: int, available: int, suggestions: list[str]):
        super().__init__(message)
        self.needed, self.available, self.suggestions = needed, available, suggestions


def micro_batch_candidates(default: int) -> list[int]:
    """The default micro-batch, then halves of it down to MIN_MICRO_BATCH_TOKENS."""
    sizes: list[int] = []
    m = int(default)
    while m >= MIN_MICRO_BATCH_TOKENS or not sizes:
        sizes.append(m)
        m //= 2
    return sizes


def _default_micro_batch(device: str) -> int:
    return int(MICRO_BATCH_TOKENS.get(device, MICRO_BATCH_TOKENS["cpu"]))


def plan_memory(
    shape: ModelShape,
    *,
    context_length: int,
    adapter: dict | None = None,
    autocast: bool = False,
    row_tokens: int | None = None,
    device: str = "cpu",
    available: int | None = None,
    resident: int = 0,
    micro_batch_tokens: int | None = None,
    dense_mask: bool = True,
    weight_bytes: float | None = None,
    processes: int = 1,
) -> MemoryPlan:
    """The fastest settings under which the run fits, or MemoryShortfall.

    Tries, in order, no activation checkpointing with micro-batches from ``micro_batch_tokens`` (default
    ``MICRO_BATCH_TOKENS[device]``) halving down to 256 tokens, then the same with checkpointing
    (it recomputes the forward: ~30% slower, so only when needed). A plan fits when its estimate is at
    most ``SAFETY`` of the budget.

    row_tokens: the longest row of the data (default ``context_length``: the worst case, before the
    data is tokenized). available: bytes free (default ``available_memory()``; on CUDA the GPU's free
    memory). resident: what the calling process already holds, counted against the estimate's runtime
    part (the worker passes ``resident_memory()``). TUNEDECK_MEMORY_LIMIT caps the budget.
    processes: the run's processes (``num_devices``). On CPU they share ``available``: the plan fits
    when ``run_total`` (processes x one process's estimate + the launcher) does, and ``needed`` is that
    total. On CUDA each has its own GPU: one process's estimate against one GPU's free memory.
    """
    row = int(row_tokens or context_length)
    default = int(micro_batch_tokens or _default_micro_batch(device))
    budget = _budget(available, resident, device)
    processes = max(1, int(processes))
    settings: dict[str, Any] = dict(
        adapter=adapter, autocast=autocast, device=device, dense_mask=dense_mask, weight_bytes=weight_bytes,
        processes=processes,
    )
    seen: set[int] = set()
    for checkpointing in (False, True):
        seen.clear()
        for micro in micro_batch_candidates(default):
            if max(micro, row) in seen and micro < row:
                continue  # a smaller micro-batch changes nothing when one row is bigger anyway
            seen.add(max(micro, row))
            e = estimate(shape, micro_batch_tokens=micro, row_tokens=row, checkpointing=checkpointing, **settings)
            if run_total(e, processes, device) <= SAFETY * budget:
                return MemoryPlan(run_total(e, processes, device), budget, checkpointing, micro, e.parts)
    smallest = micro_batch_candidates(default)[-1]
    worst = estimate(shape, micro_batch_tokens=smallest, row_tokens=row, checkpointing=True, **settings)
    suggestions = _suggestions(shape, context_length, row, smallest, budget, **settings)
    limit = " (TUNEDECK_MEMORY_LIMIT)" if memory_limit() else ""
    where = "of GPU memory free" if device == "cuda" else "available"
    total = run_total(worst, processes, device)
    if processes > 1 and device == "cuda":
        who = f"each of this run's {processes} processes (one GPU each) needs ~{gib(worst.total)}"
    elif processes > 1:
        who = (f"this run's {processes} processes need ~{gib(total)} of memory together (~{gib(worst.total)} each, "
               f"+ {gib(LAUNCHER_BYTES)} for torchrun's launcher: they share this machine's memory)")
    else:
        who = f"this run needs ~{gib(worst.total)} of memory"
    message = (
        f"{who} even with activation checkpointing and "
        f"{smallest:,}-token micro-batches ({worst.describe()}), and {gib(budget)} is {where}{limit}, "
        f"of which a run may plan {gib(SAFETY * budget)} ({SAFETY:.0%}: the estimate's margin). "
    )
    if suggestions:
        message += "It would fit with " + "; or ".join(suggestions) + "."
    else:
        message += (
            f"No setting fits: the weights alone take {gib(worst.parts['weights'])}. "
            "Use a smaller model or a machine with more memory."
        )
    raise MemoryShortfall(message, total, budget, suggestions)


def run_total(e: MemoryEstimate, processes: int, device: str) -> int:
    """What a run of ``processes`` processes takes of the memory ``plan_memory`` checks: on CPU all of
    them and torchrun's launcher (they share the machine), on CUDA one process (its own GPU)."""
    if processes <= 1 or device == "cuda":
        return e.total
    return processes * e.total + LAUNCHER_BYTES


def _budget(available: int | None, resident: int, device: str) -> int:
    base = available_memory() if available is None else int(available)
    budget = base + min(max(0, int(resident)), RUNTIME_BYTES.get(device, 0))
    limit = memory_limit()
    return min(budget, limit) if limit else budget


def _fits(shape: ModelShape, row: int, micro: int, budget: int, **settings: Any) -> MemoryEstimate | None:
    """The estimate when it fits, else None; its total is the run's (``run_total``: all its processes)."""
    e = estimate(shape, micro_batch_tokens=micro, row_tokens=row, checkpointing=True, **settings)
    total = run_total(e, settings.get("processes", 1), settings.get("device", "cpu"))
    return MemoryEstimate(total, e.parts) if total <= SAFETY * budget else None


def _suggestions(shape: ModelShape, context: int, row: int, micro: int, budget: int, **settings: Any) -> list[str]:
    """What would fit, worded with create()'s parameters: LoRA, a shorter context, or both."""
    out: list[str] = []
    adapter = settings.pop("adapter")
    device = settings["device"]
    shorter = [c for c in _halvings(min(context, row)) if c < row]

    def first_context(adapter_: dict | None) -> tuple[int, MemoryEstimate] | None:
        for c in shorter:
            e = _fits(shape, c, micro, budget, adapter=adapter_, **settings)
            if e:
                return c, e
        return None

    # A LoRA base takes 2 bytes a weight: bf16 under autocast, else held in bf16 when float32 does not fit.
    lora_settings = {**settings, "weight_bytes": 2}
    if adapter is None:
        lora = _fits(shape, row, micro, budget, adapter=DEFAULT_LORA, **lora_settings)
        if lora:
            out.append(f"adapter='lora' (~{gib(lora.total)})")
    found = first_context(adapter)
    if found:
        out.append(f"context_length={found[0]:,} (~{gib(found[1].total)}; longer examples are cut)")
    if adapter is None and not out:
        both = next(
            ((c, e) for c in shorter if (e := _fits(shape, c, micro, budget, adapter=DEFAULT_LORA, **lora_settings))), None
        )
        if both:
            out.append(f"adapter='lora' and context_length={both[0]:,} (~{gib(both[1].total)})")
    if adapter and not adapter.get("quantize_base") and device == "cuda":
        qlora = _fits(shape, row, micro, budget, adapter={**adapter, "quantize_base": "4bit"}, **settings)
        if qlora:
            out.append(f"adapter='qlora' (4-bit base, ~{gib(qlora.total)})")
    return out


def _halvings(n: int) -> list[int]:
    out, c = [], int(n) // 2
    while c >= MIN_MICRO_BATCH_TOKENS:
        out.append(c)
        c //= 2
    return out


# --- create() -----------------------------------------------------------------------------------


def check_run(
    folder: str | Path,
    *,
    context_length: int,
    adapter: dict | None = None,
    precision: str = "auto",
    continues: str | Path | None = None,
    processes: int = 1,
    device: str | None = None,
    sharding: str = "ddp",
) -> str | None:
    """Why a run of the model in ``folder`` cannot fit in this machine's memory, or None (it fits, or
    the model's size cannot be told from its files: the worker checks again before loading weights).

    For create(): before the data is tokenized the longest row is taken to be ``context_length``, and
    the budget is what is free now plus what this service's own running trainings hold (a queued run
    starts only when a slot frees). Under ``precision="auto"`` the worker picks float32 or bf16 later,
    so the run is refused only when neither fits. ``continues``: a custom_weights_path; a LoRA
    checkpoint there continues its adapter, so the run is LoRA even without ``adapter``. ``processes``:
    the run's ``num_devices`` (see ``plan_memory``). ``device``: "cpu" when the service trains on CPU
    whatever GPUs there are (TUNEDECK_DEVICES=cpu), else None: a visible GPU's memory when there is one.
    ``sharding`` (config.sharding): with several processes of full fine-tuning, ``auto`` also accepts a
    run whose 1/N shards of the weights, gradients and AdamW state fit (FSDP, as the worker's plan in
    training/memory_plan.py counts them), ``fsdp`` counts only that, ``ddp`` only replicas.
    """
    shape = ModelShape.from_folder(folder)
    if shape is None:
        return None
    if adapter is None and continues is not None:
        adapter = checkpoint_adapter(continues)
    gpu = None if device == "cpu" else gpu_free_memory(include_pids=_worker_pids())
    kind, available = ("cuda", gpu) if gpu is not None else ("cpu", available_memory() + _workers_resident())
    autocasts = {"fp32": (False,), "bf16": (True,)}.get(precision, (False, True))
    # (autocast, weight bytes): a LoRA base computed in float32 may still be held in bf16 (frozen_base.py)
    shards = processes > 1 and adapter is None and sharding in ("auto", "fsdp")
    options: list[tuple[bool, float | None]] = [] if shards and sharding == "fsdp" else [(a, None) for a in autocasts]
    if shards:
        options += [(a, 4 / processes) for a in autocasts]
    if adapter is not None and not adapter.get("quantize_base") and False in autocasts:
        options.append((False, 2))
    shortfalls: list[MemoryShortfall] = []
    for autocast, weight_bytes in options:
        try:
            plan_memory(shape, context_length=context_length, adapter=adapter, autocast=autocast,
                        device=kind, available=available, weight_bytes=weight_bytes, processes=processes)
            return None
        except MemoryShortfall as shortfall:
            shortfalls.append(shortfall)
    return str(min(shortfalls, key=lambda s: s.needed))


def checkpoint_adapter(folder: str | Path) -> dict | None:
    """The LoRA settings of a PEFT adapter checkpoint (adapter_config.json), None for full weights."""
    try:
        cfg = json.loads((Path(folder) / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return None
    modules = cfg.get("target_modules")
    if isinstance(modules, str) and modules != "all-linear":
        modules = [modules]
    return {"type": "lora", "rank": int(cfg.get("r") or 16), "alpha": float(cfg.get("lora_alpha") or 32),
            "dropout": float(cfg.get("lora_dropout") or 0.0), "target_modules": modules, "quantize_base": None}


def _worker_pids() -> list[int]:
    """This process's children and their descendants (the service's training workers)."""
    pids, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                found = [int(p) for p in children.read_text().split()]
            except (OSError, ValueError):
                continue
            pids += found
            todo += found
    return pids


def _workers_resident() -> int:
    total = 0
    for pid in _worker_pids():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * KIB
        except (OSError, ValueError, IndexError):
            continue
    return total
