"""``tunedeck.try_it``: ask a completed run's model a question, from a script or a notebook cell.

A tunedeck extra, not part of ``foundation_model``: that module keeps the reference API's names and
nothing else (docs/reference-compatibility.md), and the reference has no way to generate. The model runs
in the service's generation helper, never in the calling process, so this works from a kernel that has
no torch, and asking again is quick (the helper keeps the model loaded). The monitor's Try it box calls
the same endpoint (``ServiceClient.generate``).
"""

from __future__ import annotations

import sys
from typing import IO

from tunedeck.errors import TunedeckError
from tunedeck.types import TrainingRun


def try_it(
    run: TrainingRun | str, prompt: str, checkpoint: str | None = None, *, max_new_tokens: int = 128,
    temperature: float = 0.0, echo: bool = False, file: IO[str] | None = None,
) -> str:
    """The answer of ``run``'s model to ``prompt``.

    ``checkpoint``: None or ``"registered"`` for the registered model version (what
    ``tunedeck.registry.load_model`` loads), else the name of one of the run's checkpoints
    (``fm.get_checkpoints(run)``). ``temperature`` 0 answers greedily (the model's most likely answer);
    above 0 it samples. ``echo=True`` prints the answer as it is generated. The prompt is shaped as the
    run's eval prompts are (a user turn through the chat template for CHAT_COMPLETION runs).

    Raises InvalidInputError naming the field for a run that has not completed, an empty or too long
    prompt, or an unknown checkpoint; RunNotFoundError for an unknown run; TunedeckError when the model
    could not answer.
    """
    from tunedeck.client import get_client

    name = run.name if isinstance(run, TrainingRun) else str(run)
    out = file if file is not None else sys.stdout
    for event in get_client().generate(name, prompt, checkpoint, max_new_tokens=max_new_tokens, temperature=temperature):
        kind = event.get("event")
        if kind == "text" and echo:
            print(event.get("text", ""), end="", file=out, flush=True)
        elif kind == "done":
            if echo:
                print(file=out, flush=True)
            return str(event.get("text", ""))
        elif kind == "error":
            raise TunedeckError(f"Try it: {event.get('message') or 'the model could not answer'}")
    raise TunedeckError("Try it: the service's answer ended early")


__all__ = ["try_it"]
