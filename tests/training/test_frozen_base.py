"""A frozen base held in bf16 and computed in float32 gives float32 results of the bf16-rounded weights."""

from __future__ import annotations

import copy

import torch

from tunedeck.training.frozen_base import store_in_bf16


def _model(tiny_model, dtype):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=dtype, attn_implementation="sdpa")


def test_linear_weights_are_bf16_and_the_residual_stream_float32(tiny_model):
    model = _model(tiny_model, torch.bfloat16)
    saved = store_in_bf16(model)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    embedding = model.get_input_embeddings()
    untied = [m for m in linears if m.weight is not embedding.weight]
    assert untied and all(m.weight.dtype == torch.bfloat16 for m in untied)
    assert saved == sum(m.weight.numel() * 2 for m in untied)
    assert embedding.weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "norm" in n)
    out = model(input_ids=torch.tensor([[1, 2, 3, 4]]), output_hidden_states=True)
    assert out.logits.dtype == torch.float32 and all(h.dtype == torch.float32 for h in out.hidden_states)


def test_outputs_and_lora_gradients_equal_a_float32_model_of_the_rounded_weights(tiny_model):
    from peft import LoraConfig, get_peft_model

    stored = _model(tiny_model, torch.bfloat16)
    reference = _model(tiny_model, torch.bfloat16).float()  # the same rounded weights, all float32
    store_in_bf16(stored)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0)
    torch.manual_seed(0)
    a = get_peft_model(stored, copy.deepcopy(config))
    torch.manual_seed(0)
    b = get_peft_model(reference, copy.deepcopy(config))
    for (name_a, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        if pa.requires_grad:  # LoRA B starts at zero: make the adapters do something
            with torch.no_grad():
                pa.normal_(0, 0.05, generator=torch.Generator().manual_seed(hash(name_a) % 2**31))
                pb.copy_(pa)
    ids = torch.tensor([[5, 9, 33, 70, 2, 8, 100, 41]])
    loss_a = a(input_ids=ids, labels=ids).loss
    loss_b = b(input_ids=ids, labels=ids).loss
    assert torch.allclose(loss_a, loss_b, atol=1e-5)
    loss_a.backward()
    loss_b.backward()
    grads_a = {n: p.grad for n, p in a.named_parameters() if p.requires_grad}
    grads_b = {n: p.grad for n, p in b.named_parameters() if p.requires_grad}
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-5, rtol=1e-4), name
    assert all(not p.requires_grad or p.dtype == torch.float32 for p in a.parameters())
