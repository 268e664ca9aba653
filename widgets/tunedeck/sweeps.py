"""``tunedeck.sweep``: one training run per cell of a grid over learning rate × duration (× LoRA rank).
(This module is tunedeck.sweeps, so that importing it never hides the function tunedeck.sweep.)

The reference's docs recommend trying a few learning rates and durations; this makes the whole grid in
one call. Every cell is checked first (``fm.check_inputs``, the service's own validation), so a bad grid
creates nothing; then the runs are created in grid order (learning rate slowest, then duration, then
rank) and the service queues them (it trains ``max_concurrent`` at a time, oldest first).

    runs = tunedeck.sweep(learning_rates=[1e-4, 3e-4], training_durations=["1ep", "2ep"],
                          model="SmolLM2-135M-Instruct", train_data_path="train.jsonl", register_to="main.demo")
    tunedeck.compare(runs)          # their loss curves overlaid, final losses, time and versions

A tunedeck extra (the reference has no sweep); notebook side: no torch, no service import.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

from tunedeck import foundation_model as fm
from tunedeck.errors import InvalidInputError, Problem, TunedeckError
from tunedeck.types import LoRA, TrainingRun

__all__ = ["Sweep", "SweepCell", "cells", "sweep"]


@dataclasses.dataclass(frozen=True)
class SweepCell:
    """One cell of the grid: its place (0-based, grid order) and its values."""

    index: int
    learning_rate: str | float
    training_duration: str
    lora_rank: int | None = None

    @property
    def label(self) -> str:
        """Short and stable: ``lr 0.0001 · 1ep`` (``· r8`` with a LoRA rank)."""
        parts = [f"lr {self.learning_rate}", str(self.training_duration)]
        if self.lora_rank is not None:
            parts.append(f"r{self.lora_rank}")
        return " · ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "label": self.label}


class Sweep(list):
    """The sweep's runs in grid order (a plain list of TrainingRun), with ``cells`` alongside:
    ``sweep.cells[i]`` holds the values ``sweep[i]`` was created with."""

    def __init__(self, runs: Sequence[TrainingRun] = (), cells: Sequence[SweepCell] = ()):
        super().__init__(runs)
        self.cells: list[SweepCell] = list(cells)

    def pairs(self) -> list[tuple[SweepCell, TrainingRun]]:
        return list(zip(self.cells, self, strict=False))


def _values(name: str, values: Any, *, allow_none: bool = False) -> list[Any]:
    if values is None:
        if allow_none:
            return [None]
        raise InvalidInputError([Problem(name, "give at least one value")])
    if isinstance(values, (str, int, float)):
        values = [values]
    out = list(values)
    if not out:
        raise InvalidInputError([Problem(name, "give at least one value")])
    return out


def cells(learning_rates: Any, training_durations: Any, lora_ranks: Any = None) -> list[SweepCell]:
    """The grid's cells in the order the runs are created: learning rate, then duration, then rank."""
    lrs = _values("learning_rates", learning_rates)
    durations = _values("training_durations", training_durations)
    ranks = _values("lora_ranks", lora_ranks, allow_none=True)
    grid = itertools.product(lrs, durations, ranks)
    return [SweepCell(i, lr, str(d).strip(), r) for i, (lr, d, r) in enumerate(grid)]


def _adapter(base: Any, rank: int | None) -> Any:
    """The cell's adapter: ``base`` with its rank set to ``rank`` (a LoRA with that rank where ``base``
    is None or "lora"; a 4-bit base kept for "qlora")."""
    if rank is None:
        return base
    if isinstance(base, LoRA):
        return dataclasses.replace(base, rank=rank)
    if isinstance(base, dict):
        return {**base, "rank": rank}
    if base == "qlora":
        return LoRA(rank=rank, quantize_base="4bit")
    return LoRA(rank=rank)


def _cell_kwargs(cell: SweepCell, create_kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(create_kwargs)
    kwargs["learning_rate"] = cell.learning_rate
    kwargs["training_duration"] = cell.training_duration
    if cell.lora_rank is not None:
        kwargs["adapter"] = _adapter(kwargs.get("adapter"), cell.lora_rank)
    return kwargs


def _check_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """create()'s keyword arguments as check_inputs() takes them (create's defaults applied, the
    arguments only create() knows dropped)."""
    out = {k: v for k, v in kwargs.items() if k not in ("validate_inputs",)}
    out["task_type"] = out.get("task_type") or "CHAT_COMPLETION"
    if "eval_prompts" in out and isinstance(out["eval_prompts"], tuple):
        out["eval_prompts"] = list(out["eval_prompts"])
    if not out.get("experiment_path"):
        out.pop("experiment_path", None)
    return out


def check(model: str, train_data_path: str, register_to: str, grid: Sequence[SweepCell], **create_kwargs: Any) -> list[Problem]:
    """Every problem of every cell, each once: a problem every cell shares (the data, the model) as the
    service words it, one that only some cells have with those cells named in its message."""
    seen: dict[Problem, list[SweepCell]] = {}
    for cell in grid:
        for problem in fm.check_inputs(model, train_data_path, register_to, **_check_kwargs(_cell_kwargs(cell, create_kwargs))):
            seen.setdefault(problem, []).append(cell)
    out = []
    for problem, where in seen.items():
        if len(where) == len(grid) and len(grid) > 1:
            out.append(problem)
            continue
        names = "; ".join(f"cell {c.index + 1} ({c.label})" for c in where)
        out.append(dataclasses.replace(problem, message=f"{names}: {problem.message}"))
    return out


def sweep(
    learning_rates: Sequence[str | float] | str | float,
    training_durations: Sequence[str] | str,
    lora_ranks: Sequence[int | None] | int | None = None,
    *,
    model: str,
    train_data_path: str,
    register_to: str,
    **create_kwargs: Any,
) -> Sweep:
    """Create one run per cell of learning_rates × training_durations (× lora_ranks), queued.

    ``create_kwargs`` are ``fm.create``'s other arguments, the same for every cell. ``lora_ranks``: each
    rank trains LoRA adapters of that rank (on ``adapter``'s other settings where one is given; None in
    the list: full fine-tuning). Raises InvalidInputError, with each problem's cell and field, before
    creating anything when any cell is invalid. If the service refuses a run midway (it went away), the
    error carries the runs already made as ``error.created_runs``.
    """
    for banned in ("learning_rate", "training_duration"):
        if banned in create_kwargs:
            raise TypeError(f"sweep() takes {banned}s (a list), not {banned}")
    grid = cells(learning_rates, training_durations, lora_ranks)
    problems = check(model, train_data_path, register_to, grid, **create_kwargs)
    if problems:
        raise InvalidInputError(problems)
    runs = Sweep()
    for cell in grid:
        try:
            run = fm.create(model, train_data_path, register_to, **_cell_kwargs(cell, create_kwargs))
        except TunedeckError as exc:
            exc.created_runs = Sweep(runs, runs.cells)  # type: ignore[attr-defined]
            add_note = getattr(exc, "add_note", None)  # Python 3.11+
            if runs and add_note is not None:
                add_note(f"sweep: {len(runs)} of {len(grid)} runs were created before this: "
                             + ", ".join(r.name for r in runs))
            raise
        runs.append(run)
        runs.cells.append(cell)
    return runs
