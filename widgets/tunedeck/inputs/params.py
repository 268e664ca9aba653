"""Parsing and checking of create() parameters that need no data and no model files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tunedeck.types.create_params import DEFAULT_TASK_TYPE  # create()'s default, defined once

TASK_TYPES = ("CHAT_COMPLETION", "INSTRUCTION_FINETUNE", "CONTINUED_PRETRAIN")
DEFAULT_DURATION = "1ep"
DEFAULT_MAX_CONTEXT = 8192

_DURATION = re.compile(r"^\s*(\d[\d_]*)\s*(ep|tok|ba)\s*$")
# The most a run may be asked to train: far above any sensible run on one machine, low enough that a
# typo (10000000000ep) is refused instead of silently running for ever.
MAX_DURATION = {"ep": 1_000, "ba": 1_000_000, "tok": 1_000_000_000_000}
_UNIT_NAMES = {"ep": "epochs", "ba": "batches (optimizer steps)", "tok": "tokens"}
MAX_CONTEXT_LENGTH = 1_048_576
# Registered model names: <catalog>.<schema>.<model>, each part letters, digits, _ and -.
_REGISTER_PART = r"[A-Za-z0-9_][A-Za-z0-9_\-]*"
_REGISTER = re.compile(rf"^{_REGISTER_PART}\.{_REGISTER_PART}(\.{_REGISTER_PART})?$")
MAX_NAME_PART = 128
MAX_REGISTERED_NAME = 255
MAX_EXPERIMENT_PATH = 500
MAX_PATH_SEGMENT = 200
MAX_EVAL_PROMPTS = 100
MAX_EVAL_PROMPT_CHARS = 20_000
MAX_USER_NAME = 128


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
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"must be a string such as '3ep', found {type(text).__name__}")
    text_s = str(text)
    m = _DURATION.match(text_s) if len(text_s) <= 40 else None
    if not m:
        raise ValueError(
            f"{_short(text_s)} is not a duration: use a whole number followed by ep (epochs), tok (tokens) "
            "or ba (batches), e.g. '3ep', '1_000_000tok', '200ba'"
        )
    digits, unit = m.group(1).replace("_", ""), m.group(2)
    limit = MAX_DURATION[unit]
    value = int(digits) if len(digits) <= 20 else limit + 1
    if value <= 0:
        raise ValueError(f"{text!r}: the duration must be greater than zero")
    if value > limit:
        raise ValueError(f"{text!r} is above the limit of {limit:,}{unit} ({limit:,} {_UNIT_NAMES[unit]})")
    return Duration(value, unit)


def parse_learning_rate(value: str | float | None) -> float | None:
    """The reference passes learning_rate as a string ('5e-7'); accept numbers too."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or (isinstance(value, str) and len(value) > 40):
        raise ValueError(f"{_short(value)} is not a number (e.g. 1e-5)")
    try:
        lr = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{_short(value)} is not a number (e.g. 1e-5)") from None
    if not (0.0 < lr < 1.0):
        raise ValueError(f"{value!r} is out of range: a learning rate must be above 0 and below 1")
    return lr


def parse_context_length(value: str | int | None) -> int | None:
    if value is None or value == "":
        return None
    text = str(value).replace("_", "").strip()
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not re.fullmatch(r"[+-]?\d{1,20}", text):
        raise ValueError(f"{_short(value)} is not a whole number of tokens")
    n = int(text)
    if n < 8:
        raise ValueError(f"{value!r} is too small: a context length must be at least 8 tokens")
    if n > MAX_CONTEXT_LENGTH:
        raise ValueError(f"{value!r} is above the limit of {MAX_CONTEXT_LENGTH:,} tokens")
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
    if value is not None and not isinstance(value, str):
        raise ValueError(f"must be one of {', '.join(TASK_TYPES)}, found {type(value).__name__}")
    task = (value or DEFAULT_TASK_TYPE).strip().upper()
    if task not in TASK_TYPES:
        raise ValueError(f"{_short(value)} is not a task type: use one of {', '.join(TASK_TYPES)}")
    return task


def registered_model_name(register_to: str, run_name: str) -> str:
    """'<catalog>.<schema>' or '<catalog>.<schema>.<name>' -> the full three-part name.

    Each part is 1-128 letters, digits, _ and -, and the full name at most 255 characters.
    """
    if isinstance(register_to, str) and len(register_to.strip()) > MAX_REGISTERED_NAME:
        raise ValueError(
            f"{_short(register_to, 40)} is too long: a registered model name may have at most {MAX_REGISTERED_NAME} characters"
        )
    if not isinstance(register_to, str) or not _REGISTER.match(register_to.strip()):
        raise ValueError(
            f"{_short(register_to)} is not '<catalog>.<schema>' or '<catalog>.<schema>.<model name>' "
            "(letters, digits, _ and -, separated by dots)"
        )
    name = register_to.strip()
    parts = name.split(".")
    long_part = next((p for p in parts if len(p) > MAX_NAME_PART), None)
    if long_part is not None:
        raise ValueError(
            f"the part {_short(long_part, 40)} is {len(long_part):,} characters long; each part may have at most {MAX_NAME_PART}"
        )
    full = name if len(parts) == 3 else f"{name}.{run_name}"
    if len(full) > MAX_REGISTERED_NAME:
        raise ValueError(
            f"the registered model name {_short(full, 60)} is {len(full):,} characters long; "
            f"at most {MAX_REGISTERED_NAME} are allowed"
        )
    return full


