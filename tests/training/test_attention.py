"""Attention plans: every way a packed batch can reach the model keeps its examples exactly apart.

Each path that can run on this machine (CPU here, CUDA where there is one) is checked the same way on
a packed micro-batch of several rows: every example's logits equal those of the example run alone,
changing one example's tokens leaves every other example's logits unchanged, and no gradient flows
from one example's outputs into another example's inputs.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from tunedeck.training.attention import (
    AttentionPlan,
    candidates,
    choose_attention,
    load_with_plan,
    plan_for,
    plan_of_model,
)
from tunedeck.training.optim import make_optimizer
from tunedeck.training.packing import collate
from tunedeck.training.tokenize import IGNORE, Tokenized

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
# Two rows of different lengths (so the micro-batch has padding) holding examples of 1 to 13 tokens.
ROW_LENGTHS = [[13, 5, 1, 7], [9, 6]]
CHANGED = (0, 1)  # the example (row, index) whose tokens a test changes


def make_rows(vocab: int, seed: int = 0, changed: tuple[int, int] | None = None) -> list[list[Tokenized]]:
    rng = random.Random(seed)
    rows = []
    for r, lengths in enumerate(ROW_LENGTHS):
        row = []
        for i, n in enumerate(lengths):
            ids = [rng.randrange(4, vocab) for _ in range(n)]
            if (r, i) == changed:
                ids = [(x * 7 + 3) % (vocab - 4) + 4 for x in ids]
            labels = [IGNORE] * (n // 3) + ids[n // 3 :]  # a "prompt" without loss, as in real examples
            row.append(Tokenized(ids, labels))
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A tiny Llama with head_dim 64 (as real models; see the FlexAttention note below)."""
    from tunedeck.training.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("attention") / "model", hidden_size=128, heads=2, layers=2)


def load(folder, implementation: str, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=implementation, dtype=dtype)
    # Random weights are too small to make attention matter much: scale them up so a leak would show.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    return model.to(DEVICE).eval()


def forward(model, batch, extra: dict | None = None, embeddings: list | None = None) -> torch.Tensor:
    hook = None
    if embeddings is not None:  # keep the input embeddings' gradient for the gradient-isolation check

        def keep(_module, _inputs, output):
            output.retain_grad()
            embeddings.append(output)

        hook = model.get_input_embeddings().register_forward_hook(keep)
    try:
        return model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
            **(extra or {}),
        ).logits.float()
    finally:
        if hook is not None:
            hook.remove()


def spans(rows, mode: str) -> list[tuple[int, int, int]]:
    """(batch row, start, length) of each example, in row order, as ``collate`` lays them out."""
    out, flat = [], 0
    for r, row in enumerate(rows):
        start = 0
        for e in row:
            if mode == "varlen":
                out.append((0, flat, len(e)))
                flat += len(e)
            else:
                out.append((r, start, len(e)))
                start += len(e)
    return out


# --- a CPU stand-in for the flash-attention kernels ----------------------------------------------
# transformers' real flash path (masking_utils.flash_attention_mask, _flash_attention_forward: which
# branch, cu_seqlens from position ids) runs unchanged; only the kernels it would import from
# flash_attn are replaced by exact per-sequence attention. This checks on any machine that a varlen
# batch makes transformers call the varlen kernel with our example boundaries; the CUDA test below
# runs the real kernels.


