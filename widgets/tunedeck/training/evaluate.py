"""What happens at a checkpoint besides saving: the eval loss and sampled generations for eval_prompts.

Both can take minutes on a big eval set, so both honour a stop request: between micro-batches and
prompts, and inside generation (a stopping criterion), raising StopRequested once they are out.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from tunedeck.training.attention import PackedMask
from tunedeck.training.failures import StopSignal
from tunedeck.training.loss import loss_sum
from tunedeck.training.models import Device
from tunedeck.training.packing import collate, micro_batches
from tunedeck.training.tokenize import prompt_ids_for_generation

# The reference's generation settings for eval_prompts.
GENERATION = dict(max_new_tokens=100, temperature=1.0, top_k=50, top_p=0.95, do_sample=True)


@torch.no_grad()
def eval_loss(
    model: Any, rows: list[list], micro_batch_tokens: int, pad_id: int, device: Device, packed_mask: PackedMask = "dense",
    stop: StopSignal | None = None,
) -> float:
    """Mean token loss over every eval row (all tokens weigh the same, as in training)."""
    stop = stop or StopSignal()
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for group in micro_batches(rows, micro_batch_tokens):
            stop.check()
            batch = collate(group, pad_id, device.compute_dtype, packed_mask).to(device.device)
            with device.autocast():
                loss, n = loss_sum(model, batch)
            total += float(loss)
            count += n
        stop.check()
    finally:
        model.train(was_training)
    return total / max(1, count)


@torch.no_grad()
def generate(
    model: Any, tokenizer: Any, prompts: list[str], task_type: str, device: Device, stop: StopSignal | None = None,
    world: Any = None,
) -> list[dict[str, str]]:
    """One sampled completion per prompt, as the reference does at every checkpoint.

    Sampling runs on a forked RNG, so it never shifts the training's random stream: a run resumed
    from a checkpoint draws the same numbers as one that went on without stopping.

    ``world`` (a sharded run's, training/sharding.py): every rank generates, and each new token's
    forward needs every rank, so the ranks must stop together. They draw the same tokens (same weights,
    same random state), and to be sure they also agree after each token whether to stop: the end of
    the sequence (or a stop request) on any rank ends the generation on all.
    """
    stop = stop or StopSignal()
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    cuda = [device.device.index or 0] if device.device.type == "cuda" else []
    together = world is not None and world.enabled
    criteria: list[StoppingCriteria] = [_Agreed(stop, world, tokenizer.eos_token_id)] if together else [_Stopped(stop)]
    out = []
    try:
        with torch.random.fork_rng(devices=cuda):
            for prompt in prompts:
                stop.check()
                ids = torch.tensor([prompt_ids_for_generation(tokenizer, prompt, task_type)], device=device.device)
                with device.autocast():
                    generated = model.generate(
                        input_ids=ids,
                        attention_mask=torch.ones_like(ids),
                        pad_token_id=pad,
                        eos_token_id=None if together else tokenizer.eos_token_id,  # _Agreed decides then
                        use_cache=True,
                        stopping_criteria=StoppingCriteriaList(criteria),
                        **GENERATION,
                    )
                stop.check()  # a generation cut short by a stop request is not reported
                text = tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True)
                out.append({"prompt": prompt, "generation": text})
    finally:
        model.train(was_training)
    return out


class _Stopped(StoppingCriteria):
    """Ends generation at the next token once a stop is requested (generate then raises StopRequested)."""

    def __init__(self, stop: StopSignal):
        self.stop = stop

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.stop.requested, dtype=torch.bool, device=input_ids.device)


class _Agreed(StoppingCriteria):
    """The ranks of a sharded run stop together: at the end-of-sequence token or a stop request on any rank."""

    def __init__(self, stop: StopSignal, world: Any, eos_token_id: int | None):
        self.stop = stop
        self.world = world
        self.eos = eos_token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        ended = self.eos is not None and bool((input_ids[:, -1] == self.eos).all())
        done = self.world.max(float(ended or self.stop.requested)) > 0
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)