def _control(text: str) -> bool:
    return any(ord(ch) < 32 or 127 <= ord(ch) < 160 or ch in "\u2028\u2029" for ch in text)


def check_experiment_path(path: str) -> str:
    """An MLflow experiment name such as '/Users/me/my-run': its artifacts live under the service's
    artifact root at this path, so it may not leave it: no '..' or '.' segment, no empty segment, no
    control character or backslash, at most 500 characters and 200 per segment."""
    if not isinstance(path, str):
        raise ValueError(f"must be a string such as '/Users/me/my-experiment', found {type(path).__name__}")
    if not path.strip():
        raise ValueError("is empty: pass a path such as '/Users/me/my-experiment', or leave it out")
    if len(path) > MAX_EXPERIMENT_PATH:
        raise ValueError(f"is {len(path):,} characters long; at most {MAX_EXPERIMENT_PATH} are allowed")
    if _control(path):
        raise ValueError(f"{_short(path)} contains a control character")
    if "\\" in path:
        raise ValueError(f"{_short(path)} contains a backslash: separate the parts with '/'")
    if path != path.strip():
        raise ValueError(f"{_short(path)} starts or ends with white space")
    segments = path.strip("/").split("/") if path.strip("/") else []
    if not segments:
        raise ValueError(f"{_short(path)} names no experiment: pass a path such as '/Users/me/my-experiment'")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise ValueError(f"{_short(path)} has an empty, '.' or '..' part: experiment paths may not leave their folder")
        if len(segment.encode("utf-8")) > MAX_PATH_SEGMENT:
            raise ValueError(f"the part {_short(segment, 40)} is longer than {MAX_PATH_SEGMENT} bytes")
        if segment != segment.strip():
            raise ValueError(f"the part {_short(segment, 40)} starts or ends with white space")
    return path


def check_user_name(name: str | None) -> str | None:
    """created_by: a user name, also the folder of the default experiment (/Users/<name>/<run>)."""
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise ValueError("must be a non-empty string (a user name)")
    if len(name) > MAX_USER_NAME:
        raise ValueError(f"is {len(name):,} characters long; at most {MAX_USER_NAME} are allowed")
    if _control(name) or "/" in name or "\\" in name or name.strip() in (".", "..") or name != name.strip():
        raise ValueError(f"{_short(name)} is not a user name (no '/', '\\', control characters or surrounding spaces)")
    return name


def check_eval_prompts(prompts: Any) -> list[str] | None:
    """None | a string | a list of strings -> a list of at most 100 non-empty prompts of at most 20,000 characters."""
    if prompts is None:
        return None
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        found = type(prompts).__name__ if not isinstance(prompts, (list, tuple)) else "a list with a non-string item"
        raise ValueError(
            "must be a list of strings (or one string), found "
            f"{_json_kind(prompts) if not isinstance(prompts, (list, tuple)) else found}"
        )
    if len(prompts) > MAX_EVAL_PROMPTS:
        raise ValueError(
            f"{len(prompts):,} prompts; at most {MAX_EVAL_PROMPTS} are allowed (each is generated at every checkpoint)"
        )
    for i, p in enumerate(prompts):
        if not p.strip():
            raise ValueError(f"prompt {i} is empty")
        if len(p) > MAX_EVAL_PROMPT_CHARS:
            raise ValueError(f"prompt {i} is {len(p):,} characters long; at most {MAX_EVAL_PROMPT_CHARS:,} are allowed")
    return list(prompts)


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object (a dict)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return type(value).__name__


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return repr(value) if isinstance(value, str) else text
    return repr(text[:limit]) + f"... ({len(text):,} characters)"


ADAPTER_NAMES: dict[str, dict[str, Any]] = {"lora": {}, "qlora": {"quantize_base": "4bit"}}
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
            raise ValueError(
                f"{value!r} is not an adapter: use 'lora', 'qlora', a tunedeck.LoRA(...), or None for full fine-tuning"
            )
        value = LoRA(**ADAPTER_NAMES[key])
    if isinstance(value, dict):
        kind = str(value.get("type", "lora")).lower()
        if kind != "lora":
            raise ValueError(f"type {value.get('type')!r} is not an adapter type: only 'lora' is supported")
        unknown = sorted(set(value) - {"type", "rank", "alpha", "dropout", "target_modules", "quantize_base"})
        if unknown:
            raise ValueError(
                f"unknown LoRA setting(s): {', '.join(map(str, unknown))} "
                "(use rank, alpha, dropout, target_modules, quantize_base)"
            )
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
    modules: list[str] | tuple[str, ...] | str | None = value.target_modules
    if modules == "all-linear":
        modules = None  # the default, said explicitly
    if isinstance(modules, str) and modules != "attention":
        modules = [modules]
    if isinstance(modules, (list, tuple)):
        if not modules or not all(isinstance(m, str) and _MODULE_NAME.match(m) for m in modules):
            raise ValueError(
                f"target_modules {value.target_modules!r} must be None (all linear layers), 'attention' or a list "
                "of layer names such as ['q_proj', 'v_proj']"
            )
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
    where = (
        "all linear layers" if modules is None else ("attention projections" if modules == "attention" else ", ".join(modules))
    )
    base = "QLoRA (4-bit base)" if adapter.get("quantize_base") == "4bit" else "LoRA"
    return f"{base} r={adapter['rank']}, alpha={adapter['alpha']:g}, dropout={adapter['dropout']:g}, {where}"
