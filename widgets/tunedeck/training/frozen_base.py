"""A frozen base stored in bf16 but computed in float32: LoRA on big models on CPUs without bf16 units.

A 7B base needs 27 GB in float32 and 13.5 GB in bf16. Where the CPU has bf16 units (AVX512-BF16, AMX)
or the run is on a bf16 GPU, the base is simply held and computed in bf16 under autocast. Where it has
not (AVX2-only CPUs), a bf16 matmul runs at 0.01-0.4x float32 (training/precision.py measures it), so
computing in bf16 would make a big model unusably slow. Instead every frozen linear layer keeps its
weight in bf16 and upcasts it per call: measured here on a 4096 x 11008 layer at 128 tokens, 0.66x the
float32 matmul against 0.31x for bf16 compute, at half the weight memory. Embeddings and norms (a small
share of the parameters) are held in float32 so the residual stream stays float32.

The backward pass saves the bf16 weight, not the float32 copy, so the copies never accumulate.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F


class _UpcastLinear(torch.autograd.Function):
    """y = x W^T + b with W (and b) stored in a narrower dtype; no gradient for W or b (frozen)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (weight,) = ctx.saved_tensors
        return grad @ weight.to(grad.dtype), None, None


def _upcast_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if x.dtype == self.weight.dtype:
        return F.linear(x, self.weight, self.bias)
    return _UpcastLinear.apply(x, self.weight, self.bias)


def store_in_bf16(model: torch.nn.Module) -> int:
    """Hold ``model``'s frozen linear weights in bf16, computed in float32; everything else in float32.

    Call on a frozen model loaded in bf16, before adapters are attached. Returns how many bytes the
    bf16 weights save against float32.
    """
    saved = 0
    linear_params: set[int] = set()
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    for module in model.modules():
        # A head tied to the input embeddings stays float32 with them: its weight *is* the embedding.
        if isinstance(module, torch.nn.Linear) and id(module.weight) not in embeddings:
            for p in module.parameters(recurse=False):
                linear_params.add(id(p))
            if module.weight.dtype != torch.bfloat16:
                module.to(torch.bfloat16)
            module.forward = types.MethodType(_upcast_forward, module)
            saved += module.weight.numel() * 2
    for module in model.modules():
        for _name, p in list(module.named_parameters(recurse=False)):
            if id(p) not in linear_params and p.dtype != torch.float32:
                p.data = p.data.float()  # embeddings and norms: small, and they set the residual stream's dtype
        for name, b in list(module.named_buffers(recurse=False)):
            if b.is_floating_point() and b.dtype != torch.float32:
                module._buffers[name] = b.float()
    return saved
