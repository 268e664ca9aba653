"""Parsing and checking of create() parameters that need no data and no model files."""

from __future__ import annotations

import re
from dataclasses import dataclass

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


def default_learning_rate(parameters: int | None) -> float:
    """Peak AdamW learning rate for full fine-tuning when the user gives none: smaller models take larger steps."""
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