def _reference_flash(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False):
    """flash_attn_func: (B, L, H, D) in and out, one causal attention per row."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal, scale=softmax_scale
    )
    return out.transpose(1, 2)


def _reference_flash_varlen(
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0, softmax_scale=None, causal=False
):
    """flash_attn_varlen_func: (T, H, D) in and out, one causal attention per [cu[i], cu[i+1]) segment."""
    out = torch.empty_like(q)
    bounds = cu_seqlens_q.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end > start:
            segment = [x[start:end].transpose(0, 1)[None] for x in (q, k, v)]
            out[start:end] = F.scaled_dot_product_attention(*segment, is_causal=causal, scale=softmax_scale)[0].transpose(0, 1)
    _reference_flash_varlen.calls += 1
    return out


_reference_flash_varlen.calls = 0


@pytest.fixture
def reference_flash(monkeypatch):
    import transformers.modeling_flash_attention_utils as fa

    process = fa._lazy_define_process_function(_reference_flash_varlen)
    kernels = ((_reference_flash, _reference_flash_varlen, None, fa._pad_input, fa._unpad_input), (process, dict))
    monkeypatch.setattr(fa, "lazy_import_flash_attention", lambda *args, **kwargs: kernels)
    _reference_flash_varlen.calls = 0
    return _reference_flash_varlen


# --- the paths -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttnPath:
    name: str
    implementation: str
    mode: str  # collate's packed_mask
    dtype: torch.dtype = torch.float32
    extra: bool = False  # also pass the batch's cu_seqlens (FlashAttentionKwargs)


PATHS = [
    AttnPath("sdpa-dense", "sdpa", "dense"),
    AttnPath("eager-dense", "eager", "dense"),
    AttnPath("sdpa-varlen", "sdpa", "varlen"),  # transformers builds the mask from the position ids
    AttnPath("eager-varlen", "eager", "varlen"),
    AttnPath("flash-reference-varlen", "flash_attention_2:reference", "varlen"),
    AttnPath("flash-reference-varlen-cu_seqlens", "flash_attention_2:reference", "varlen", extra=True),
    AttnPath("flex-varlen", "flex_attention", "varlen"),
    AttnPath("flash_attention_2-varlen", "flash_attention_2", "varlen", torch.bfloat16),
    AttnPath("flash_attention_2-varlen-cu_seqlens", "flash_attention_2", "varlen", torch.bfloat16, extra=True),
]


def _skip_reason(path: AttnPath) -> str | None:
    if path.implementation == "flash_attention_2":
        if not CUDA:
            return "flash_attention_2 needs a CUDA GPU; this machine has none (the CPU reference-kernel path runs instead)"
        from tunedeck.training.attention import flash_attn_available

        if not flash_attn_available():
            return "the flash_attn package is not installed"
    if path.implementation == "flex_attention":
        if not CUDA and not os.environ.get("TUNEDECK_TEST_FLEX_CPU"):
            return (
                "FlexAttention is not a CPU path of tunedeck: on CPU (torch 2.13) it compiles for ~1-2 min per "
                "shape on 2 cores and has no backward; runs on CUDA, or here with TUNEDECK_TEST_FLEX_CPU=1 "
                "(forward checks only)"
            )
        from tunedeck.training.attention import flex_attention_available

        if not flex_attention_available(DEVICE.type):
            return "FlexAttention is not available here (no torch.nn.attention.flex_attention or no triton)"
    return None


def _load_path(folder, path: AttnPath):
    if path.implementation == "flash_attention_2:reference":
        model = load(folder, "sdpa")
        model.config._attn_implementation = "flash_attention_2"  # dispatch to transformers' flash path
        return model
    return load(folder, path.implementation, path.dtype)


def _close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> tuple[bool, float]:
    """Within float rounding, relative to the logits' scale (here up to ~16): 1e-5 of it in float32 on
    CPU (matmuls over T vs n rows round differently; a leak moves logits by > 1e-2), 1e-4 with CUDA
    kernels, 2e-2 in bf16."""
    diff = float((a - b).abs().max())
    scale = max(1.0, float(b.abs().max()))
    relative = 2e-2 if dtype != torch.float32 else 1e-4 if CUDA else 1e-5
    return diff <= relative * scale, diff


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_packed_examples_are_isolated(model_folder, path, request):
    reason = _skip_reason(path)
    if reason:
        pytest.skip(reason)
    reference = request.getfixturevalue("reference_flash") if "reference" in path.implementation else None
    model = _load_path(model_folder, path)
    vocab = model.config.vocab_size
    rows = make_rows(vocab)
    batch = collate(rows, pad_id=0, packed_mask=path.mode).to(DEVICE)
    if path.mode == "varlen":
        assert batch.attention_mask is None and batch.input_ids.shape[0] == 1  # no (B, 1, L, L) tensor at all
    else:
        assert batch.attention_mask is not None and batch.attention_mask.dim() == 4
    extra = batch.varlen_kwargs() if path.extra else None
    autocast = torch.autocast(DEVICE.type, dtype=path.dtype, enabled=path.dtype != torch.float32)

    with torch.no_grad(), autocast:
        packed = forward(model, batch, extra)
        examples = [e for row in rows for e in row]
        for k, ((b, start, n), example) in enumerate(zip(spans(rows, path.mode), examples)):
            ids = torch.tensor([example.input_ids], device=DEVICE)
            alone = model(input_ids=ids, position_ids=torch.arange(n, device=DEVICE)[None], use_cache=False).logits.float()
            ok, diff = _close(packed[b, start : start + n], alone[0], path.dtype)
            assert ok, f"{path.name}: example {k} ({n} tokens) differs from itself alone by {diff:g}"

        # Changing one example's tokens changes its own logits and nobody else's.
        changed_rows = make_rows(vocab, changed=CHANGED)
        changed = forward(model, collate(changed_rows, pad_id=0, packed_mask=path.mode).to(DEVICE), extra)
        target = sum(len(r) for r in ROW_LENGTHS[: CHANGED[0]]) + CHANGED[1]
        for k, (b, start, n) in enumerate(spans(rows, path.mode)):
            diff = float((changed[b, start : start + n] - packed[b, start : start + n]).abs().max())
            if k == target:
                assert diff > 1e-2, f"{path.name}: changing example {k} did not change it"
            else:
                ok, _ = _close(changed[b, start : start + n], packed[b, start : start + n], path.dtype)
                assert ok, f"{path.name}: changing example {target} changed example {k} by {diff:g}"

    if reference is not None:
        assert reference.calls > 0  # transformers really took the varlen branch

    # No gradient from one example's outputs reaches another example's inputs (what training relies on).
    if path.implementation == "flex_attention" and DEVICE.type == "cpu":
        return  # torch 2.13: "FlexAttention does not support backward on CPU"
    embeddings: list[torch.Tensor] = []
    with autocast:
        logits = forward(model, batch, extra, embeddings)
    (b, start, n) = spans(rows, path.mode)[target]
    logits[b, start : start + n].sum().backward()
    grad = embeddings[0].grad.float()
    own = torch.zeros_like(grad[..., 0], dtype=torch.bool)
    own[b, start : start + n] = True
    assert float(grad[own].abs().max()) > 0
    assert float(grad[~own].abs().max()) == 0.0, f"{path.name}: gradient leaks into other examples"


def test_flash_path_leaks_unless_the_rows_are_flattened(model_folder, reference_flash):
    """Why "varlen" is one row: transformers' flash path infers sequences from position ids only for a
    batch of one; for several rows without a mask it runs plain causal attention over each row."""
    model = _load_path(model_folder, AttnPath("", "flash_attention_2:reference", "varlen"))
    rows = make_rows(model.config.vocab_size)
    dense = collate(rows, pad_id=0)
    dense.attention_mask = None  # (B, L) rows with restarting positions and no mask
    changed = collate(make_rows(model.config.vocab_size, changed=CHANGED), pad_id=0)
    changed.attention_mask = None
    with torch.no_grad():
        a, b = forward(model, dense.to(DEVICE)), forward(model, changed.to(DEVICE))
    start = sum(ROW_LENGTHS[0][: CHANGED[1] + 1])  # the example right after the changed one
    assert float((a[0, start:] - b[0, start:]).abs().max()) > 1e-2  # it saw the changed example
    assert reference_flash.calls == 0  # the varlen kernel was never used


# --- the varlen layout --------------------------------------------------------------------------------


def test_varlen_collate_layout_matches_what_transformers_infers():
    from transformers.masking_utils import find_packed_sequence_indices
    from transformers.modeling_flash_attention_utils import _is_packed_sequence, prepare_fa_kwargs_from_position_ids

    a, b, c = Tokenized([5, 6, 7], [IGNORE, 6, 7]), Tokenized([8, 9], [8, 9]), Tokenized([4], [4])
    batch = collate([[a, b], [c]], pad_id=0, packed_mask="varlen")
    assert batch.attention_mask is None and batch.input_ids.shape == (1, 8) and batch.tokens == 6
    assert batch.input_ids[0].tolist() == [5, 6, 7, 8, 9, 4, 0, 0]
    assert batch.position_ids[0].tolist() == [0, 1, 2, 0, 1, 0, 0, 1]  # the padding tail is a segment too
    assert batch.targets[0].tolist() == [6, 7, IGNORE, 9, IGNORE, IGNORE, IGNORE, IGNORE]
    assert batch.cu_seqlens.tolist() == [0, 3, 5, 6, 8] and batch.cu_seqlens.dtype == torch.int32
    assert batch.max_seqlen == 3 and batch.loss_tokens == 3
    # transformers' flash path cuts at the same places ...
    assert _is_packed_sequence(batch.position_ids, 1)
    (cu_q, cu_k), (max_q, _) = prepare_fa_kwargs_from_position_ids(batch.position_ids)
    assert torch.equal(cu_q, batch.cu_seqlens) and int(max_q) == batch.max_seqlen
    # ... and so do its mask builders (sdpa, eager, flex).
    assert find_packed_sequence_indices(batch.position_ids)[0].tolist() == [0, 0, 0, 1, 1, 2, 3, 3]
    assert set(batch.varlen_kwargs()) == {"cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k"}
    moved = batch.to("cpu")
    assert torch.equal(moved.cu_seqlens, batch.cu_seqlens) and moved.max_seqlen == 3


def test_varlen_keeps_the_plain_path_and_dense_stays_the_default():
    blocks = [[Tokenized([1, 2, 3, 4], [1, 2, 3, 4])], [Tokenized([5, 6, 7, 8], [5, 6, 7, 8])]]
    plain = collate(blocks, pad_id=0, packed_mask="varlen")  # nothing to keep apart: (B, L), no mask
    assert plain.input_ids.shape == (2, 4) and plain.attention_mask is None and plain.varlen_kwargs() == {}
    packed = [[Tokenized([1, 2], [1, 2]), Tokenized([3], [3])]]
    assert collate(packed, pad_id=0).attention_mask.shape == (1, 1, 8, 8)
    with pytest.raises(ValueError):
        collate(packed, pad_id=0, packed_mask="flat")


def test_dense_and_varlen_give_the_same_losses(model_folder):
    """Same targets, same token count, same summed loss: the step's normalisation does not change."""
    model = load(model_folder, "sdpa")
    rows = make_rows(model.config.vocab_size)
    losses = []
    for mode in ("dense", "varlen"):
        batch = collate(rows, pad_id=0, packed_mask=mode).to(DEVICE)
        keep = batch.targets != IGNORE
        with torch.no_grad():
            logits = forward(model, batch)
        losses.append((float(F.cross_entropy(logits[keep], batch.targets[keep], reduction="sum")), batch.loss_tokens, batch.tokens))
    (dense, n_dense, t_dense), (varlen, n_varlen, t_varlen) = losses
    assert n_dense == n_varlen > 0 and t_dense == t_varlen == sum(map(sum, ROW_LENGTHS))
    assert abs(dense - varlen) <= 1e-5 * abs(dense)


