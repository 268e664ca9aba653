"""Read and tokenize a run's train and eval data, and hand out each epoch's packed rows.

Bad rows fail the run with the very message ``check_data`` gives before submission (file, line and
the create() parameter), so a run with ``validate_inputs=False`` fails as clearly as one without.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunedeck.errors import InvalidInputError
from tunedeck.inputs.datasets import read_examples
from tunedeck.inputs.spec import DataSource
from tunedeck.training.failures import TrainingFailure
from tunedeck.training.packing import pack, row_capacity
from tunedeck.training.tokenize import TokenizationError, Tokenized, TokenizedData, tokenize_examples

SEED = 17


@dataclass
class Split:
    """A tokenized split and its packing into rows of ``capacity`` tokens."""

    field: str  # "train_data_path" / "eval_data_path"
    data: TokenizedData
    capacity: int
    context_length: int

    @property
    def examples(self) -> list[Tokenized]:
        return self.data.examples

    @property
    def lengths(self) -> list[int]:
        return [len(e) for e in self.data.examples]

    def rows(self, epoch: int | None = None) -> list[list[Tokenized]]:
        """Packed rows; each epoch (``epoch`` >= 0) groups and orders them differently, reproducibly."""
        seed = None if epoch is None else SEED + epoch
        return [[self.data.examples[i] for i in row] for row in pack(self.lengths, self.capacity, seed)]

    def summary(self) -> dict[str, Any]:
        lengths = sorted(self.lengths)
        return {
            "rows": self.data.rows,
            "examples": len(lengths),
            "tokens": self.data.tokens,
            "loss_tokens": sum(e.loss_tokens for e in self.examples),
            "packed_rows": len(pack(lengths, self.capacity)),
            "row_tokens": self.capacity,
            "long_examples": sum(1 for n in lengths if n > self.capacity),
            "truncated": self.data.truncated,
            "dropped": self.data.dropped,
            "max_tokens": lengths[-1] if lengths else 0,
        }

    def describe(self, name: str) -> str:
        s = self.summary()
        text = (
            f"{name}: {_count(s['rows'], 'row')}, {_count(s['tokens'], 'token')} packed into "
            f"{_count(s['packed_rows'], 'row')} of up to {s['row_tokens']:,} tokens"
        )
        if s["long_examples"]:
            text += f" ({s['long_examples']:,} longer examples in rows of their own)"
        if s["truncated"]:
            text += f"; {s['truncated']:,} truncated to {self.context_length:,} tokens"
        if s["dropped"]:
            text += f"; {s['dropped']:,} dropped (nothing left to learn after truncation)"
        return text


def tokenize_source(source: DataSource, task_type: str, field: str, tokenizer: Any, context_length: int) -> TokenizedData:
    try:
        examples = read_examples(source, task_type, field)
        data = tokenize_examples(tokenizer, examples, task_type, context_length)
    except InvalidInputError as error:
        first = error.problems[0]
        more = len(error.problems) - 1
        raise TrainingFailure(f"{first}" + (f" (and {more} more problem(s))" if more else "")) from None
    except TokenizationError as error:
        raise TrainingFailure(f"{field} ({error})") from None
    if not data.examples:
        raise TrainingFailure(
            f"{field}: no example is left to train on; every one has no loss-bearing token within "
            f"context_length={context_length:,} (prompts too long, or empty responses)"
        )
    return data


def make_split(data: TokenizedData, field: str, context_length: int, pack_tokens: int) -> Split:
    return Split(field, data, row_capacity(context_length, pack_tokens), context_length)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")
