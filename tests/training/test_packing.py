"""Packing: rows never exceed their capacity, and packed examples give exactly their lone losses."""

from __future__ import annotations

import random

import pytest
import torch

from tunedeck.training.failures import StopSignal
from tunedeck.training.loss import loss_sum, per_example_losses
from tunedeck.training.models import Device
from tunedeck.training.packing import collate, micro_batches, pack, row_capacity
from tunedeck.training.recipe import train_step
from tunedeck.training.tokenize import Tokenized, tokenize_document_blocks, tokenize_prompt_response


def test_pack_fits_every_example_once_and_keeps_row_count_across_seeds():
    rng = random.Random(3)
    lengths = [rng.randint(1, 100) for _ in range(300)] + [100] * 20
    layouts = [pack(lengths, 128, seed) for seed in (None, 1, 2)]
    for rows in layouts:
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    assert len({len(rows) for rows in layouts}) == 1  # the schedule can count on it
    assert layouts[1] != layouts[2]  # but each epoch groups and orders differently
    assert sum(lengths) / (128 * len(layouts[0])) > 0.9  # and packs tightly


def test_examples_longer_than_the_capacity_get_a_row_of_their_own():
    lengths = [300, 50, 40, 30, 200, 120]
    rows = pack(lengths, 128)
    assert [0] in rows and [4] in rows
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows if len(row) > 1)
    assert row_capacity(context_length=4096, pack_tokens=512) == 512
    assert row_capacity(context_length=256, pack_tokens=512) == 256


def test_micro_batches_bound_the_padded_tokens():
    def row(n):
        return [Tokenized([1] * n, [1] * n)]

    rows = [row(500), row(400), row(100), row(1000), row(50)]
    groups = micro_batches(rows, 1024)
    assert [[len(r[0]) for r in g] for g in groups] == [[500, 400], [100], [1000], [50]]
    assert [r for g in groups for r in g] == rows


def test_single_examples_of_one_length_need_no_mask():
    blocks = [Tokenized([1, 2, 3, 4], [1, 2, 3, 4]), Tokenized([5, 6, 7, 8], [5, 6, 7, 8])]
    batch = collate([[b] for b in blocks], pad_id=0)
    assert batch.attention_mask is None and batch.tokens == 8
    assert batch.targets.tolist() == [[2, 3, 4, -100], [6, 7, 8, -100]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]


def test_collate_mask_positions_and_targets(tiny_tokenizer):
    a = Tokenized([5, 6, 7], [-100, 6, 7])
    b = Tokenized([8, 9], [8, 9])
    batch = collate([[a, b]], pad_id=0)
    assert batch.input_ids.shape == (1, 8) and batch.tokens == 5
    assert batch.input_ids[0].tolist() == [5, 6, 7, 8, 9, 0, 0, 0]
    assert batch.position_ids[0, :5].tolist() == [0, 1, 2, 0, 1]
    # Each example predicts only its own next tokens; b's first token is never a target of a's last.
    assert batch.targets[0].tolist() == [6, 7, -100, 9, -100, -100, -100, -100]
    allowed = (batch.attention_mask[0, 0] == 0).int()
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0, 0],
            [0, 0, 0, 1, 0, 0, 0, 0],
            [0, 0, 0, 1, 1, 0, 0, 0],
            [0, 0, 0, 0, 0, 1, 0, 0],
            [0, 0, 0, 0, 0, 0, 1, 0],
            [0, 0, 0, 0, 0, 0, 0, 1],
        ]
    )
    assert torch.equal(allowed, expected)
    assert batch.attention_mask.min() == torch.finfo(torch.float32).min


@pytest.fixture(scope="module")
def model_and_examples(tiny_model, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa")
    # Random weights are too small to make attention matter much: scale them up so a leak would show.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    model.eval()
    tok = tiny_tokenizer
    examples = [
        tokenize_prompt_response(tok, "What is the capital of France?", "Paris, of course."),
        tokenize_prompt_response(tok, "Say hello.", "Hello there!"),
        *tokenize_document_blocks(tok, ["Once upon a time there was a small language model."], 64),
    ]
    return model, examples


def test_packed_row_gives_each_example_its_lone_losses(model_and_examples):
    model, examples = model_and_examples
    packed = per_example_losses(model, collate([examples], pad_id=0))[0]
    padded = per_example_losses(model, collate([[e] for e in examples], pad_id=0))
    start = 0
    for i, e in enumerate(examples):
        n = len(e)
        alone = padded[i, :n]
        assert alone[: n - 1].abs().sum() > 0  # really computed something
        assert torch.allclose(packed[start : start + n], alone, atol=1e-5, rtol=0), i
        start += n
    # Summed loss and token count agree too (what the training step uses).
    with torch.no_grad():
        packed_sum, packed_n = loss_sum(model, collate([examples], 0))
        padded_sum, padded_n = loss_sum(model, collate([[e] for e in examples], 0))
    assert packed_n == padded_n
    assert abs(float(packed_sum) - float(padded_sum)) < 1e-4


def test_position_ids_alone_would_let_examples_attend_to_each_other(model_and_examples):
    """Why the 4D mask exists: a plain causal mask with restarted position ids leaks on CPU sdpa."""
    model, examples = model_and_examples
    batch = collate([examples], pad_id=0)
    leaky = collate([examples], pad_id=0)
    length = leaky.input_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    leaky.attention_mask = torch.zeros(1, 1, length, length).masked_fill(~causal, torch.finfo(torch.float32).min)
    exact = per_example_losses(model, batch)[0]
    leaked = per_example_losses(model, leaky)[0]
    first = len(examples[0])
    assert torch.allclose(exact[:first], leaked[:first], atol=1e-5)  # the first example sees nothing before it
    assert (exact[first:] - leaked[first:]).abs().max() > 1e-3  # the others see their predecessors


def test_gradient_of_a_step_does_not_depend_on_packing(tiny_model, model_and_examples):
    """Loss normalised by the step's loss tokens: packed and unpacked steps give the same gradient."""
    from transformers import AutoModelForCausalLM

    _, examples = model_and_examples
    cpu = Device(torch.device("cpu"), None)
    grads = []
    for rows, micro in (([examples], 64), ([[e] for e in examples], 8), ([[e] for e in examples], 256)):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # keep the weights; look at the gradient
        loss, tokens, norm = train_step(model, _KeepGrad(optimizer), rows, micro, 0, cpu, StopSignal())
        grads.append((loss, norm, torch.cat([p.grad.flatten() for p in model.parameters()])))
    for loss, norm, grad in grads[1:]:
        assert abs(loss - grads[0][0]) < 1e-5
        assert torch.allclose(grad, grads[0][2], atol=1e-6)


class _KeepGrad:
    """An optimizer whose step and zero_grad leave the gradients in place for the test to read."""

    def __init__(self, inner):
        self.inner = inner

    def step(self):
        pass

    def zero_grad(self, set_to_none=True):
        pass


def test_plain_causal_path_matches_the_masked_path(model_and_examples):
    model, examples = model_and_examples
    block = examples[2]
    plain = collate([[block]], pad_id=0)
    masked = collate([[block], [examples[1]]], pad_id=0)  # different lengths: the 4D mask is built
    assert plain.attention_mask is None and masked.attention_mask is not None
    n = len(block)
    assert torch.allclose(per_example_losses(model, plain)[0, :n], per_example_losses(model, masked)[0, :n], atol=1e-5)