# --- the plan --------------------------------------------------------------------------------------


def test_plan_on_cpu_is_sdpa_with_the_dense_mask():
    assert choose_attention("cpu") == AttentionPlan("sdpa", "dense")
    assert [p.implementation for p in candidates("cpu")] == ["sdpa", "eager"]
    assert all(p.packed_mask == "dense" for p in candidates("cpu"))
    assert choose_attention("cpu", prefer="eager") == AttentionPlan("eager", "dense")


def test_plan_on_cuda_prefers_varlen_kernels(monkeypatch):
    import tunedeck.training.attention as attention

    monkeypatch.setattr(attention, "flash_attn_available", lambda: True)
    monkeypatch.setattr(attention, "flex_attention_available", lambda device_type: True)
    assert choose_attention("cuda", torch.bfloat16) == AttentionPlan("flash_attention_2", "varlen")
    assert [p.implementation for p in candidates("cuda", torch.bfloat16)] == [
        "flash_attention_2", "flex_attention", "sdpa", "eager"
    ]
    # flash kernels need fp16/bf16: a float32 run gets FlexAttention
    assert choose_attention("cuda", torch.float32) == AttentionPlan("flex_attention", "varlen")
    monkeypatch.setattr(attention, "flash_attn_available", lambda: False)
    assert choose_attention("cuda", torch.bfloat16) == AttentionPlan("flex_attention", "varlen")
    monkeypatch.setattr(attention, "flex_attention_available", lambda device_type: False)
    assert choose_attention("cuda", torch.bfloat16) == AttentionPlan("sdpa", "dense")
    assert plan_for("flash_attention_3").packed_mask == "varlen" and plan_for("eager").packed_mask == "dense"


