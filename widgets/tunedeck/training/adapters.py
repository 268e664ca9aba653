"""LoRA adapters through PEFT: attach them, continue them from a checkpoint, merge them for export.

Under LoRA the base model is frozen and only low-rank adapter matrices train, so gradients and AdamW
state exist for well under 1% of the parameters. The frozen base is held in the compute precision
(bf16 where the run trains in bf16), the adapters in float32 (PEFT's ``autocast_adapter_dtype``), which
is what makes a 7B model trainable in 24 GB.

A LoRA checkpoint is PEFT's adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, a
few MB) whose ``base_model_name_or_path`` is the base model's local folder: plain
``AutoModelForCausalLM.from_pretrained(checkpoint)`` (with peft installed) loads base + adapter in one
call, and ``custom_weights_path`` pointing at it continues training the same adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tunedeck.inputs.catalog import ADAPTER_CONFIG, adapter_base
from tunedeck.training.failures import TrainingFailure

# Attention projections by the names architectures give them; the first family a model has wins.
ATTENTION_PROJECTIONS = (
    ("q_proj", "k_proj", "v_proj", "o_proj"),  # Llama, Mistral, Qwen, Gemma, Phi-3 (qkv_proj), OLMo ...
    ("qkv_proj", "o_proj"),
    ("query_key_value", "dense"),  # GPT-NeoX, Falcon
    ("c_attn",),  # GPT-2 (its c_proj is shared by attention and MLP, so only the fused qkv)
    ("Wqkv", "out_proj"),
)


def is_adapter_checkpoint(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def adapter_base_path(folder: str | Path) -> Path | None:
    """The base model folder a LoRA checkpoint was trained on."""
    return adapter_base(Path(folder))


def attention_modules(model: torch.nn.Module) -> list[str]:
    """Names of the attention projections of ``model`` ([] when it has none we know)."""
    linear_names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    for family in ATTENTION_PROJECTIONS:
        found = [n for n in family if n in linear_names]
        if found and (len(found) == len(family) or (family[0] == "q_proj" and {"q_proj", "v_proj"} <= set(found))):
            return found
    return []


def attach_lora(model: Any, adapter: dict[str, Any], base_path: str | Path) -> Any:
    """``model`` with fresh LoRA adapters on ``adapter["target_modules"]``: every linear layer but the head
    (None), the attention projections ("attention"), or the named layers."""
    from peft import LoraConfig, get_peft_model

    modules = adapter.get("target_modules") or "all-linear"
    if modules == "attention":
        modules = attention_modules(model)
        if not modules:
            raise TrainingFailure(
                "adapter: target_modules='attention' found no attention projections this architecture names "
                "as tunedeck knows them; name the layers, e.g. LoRA(target_modules=['q_proj', 'v_proj'])"
            )
    config = LoraConfig(
        r=int(adapter["rank"]),
        lora_alpha=float(adapter["alpha"]),
        lora_dropout=float(adapter["dropout"]),
        target_modules=modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        peft_model = get_peft_model(model, config, autocast_adapter_dtype=True)
    except ValueError as error:  # e.g. "Target modules {...} not found in the base model"
        raise TrainingFailure(f"adapter: {error}") from None
    _record_base(peft_model, base_path)
    return peft_model


def load_lora(model: Any, checkpoint: str | Path, base_path: str | Path) -> Any:
    """``model`` with the trainable LoRA adapter of ``checkpoint`` on it (to continue training it)."""
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, str(checkpoint), is_trainable=True, autocast_adapter_dtype=True)
    except Exception as error:  # a corrupt or foreign adapter folder
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise TrainingFailure(
            f"custom_weights_path: could not load the LoRA adapter in {checkpoint} ({type(error).__name__}: {detail})"
        ) from error
    _record_base(peft_model, base_path)
    return peft_model


def adapter_settings(peft_model: Any) -> dict[str, Any]:
    """The settings of the adapter being trained, in tunedeck's form (the layers as PEFT resolved them)."""
    config = peft_model.peft_config["default"]
    modules = config.target_modules
    return {
        "type": "lora",
        "rank": int(config.r),
        "alpha": float(config.lora_alpha),
        "dropout": float(config.lora_dropout),
        # PEFT saves "all-linear" resolved to every module's full name: report the layer names once each.
        "target_modules": sorted({m.rsplit(".", 1)[-1] for m in modules}) if isinstance(modules, (set, list, tuple)) else modules,
        "quantize_base": None,
    }


def merge(peft_model: Any) -> Any:
    """The base model with the adapter folded into its weights (in place: no second copy in memory)."""
    return peft_model.merge_and_unload(progressbar=False)


def is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _record_base(peft_model: Any, base_path: str | Path) -> None:
    """Saved adapters name the base by its local folder, so loading one needs no hub and no guess."""
    for config in peft_model.peft_config.values():
        config.base_model_name_or_path = str(base_path)
