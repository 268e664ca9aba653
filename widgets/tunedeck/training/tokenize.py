"""Rows -> token ids and labels, with the loss mask of each task type.

Labels use -100 for tokens that carry no loss (the convention of ``torch.nn.CrossEntropyLoss`` and
transformers). Labels here are *not* shifted: ``labels[i]`` says whether token ``i`` is learned; the
packer shifts per example so that packed examples never predict each other's first token.

    INSTRUCTION_FINETUNE  tokens(prompt) + tokens(response) + eos; loss on response + eos
    CHAT_COMPLETION       the tokenizer's chat template; loss on assistant turns (incl. end of turn)
    CONTINUED_PRETRAIN    documents joined with eos and cut into context_length blocks; loss everywhere
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunedeck.inputs.datasets import Example

IGNORE = -100


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def loss_tokens(self) -> int:
        """Tokens that are learned: a token is predicted from the one before it, so never the first."""
        return sum(1 for x in self.labels[1:] if x != IGNORE)


@dataclass
class TokenizedData:
    """A tokenized split, with what was cut or dropped on the way (for DATA_VALIDATED)."""

    examples: list[Tokenized]
    rows: int  # rows (or documents) read
    truncated: int = 0  # examples cut at context_length
    dropped: int = 0  # examples left with no loss-bearing token after truncation

    @property
    def tokens(self) -> int:
        return sum(len(e) for e in self.examples)


class TokenizationError(ValueError):
    """A row the tokenizer or chat template cannot turn into a training example (names file and line)."""


def eos_id(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise TokenizationError("the model's tokenizer has no end-of-sequence token, which training needs")
    return int(tokenizer.eos_token_id)


def tokenize_prompt_response(tokenizer: Any, prompt: str, response: str) -> Tokenized:
    """Prompt and response are tokenized apart (the prompt with the tokenizer's own bos, if it adds
    one), so the boundary between them is exact and the prompt is never learned."""
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"] if prompt else _bos(tokenizer)
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [eos_id(tokenizer)]
    return Tokenized(list(prompt_ids) + list(response_ids), [IGNORE] * len(prompt_ids) + list(response_ids))


def tokenize_chat(tokenizer: Any, messages: list[dict[str, str]]) -> Tokenized:
    """Render the whole conversation once; find each assistant turn's characters by rendering prefixes
    (``messages[:i]`` with the generation prompt vs ``messages[:i+1]``); label the tokens inside them.

    Rendering prefixes works with any template, but only when rendering a prefix of the conversation
    gives a prefix of the text (some templates rewrite earlier turns); that is checked, not assumed.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise TokenizationError("the model's tokenizer has no chat template, which CHAT_COMPLETION needs")
    full = _render(tokenizer, messages, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True)
        through = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not through.startswith(before) or not full.startswith(through):
            raise TokenizationError(
                "the model's chat template is not prefix-consistent (rendering the conversation up to "
                f"message {i} does not give a prefix of the whole conversation), so assistant turns cannot "
                "be located for the loss mask"
            )
        spans.append((len(before), len(through)))
    return _label_spans(tokenizer, full, spans)


def tokenize_document_blocks(tokenizer: Any, documents: Sequence[str], context_length: int) -> list[Tokenized]:
    """Documents joined with eos (as in pretraining) and cut into blocks of ``context_length``."""
    eos = eos_id(tokenizer)
    stream: list[int] = []
    for text in documents:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream.append(eos)
    blocks = []
    for start in range(0, len(stream), context_length):
        block = stream[start : start + context_length]
        if len(block) >= 2:  # a single token predicts nothing
            blocks.append(Tokenized(block, list(block)))
    return blocks


def tokenize_examples(tokenizer: Any, examples: list[Example], task_type: str, context_length: int) -> TokenizedData:
    """Tokenize a split; truncate to ``context_length`` and drop examples left with nothing to learn."""
    if task_type == "CONTINUED_PRETRAIN":
        blocks = tokenize_document_blocks(tokenizer, [e.row["text"] for e in examples], context_length)
        return TokenizedData(blocks, rows=len(examples))
    out = TokenizedData([], rows=len(examples))
    for e in examples:
        try:
            if task_type == "CHAT_COMPLETION":
                t = tokenize_chat(tokenizer, e.row["messages"])
            else:
                t = tokenize_prompt_response(tokenizer, e.row["prompt"], e.row["response"])
        except TokenizationError as error:
            where = f"{e.file}, line {e.line}" if e.line else e.file
            raise TokenizationError(f"{where}: {error}") from None
        if len(t) > context_length:
            out.truncated += 1
            t = Tokenized(t.input_ids[:context_length], t.labels[:context_length])
        # Labels are learned from the token before them, so the first token never counts.
        if t.loss_tokens == 0:
            out.dropped += 1
            continue
        out.examples.append(t)
    return out


def prompt_ids_for_generation(tokenizer: Any, prompt: str, task_type: str) -> list[int]:
    """An eval prompt as the model saw prompts in training: a user turn for chat, raw text otherwise."""
    if task_type == "CHAT_COMPLETION" and getattr(tokenizer, "chat_template", None):
        text = _render(tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    return ids or _bos(tokenizer)


# --- helpers ----------------------------------------------------------------------------------------


def _render(tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
    if not messages and not add_generation_prompt:
        return ""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as error:  # noqa: BLE001 - jinja raises for conversations a template refuses (e.g. role order)
        raise TokenizationError(f"the model's chat template rejected this conversation: {error}") from None


def _label_spans(tokenizer: Any, text: str, spans: list[tuple[int, int]]) -> Tokenized:
    """Tokenize ``text`` once and keep the labels of tokens that start inside a span.

    Tokenizing the whole text (not piece by piece) gives the same ids the model sees at inference.
    Slow tokenizers have no offsets: they are tokenized span by span instead.
    """
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = list(enc["input_ids"])
        labels: list[int] = [
            tok if any(s <= start < e for s, e in spans) and end > start else IGNORE
            for tok, (start, end) in zip(ids, enc["offset_mapping"], strict=True)
        ]
        return Tokenized(ids, labels)
    ids, labels = [], []
    cursor = 0
    for s, e in [*spans, (len(text), len(text))]:
        for piece, learned in ((text[cursor:s], False), (text[s:e], True)):
            if piece:
                piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
                ids.extend(piece_ids)
                labels.extend(piece_ids if learned else [IGNORE] * len(piece_ids))
        cursor = e
    return Tokenized(ids, labels)


def _bos(tokenizer: Any) -> list[int]:
    """Something to condition on when a prompt is empty: bos, else eos."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [int(token)] if token is not None else []
