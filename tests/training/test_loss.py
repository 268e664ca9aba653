"""The chunked loss: same sum and gradients as projecting every loss position at once, far less memory."""

from __future__ import annotations

import weakref

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from tunedeck.training import loss as loss_module
from tunedeck.training.loss import decoder_and_head, loss_sum, projected_loss
from tunedeck.training.packing import collate
from tunedeck.training.tokenize import IGNORE, Tokenized


def tiny_llama(vocab: int = 300, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def packed_batch(vocab: int, seed: int = 1):
    """Two rows of packed examples, some tokens without a loss (prompt-like), so the mask and keep matter."""
    g = torch.Generator().manual_seed(seed)

    def example(n: int, prompt: int) -> Tokenized:
        ids = torch.randint(0, vocab, (n,), generator=g).tolist()
        return Tokenized(ids, [IGNORE] * prompt + ids[prompt:])

    rows = [[example(13, 4), example(9, 2), example(6, 0)], [example(21, 7), example(5, 1)]]
    return collate(rows, pad_id=0)


def reference_loss(model, batch) -> torch.Tensor:
    """Every position through the model's own head, then the loss positions: what chunking must equal."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   position_ids=batch.position_ids, use_cache=False).logits
    keep = batch.targets != IGNORE
    return F.cross_entropy(logits[keep].float(), batch.targets[keep], reduction="sum")


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def check_same_loss_and_gradients(model, batch) -> None:
    model.zero_grad(set_to_none=True)
    expected = reference_loss(model, batch)
    expected.backward()
    want = grads(model)
    model.zero_grad(set_to_none=True)
    got, count = loss_sum(model, batch)
    got.backward()
    have = grads(model)
    assert count == batch.loss_tokens > 0
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-5), (float(got), float(expected))
    assert want.keys() == have.keys() and want
    for name in want:
        assert torch.allclose(have[name], want[name], rtol=1e-5, atol=1e-6), f"gradient of {name} differs"


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 5 loss positions, so a tiny batch is cut into several (one would skip the recompute)."""
    monkeypatch.setattr(loss_module, "loss_chunk_rows", lambda vocab: 5)


def test_chunked_loss_and_gradients_equal_the_full_projection(small_chunks):
    model = tiny_llama()
    assert decoder_and_head(model) == (model.model, model.lm_head)
    check_same_loss_and_gradients(model, packed_batch(model.config.vocab_size))


def test_chunked_loss_under_peft_lora_trains_the_adapters_exactly(small_chunks):
    from peft import LoraConfig, get_peft_model

    base = tiny_llama()
    # init_lora_weights=False: random B as well as A, so the adapters change the output and get gradients
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False,
                                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    decoder, head = decoder_and_head(model)
    assert decoder is base.model and head is base.lm_head  # reached through PeftModel -> LoraModel -> Llama
    assert any("lora_A" in n for n, _ in decoder.named_modules())  # the decoder PEFT changed in place
    batch = packed_batch(base.config.vocab_size)
    check_same_loss_and_gradients(model, batch)
    assert all("lora_" in name for name in grads(model))


def test_chunked_loss_when_the_head_itself_has_an_adapter(small_chunks):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=4, lora_dropout=0.0, init_lora_weights=False,
                                                    target_modules=["q_proj", "lm_head"]))
    check_same_loss_and_gradients(model, packed_batch(model.config.vocab_size))
    assert any("lm_head.lora" in name for name in grads(model))


def test_chunked_loss_under_bf16_autocast_matches_the_model_head(small_chunks):
    model = tiny_llama()
    batch = packed_batch(model.config.vocab_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference_loss(model, batch)
    expected.backward()
    want = grads(model)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = loss_sum(model, batch)
    got.backward()
    have = grads(model)
    assert torch.allclose(got, expected, rtol=2e-2)
    assert all(have[name].dtype == torch.float32 for name in have)  # float32 weights get float32 gradients
    for name in ("lm_head.weight", "model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"):
        cosine = F.cosine_similarity(have[name].flatten(), want[name].flatten(), dim=0)
        assert cosine > 0.99, f"gradient of {name} differs under autocast (cosine {float(cosine):.4f})"


def test_chunked_loss_with_a_head_held_in_bf16_under_lora(small_chunks):
    """LoRA on a base held in bf16 and computed in float32 (frozen_base, what a 7B model gets on an
    AVX2 CPU): the untied head is a bf16 weight facing float32 hidden states. The chunked loss upcasts
    it as the head's own forward does; the adapters' gradients equal the model's own loss."""
    from peft import LoraConfig, get_peft_model

    from tunedeck.training.frozen_base import store_in_bf16

    base = tiny_llama()
    base.requires_grad_(False)
    store_in_bf16(base)
    assert base.lm_head.weight.dtype == torch.bfloat16 and base.model.embed_tokens.weight.dtype == torch.float32
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False,
                                            target_modules=["q_proj", "v_proj"]))
    check_same_loss_and_gradients(model, packed_batch(base.config.vocab_size))
    assert base.lm_head.weight.dtype == torch.bfloat16  # the upcast is a temporary, not a new weight


