"""What happens at a checkpoint besides saving: the eval loss and sampled generations for eval_prompts."""

from __future__ import annotations

from typing import Any

import torch

from tunedeck.training.loss import loss_sum
from tunedeck.training.models import Device
from tunedeck.training.packing import collate, micro_batches
from tunedeck.training.tokenize import prompt_ids_for_generation

# The reference's generation settings for eval_prompts.
GENERATION = dict(max_new_tokens=100, temperature=1.0, top_k=50, top_p=0.95, do_sample=True)


@torch.no_grad()
def eval_loss(
    model: Any, rows: list[list], micro_batch_tokens: int, pad_id: int, device: Device, packed_mask: str = "dense"
) -> float:
    """Mean token loss over every eval row (all tokens weigh the same, as in training)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for group in micro_batches(rows, micro_batch_tokens):
        batch = collate(group, pad_id, device.compute_dtype, packed_mask).to(device.device)
        with device.autocast():
            loss, n = loss_sum(model, batch)
        total += float(loss)
        count += n
    model.train(was_training)
    return total / max(1, count)


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompts: list[str], task_type: str, device: Device) -> list[dict[str, str]]:
    """One sampled completion per prompt, as the reference does at every checkpoint."""
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for prompt in prompts:
        ids = torch.tensor([prompt_ids_for_generation(tokenizer, prompt, task_type)], device=device.device)
        with device.autocast():
            generated = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
                use_cache=True,
                **GENERATION,
            )
        text = tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True)
        out.append({"prompt": prompt, "generation": text})
    model.train(was_training)
    return out
