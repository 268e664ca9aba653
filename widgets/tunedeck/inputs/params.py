"""Parsing and checking of create() parameters that need no data and no model files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

TASK_TYPES = ("CHAT_COMPLETION", "INSTRUCTION_FINETUNE", "CONTINUED_PRETRAIN")
DEFAULT_TASK_TYPE = "CHAT_COMPLETION"
DEFAULT_DURATION = "1ep"
DEFAULT_MAX_CONTEXT = 8192

_DURATION = re.compile(r"^\s*(\d[\d_]*)\s*(ep|tok|ba)\s*$")
_REGISTER_PART = r"[A-Za-z0-9_][A-Za-z0-9_\-]*"
_REGISTER = re.compile(rf"^{_REGISTER_PART}\.{_REGISTER_PART}(\.[A-Za-z0-9_][A-Za-z0-9_.\-]*)?$")


@dataclass(frozen=True)
class Duration:
    value: int
    unit: str  # "ep" | "tok" | "ba"

    def __str__(self) -> str:
        return f"{self.value}{self.unit}"


def parse_duration(text: str | int | None) -> Duration:
    """'10ep', '1_000_000tok', '100ba' -> Duration. Raises ValueError with the accepted forms."""
    if text is None:
        text = DEFAULT_DURATION
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(
            f"{text!r} is not a duration: use a whole number followed by ep (epochs), tok (tokens) "
            "or ba (batches), e.g. '3ep', '1_000_000tok', '200ba'"
        )
    value = int(m.group(1).replace("_", ""))
    if value <= 0:
        raise ValueError(f"{text!r}: the duration must be greater than zero")
    return Duration(value, m.group(2))


def parse_learning_rate(value: str | float | None) -> float | None:
    """The reference passes learning_rate as a string ('5e-7'); accept numbers too."""
    if value is None or value == "":
        return None
    try:
        lr = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number (e.g. 1e-5)") from None
    if not (0.0 < lr < 1.0):
        raise ValueError(f"{value!r} is out of range: a learning rate must be above 0 and below 1")
    return lr


def parse_context_length(value: str | int | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        n = int(str(value).replace("_", ""))
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number of tokens") from None
    if n < 8:
        raise ValueError(f"{value!r} is too small: a context length must be at least 8 tokens")
    return n


def default_context_length(max_context_length: int) -> int:
    return min(DEFAULT_MAX_CONTEXT, max_context_length)


def default_learning_rate(parameters: int | None, adapter: dict | None = None) -> float:
    """Peak AdamW learning rate when the user gives none: smaller models take larger steps.

    LoRA adapters start at zero and have few parameters, so they take about ten times the full
    fine-tuning rate (2e-4 at 7B, the common choice of PEFT's and TRL's examples).
    """
    if adapter is not None:
        if parameters is not None and parameters <= 20_000_000:
            return 5e-3
        if parameters is not None and parameters <= 500_000_000:
            return 1e-3
        return 2e-4
    if parameters is None:
        return 1e-5
    if parameters <= 20_000_000:
        return 1e-3
    if parameters <= 500_000_000:
        return 5e-5
    if parameters <= 3_000_000_000:
        return 2e-5
    return 1e-5


def check_task_type(value: str | None) -> str:
    task = (value or DEFAULT_TASK_TYPE).upper()
    if task not in TASK_TYPES:
        raise ValueError(f"{value!r} is not a task type: use one of {', '.join(TASK_TYPES)}")
    return task


def registered_model_name(register_to: str, run_name: str) -> str:
    """'<catalog>.<schema>' or '<catalog>.<schema>.<name>' -> the full three-part name."""
    if not isinstance(register_to, str) or not _REGISTER.match(register_to.strip()):
        raise ValueError(
            f"{register_to!r} is not '<catalog>.<schema>' or '<catalog>.<schema>.<model name>' "
            "(letters, digits, _ and -, separated by dots)"
        )
    parts = register_to.strip().split(".", 2)
    return register_to.strip() if len(parts) == 3 else f"{register_to.strip()}.{run_name}"


ADAPTER_NAMES = {"lora": {}, "qlora": {"quantize_base": "4bit"}}
QUANTIZE_BASE = ("4bit",)
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def parse_adapter(value: Any) -> dict | None:
    """``None`` | ``"lora"`` | ``"qlora"`` | a LoRA | its dict -> the resolved adapter dict, or ValueError.

    The dict is LoRA.to_dict() with alpha filled in (2 * rank when not given).
    """
    from tunedeck.types import LoRA

    if value is None or value == "" or value is False:
        return None
    if isinstance(value, str):
        key = value.strip().lower()
        if key in ("none", "full"):
            return None
        if key not in ADAPTER_NAMES:
            raise ValueError(f"{value!r} is not an adapter: use 'lora', 'qlora', a tunedeck.LoRA(...), or None for full fine-tuning")
        value = LoRA(**ADAPTER_NAMES[key])
    if isinstance(value, dict):
        kind = str(value.get("type", "lora")).lower()
        if kind != "lora":
            raise ValueError(f"type {value.get('type')!r} is not an adapter type: only 'lora' is supported")
        unknown = sorted(set(value) - {"type", "rank", "alpha", "dropout", "target_modules", "quantize_base"})
        if unknown:
            raise ValueError(f"unknown LoRA setting(s): {', '.join(map(str, unknown))} (use rank, alpha, dropout, target_modules, quantize_base)")
        value = LoRA.from_dict(value)
    if not isinstance(value, LoRA):
        raise ValueError(f"{value!r} is not an adapter: use 'lora', 'qlora', a tunedeck.LoRA(...), or None")
    rank = value.rank
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= 1024:
        raise ValueError(f"rank {rank!r} must be a whole number from 1 to 1024 (16 is a good start)")
    alpha = value.alpha if value.alpha is not None else 2 * rank
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 10_000:
        raise ValueError(f"alpha {value.alpha!r} must be a number above 0 (default: 2 * rank)")
    dropout = value.dropout
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout {dropout!r} must be a number from 0 up to (not including) 1")
    modules = value.target_modules
    if modules == "all-linear":
        modules = None  # the default, said explicitly
    if isinstance(modules, str) and modules != "attention":
        modules = [modules]
    if isinstance(modules, (list, tuple)):
        if not modules or not all(isinstance(m, str) and _MODULE_NAME.match(m) for m in modules):
            raise ValueError(f"target_modules {value.target_modules!r} must be None (all linear layers), 'attention' or a list of layer names such as ['q_proj', 'v_proj']")
        modules = list(modules)
    elif modules is not None and modules != "attention":
        raise ValueError(f"target_modules {modules!r} must be None (all linear layers), 'attention' or a list of layer names")
    if value.quantize_base is not None and value.quantize_base not in QUANTIZE_BASE:
        raise ValueError(f"quantize_base {value.quantize_base!r} must be None or '4bit'")
    return {"type": "lora", "rank": rank, "alpha": float(alpha), "dropout": float(dropout),
            "target_modules": modules, "quantize_base": value.quantize_base}


def describe_adapter(adapter: dict | None) -> str:
    """'full fine-tuning' or 'LoRA r=16, alpha=32, attention projections' for events and the UI."""
    if not adapter:
        return "full fine-tuning"
    modules = adapter.get("target_modules")
    where = "all linear layers" if modules is None else ("attention projections" if modules == "attention" else ", ".join(modules))
    base = "QLoRA (4-bit base)" if adapter.get("quantize_base") == "4bit" else "LoRA"
    return f"{base} r={adapter['rank']}, alpha={adapter['alpha']:g}, dropout={adapter['dropout']:g}, {where}"