def test_without_gradients_the_chunks_are_not_checkpointed(small_chunks):
    model = tiny_llama()
    batch = packed_batch(model.config.vocab_size)
    with torch.no_grad():
        got, _ = loss_sum(model, batch)
        expected = reference_loss(model, batch)
    assert not got.requires_grad
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-5)


def test_architectures_with_logit_softcapping_keep_the_model_forward():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=8, max_position_embeddings=128, final_logit_softcapping=5.0)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config)
    assert decoder_and_head(model) is None
    check_same_loss_and_gradients(model, packed_batch(config.vocab_size))


def test_a_model_without_a_loss_position_gives_zero():
    model = tiny_llama()
    batch = packed_batch(model.config.vocab_size)
    batch.targets[:] = IGNORE
    got, count = loss_sum(model, batch)
    assert count == 0 and float(got.detach()) == 0.0


class Wrapped(torch.nn.Module):
    """A head that is not a plain nn.Linear (as PEFT's LoRA layer is not): takes the checkpointed path."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.linear = linear
        self.weight = linear.weight
        self.out_features = linear.out_features

    def forward(self, x):
        return self.linear(x)


class LiveTensors(TorchDispatchMode):
    """Bytes held by tensors that ops create (forward and backward), freed when their storage dies: peak."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = self.largest = 0
        self._keys: set[int] = set()

    def _free(self, key: int, n: int) -> None:
        self._keys.discard(key)
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key, n = storage.data_ptr(), storage.nbytes()
                self.largest = max(self.largest, t.numel())
                if n and key not in self._keys:
                    self._keys.add(key)
                    self.live += n
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key, n)
        return out


@pytest.mark.parametrize("adapted_head", [False, True], ids=["linear-head", "adapted-head"])
def test_chunked_loss_holds_one_chunk_of_logits_at_a_time(adapted_head):
    """A plain head computes each chunk's gradients in the forward; any other head (e.g. with a LoRA
    adapter) is checkpointed per chunk and recomputed in backward: both hold a chunk at a time."""
    torch.manual_seed(0)
    positions, hidden_size, vocab, chunk = 1024, 64, 8192, 64
    head = torch.nn.Linear(hidden_size, vocab, bias=False)
    hidden = torch.randn(positions, hidden_size, requires_grad=True)
    targets = torch.randint(0, vocab, (positions,))
    logits_bytes = positions * vocab * 4
    if adapted_head:
        head = Wrapped(head)

    with LiveTensors() as whole:  # what the old loss did: every position's logits at once
        full = loss_module._chunk_loss(head, hidden, targets)
        full.backward()
    full_grads = (hidden.grad.clone(), head.weight.grad.clone())
    hidden.grad = head.weight.grad = None
    with LiveTensors() as chunked:
        part = projected_loss(head, hidden, targets, chunk=chunk)
        part.backward()

    assert torch.allclose(part, full, rtol=1e-6)
    assert torch.allclose(hidden.grad, full_grads[0], rtol=1e-5, atol=1e-6)
    assert torch.allclose(head.weight.grad, full_grads[1], rtol=1e-5, atol=1e-6)
    assert whole.largest == positions * vocab and chunked.largest == chunk * vocab
    assert whole.peak >= 2 * logits_bytes  # logits + log-softmax (+ their gradients) of every position
    # chunked: the head's gradient plus a few chunks' worth of logits (logits, log-softmax, gradients of
    # both: ~4 chunks), however many positions there are; never the whole logits
    weight_grad, chunk_bytes = vocab * hidden_size * 4, chunk * vocab * 4
    assert chunked.peak - weight_grad <= 5 * chunk_bytes < logits_bytes / 3
    assert chunked.peak < whole.peak / 4


def test_default_chunks_are_about_32_mb_of_logits():
    from tunedeck.inputs.memory import LOSS_CHUNK_ELEMENTS, loss_chunk_rows

    assert loss_chunk_rows(49152) * 49152 <= LOSS_CHUNK_ELEMENTS
    assert loss_chunk_rows(151936) == 64  # never below 64 rows
    assert loss_chunk_rows(512) >= 1024


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Liger's fused linear cross-entropy is a Triton kernel: it needs a CUDA GPU")
def test_liger_fused_loss_on_cuda_equals_the_chunked_loss():
    pytest.importorskip("liger_kernel", reason="liger_kernel is not installed (optional: pip install liger-kernel)")
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 4096, bias=False).cuda()
    hidden = torch.randn(300, 64, device="cuda", requires_grad=True)
    targets = torch.randint(0, 4096, (300,), device="cuda")
    fused = projected_loss(head, hidden, targets)
    fused.backward()
    fused_grad = hidden.grad.clone()
    hidden.grad = None
    chunked = sum(loss_module._chunk_loss(head, hidden[i : i + 50], targets[i : i + 50]) for i in range(0, 300, 50))
    chunked.backward()
    assert torch.allclose(fused, chunked, rtol=1e-4)
    assert torch.allclose(fused_grad, hidden.grad, rtol=1e-3, atol=1e-5)
