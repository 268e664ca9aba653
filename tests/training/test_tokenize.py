"""Token-level loss masks, checked literally on the tiny ChatML tokenizer."""

from __future__ import annotations

import copy

import pytest

from tunedeck.inputs.datasets import Example
from tunedeck.training.tokenize import (
    IGNORE,
    TokenizationError,
    prompt_ids_for_generation,
    tokenize_chat,
    tokenize_document_blocks,
    tokenize_examples,
    tokenize_prompt_response,
)


def learned_spans(tokenizer, t) -> list[str]:
    """Decode each run of consecutive loss-bearing tokens."""
    spans, current = [], []
    for token, label in zip(t.input_ids, t.labels):
        if label != IGNORE:
            assert label == token  # labels are unshifted copies of the learned tokens
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return [tokenizer.decode(s) for s in spans]


def test_prompt_response_learns_response_and_eos_only(tiny_tokenizer):
    tok = tiny_tokenizer
    t = tokenize_prompt_response(tok, "Say hello.", "Hello there!")
    prompt = tok("Say hello.")["input_ids"]
    response = tok("Hello there!", add_special_tokens=False)["input_ids"]
    assert t.input_ids == prompt + response + [tok.eos_token_id]
    assert t.labels == [IGNORE] * len(prompt) + response + [tok.eos_token_id]
    assert learned_spans(tok, t) == ["Hello there!<|im_end|>"]


def test_empty_prompt_still_conditions_on_a_token(tiny_tokenizer):
    t = tokenize_prompt_response(tiny_tokenizer, "", "Hi")
    assert t.labels[0] == IGNORE and t.input_ids[0] == tiny_tokenizer.bos_token_id
    assert learned_spans(tiny_tokenizer, t) == ["Hi<|im_end|>"]


def test_chat_learns_assistant_turns_with_end_of_turn(tiny_tokenizer):
    tok = tiny_tokenizer
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "Hello there!"},
    ]
    t = tokenize_chat(tok, messages)
    text = tok.apply_chat_template(messages, tokenize=False)
    assert tok.decode(t.input_ids) == text  # the whole conversation, tokenized as at inference
    assert learned_spans(tok, t) == ["Paris.<|im_end|>\n", "Hello there!<|im_end|>\n"]
    ignored = tok.decode([x for x, label in zip(t.input_ids, t.labels) if label == IGNORE])
    assert ignored == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
        "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chat_with_a_slow_tokenizer_path_gives_the_same_labels(tiny_tokenizer):
    """The span-by-span fallback (no offsets) agrees with the offsets path on ChatML."""
    from tunedeck.training import tokenize as module

    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there!"}]
    fast = tokenize_chat(tiny_tokenizer, messages)

    class Slow:
        def __init__(self, inner):
            self._inner = inner
            self.is_fast = False

        def __getattr__(self, name):
            return getattr(self._inner, name)

        def __call__(self, *args, **kwargs):
            return self._inner(*args, **kwargs)

    slow = module.tokenize_chat(Slow(tiny_tokenizer), messages)
    assert (slow.input_ids, slow.labels) == (fast.input_ids, fast.labels)


def test_chat_template_that_rewrites_earlier_turns_is_refused(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    # Marks the last message: rendering a prefix changes how an earlier turn looks.
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}{% if loop.last %} (last){% endif %}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]
    with pytest.raises(TokenizationError, match="not prefix-consistent"):
        tokenize_chat(tok, messages)


def test_tokenize_examples_names_the_row_of_a_template_error(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = "{{ raise_exception('roles must alternate') }}"
    example = Example({"messages": [{"role": "assistant", "content": "x"}]}, "/data/chat.jsonl", 7)
    with pytest.raises(TokenizationError, match=r"/data/chat.jsonl, line 7: .*roles must alternate"):
        tokenize_examples(tok, [example], "CHAT_COMPLETION", 64)


def test_continued_pretrain_learns_every_token_across_document_boundaries(tiny_tokenizer):
    tok = tiny_tokenizer
    docs = ["The quick brown fox.", "Once upon a time."]
    blocks = tokenize_document_blocks(tok, docs, context_length=8)
    stream = tok(docs[0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    stream += tok(docs[1], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert [x for b in blocks for x in b.input_ids] == stream[: sum(len(b) for b in blocks)]
    assert all(len(b) <= 8 for b in blocks) and all(len(b) == 8 for b in blocks[:-1])
    assert all(b.labels == b.input_ids for b in blocks)


def test_truncation_and_dropping(tiny_tokenizer):
    rows = [
        Example({"prompt": "Q", "response": "A fairly long response that will be cut."}, "f", 1),
        Example({"prompt": "A very long prompt " * 10, "response": "lost"}, "f", 2),
        Example({"prompt": "Q", "response": "ok"}, "f", 3),
    ]
    data = tokenize_examples(tiny_tokenizer, rows, "INSTRUCTION_FINETUNE", context_length=6)
    assert data.rows == 3 and data.truncated == 2 and data.dropped == 1
    assert len(data.examples) == 2 and all(len(e) <= 6 for e in data.examples)
    assert all(any(x != IGNORE for x in e.labels[1:]) for e in data.examples)


def test_generation_prompt_for_chat_is_a_user_turn(tiny_tokenizer):
    tok = tiny_tokenizer
    chat = tok.decode(prompt_ids_for_generation(tok, "Say hello.", "CHAT_COMPLETION"))
    assert chat == "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(prompt_ids_for_generation(tok, "Say hello.", "INSTRUCTION_FINETUNE")) == "Say hello."
