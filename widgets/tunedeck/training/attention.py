"""Which attention a run uses, and how a packed micro-batch is shown to it.

Packed rows hold several examples that must never attend to each other. There are two ways to
present such a batch to a Hugging Face model (transformers 5.x), and which one is right depends on
the attention implementation the model was loaded with:

``"dense"``   (B, L) rows plus an additive (B, 1, L, L) block-diagonal causal mask built by
              ``packing.collate``; transformers passes a 4D mask through untouched. sdpa and eager
              apply it exactly. It rules out the flash kernels and costs B x L x L memory.

``"varlen"``  the micro-batch flattened into one (1, T) row, ``attention_mask=None`` and position ids
              that restart at 0 for every example (plus ``cu_seqlens``/``max_seqlen`` on the batch).
              transformers turns the restarts into per-example isolation itself:
              - flash_attention_2/3/4: ``_flash_attention_forward`` sees a batch of one whose position ids
                are not one increasing run and calls ``flash_attn_varlen_func`` with cu_seqlens taken at
                every position-0 token (or the cu_seqlens passed in). With B > 1 it would *not* do that and
                the examples of a row would see each other: hence one flattened row.
              - flex_attention: ``create_causal_mask`` finds the segments (``find_packed_sequence_indices``)
                and builds a sparse BlockMask of "same segment and causal"; no L x L tensor.
              - sdpa/eager: the same detection, materialised as a (1, 1, T, T) boolean mask inside the
                model (correct, but no memory saved; so these implementations keep ``"dense"``).

On CUDA the plan prefers flash_attention_2 (when the ``flash_attn`` package is importable and the run
computes in fp16/bf16), then FlexAttention, then sdpa with the dense mask. On CPU it is sdpa with the
dense mask, eager as the fallback, as before. FlexAttention is not used on CPU: with torch 2.13 it has
no backward there, compiles for a minute or more per shape, and returned wrong values at head_dim 16
for some lengths (forward isolation does hold at head_dim 64: tests/training/test_attention.py).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch

log = logging.getLogger(__name__)

PackedMask = Literal["dense", "varlen"]

FLASH_IMPLEMENTATIONS = frozenset({"flash_attention_2", "flash_attention_3", "flash_attention_4"})
VARLEN_IMPLEMENTATIONS = FLASH_IMPLEMENTATIONS | {"flex_attention"}
_HALF = (torch.float16, torch.bfloat16)

M = TypeVar("M")


@dataclass(frozen=True)
class AttentionPlan:
    """The ``attn_implementation`` to load the model with and how ``collate`` presents packed rows."""

    implementation: str  # "flash_attention_2" | "flex_attention" | "sdpa" | "eager" | ...
    packed_mask: PackedMask  # "dense": (B,1,L,L) float mask; "varlen": one flattened row, restarting positions

    @property
    def label(self) -> str:
        return f"{self.implementation} ({'variable-length' if self.packed_mask == 'varlen' else 'block-diagonal mask'})"


def plan_for(implementation: str) -> AttentionPlan:
    """The packed-batch presentation an attention implementation needs to keep examples apart."""
    return AttentionPlan(implementation, "varlen" if implementation in VARLEN_IMPLEMENTATIONS else "dense")


def plan_of_model(model: torch.nn.Module) -> AttentionPlan:
    """The plan for the implementation a loaded model really uses (after any fallback)."""
    return plan_for(_implementation_of(model) or "eager")


def candidates(
    device_type: str, compute_dtype: torch.dtype = torch.float32, prefer: str | None = None
) -> list[AttentionPlan]:
    """Plans to try in order on ``device_type`` (``prefer``, e.g. from an env override, goes first)."""
    order: list[str] = []
    if device_type == "cuda":
        if compute_dtype in _HALF and flash_attn_available():
            order.append("flash_attention_2")
        if flex_attention_available(device_type):
            order.append("flex_attention")
    order += ["sdpa", "eager"]
    if prefer:
        order = [prefer] + [name for name in order if name != prefer]
    return [plan_for(name) for name in order]


def choose_attention(
    device_type: str, compute_dtype: torch.dtype = torch.float32, prefer: str | None = None
) -> AttentionPlan:
    """The preferred plan on ``device_type`` (``"cuda"``, ``"cpu"``, ...) for a run computing in ``compute_dtype``."""
    return candidates(device_type, compute_dtype, prefer)[0]


def load_with_plan(
    load: Callable[[str], M], device_type: str, compute_dtype: torch.dtype = torch.float32, prefer: str | None = None
) -> tuple[M, AttentionPlan]:
    """``load(attn_implementation)`` with the first candidate the model class accepts; (model, its plan).

    Only a refusal of the attention implementation itself (a ValueError/ImportError that names it, as
    transformers raises for an architecture without flash/flex/sdpa support) moves on to the next
    candidate; any other error propagates at once.
    """
    plans = candidates(device_type, compute_dtype, prefer)
    for i, plan in enumerate(plans):
        try:
            model = load(plan.implementation)
        except (ValueError, ImportError) as error:
            if i == len(plans) - 1 or not _refuses(error, plan.implementation):
                raise
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            log.info("attention %s unavailable for this model (%s); trying %s",
                     plan.implementation, first_line, plans[i + 1].implementation)
            continue
        actual = _implementation_of(model)  # transformers may have settled on another one
        return model, plan_for(actual) if actual else plan
    raise AssertionError("unreachable")  # pragma: no cover


def flash_attn_available() -> bool:
    """The ``flash_attn`` package is installed and CUDA is there (transformers' own check, no hub kernels)."""
    try:
        from transformers.utils import is_flash_attn_2_available
    except ImportError:  # pragma: no cover - transformers is a dependency of the trainer
        return False
    try:
        return bool(is_flash_attn_2_available())
    except Exception:  # noqa: BLE001 - a broken flash_attn install must not break planning
        return False


def flex_attention_available(device_type: str) -> bool:
    """torch has FlexAttention and, on CUDA, triton to compile it (it is compiled at the first forward)."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except ImportError:
        return False
    if device_type == "cuda":
        return importlib.util.find_spec("triton") is not None
    return True


def _implementation_of(model: object) -> str | None:
    name = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return name if isinstance(name, str) and name else None


def _refuses(error: BaseException, implementation: str) -> bool:
    """Whether ``error`` is transformers declining ``implementation`` (not, say, a corrupt weights file)."""
    text = str(error).lower()
    phrases = (implementation.lower(), "flash attention", "flash_attn", "flex_attention", "flex attention",
               "scaled_dot_product_attention", "sdpa")
    return any(phrase in text for phrase in phrases)