def test_load_with_plan_falls_back_only_when_the_attention_is_refused(monkeypatch, model_folder):
    import tunedeck.training.attention as attention

    monkeypatch.setattr(attention, "flash_attn_available", lambda: True)
    monkeypatch.setattr(attention, "flex_attention_available", lambda device_type: True)
    tried = []

    def refusing(implementation):
        tried.append(implementation)
        if implementation == "flash_attention_2":
            raise ValueError("FooForCausalLM does not support Flash Attention 2 yet.")
        if implementation == "flex_attention":
            raise ValueError("FooForCausalLM does not support an attention implementation through torch's flex_attention.")
        return load(model_folder, implementation)

    model, plan = load_with_plan(refusing, "cuda", torch.bfloat16)
    assert tried == ["flash_attention_2", "flex_attention", "sdpa"]
    assert plan == AttentionPlan("sdpa", "dense") == plan_of_model(model)

    def broken(implementation):
        raise ValueError("Unable to load weights from checkpoint file (corrupt)")

    with pytest.raises(ValueError, match="corrupt"):
        load_with_plan(broken, "cuda", torch.bfloat16)

    model, plan = load_with_plan(lambda name: load(model_folder, name), "cpu")
    assert plan == AttentionPlan("sdpa", "dense") and model.config._attn_implementation == "sdpa"


# --- the optimizer -------------------------------------------------------------------------------------


def test_make_optimizer_fuses_adamw_on_cuda_only():
    params = [torch.nn.Parameter(torch.randn(3, 4))]
    assert make_optimizer(params, 1e-3, (0.9, 0.95), 0.0, "cuda").defaults["fused"] is True
    assert not make_optimizer(params, 1e-3, (0.9, 0.95), 0.0, "cpu").defaults["fused"]


def test_fused_adamw_takes_the_same_steps():
    """The fused kernel is the same algorithm (checked with torch's CPU fused AdamW, or on CUDA)."""
    torch.manual_seed(0)
    start = [torch.randn(5, 7), torch.randn(7)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(5)]
    results = []
    for device_type in ("cpu", "cuda"):
        params = [torch.nn.Parameter(p.clone().to(DEVICE)) for p in start]
        optimizer = make_optimizer(params, 1e-2, (0.9, 0.95), 0.1, device_type)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.to(DEVICE)
            optimizer.step()
        results.append([p.detach().cpu() for p in params])
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-6)
