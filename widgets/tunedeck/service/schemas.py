"""Request and response bodies of the REST API, kept apart from the core's own types."""

from __future__ import annotations

import dataclasses
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from tunedeck.types import create_params


def _create_params_model() -> type[BaseModel]:
    """create()'s parameters (types/create_params.py) as a pydantic model: their types, defaults, help."""
    hints = get_type_hints(create_params.CreateParams)
    body: dict[str, Any] = {
        f.name: (hints[f.name], Field(... if f.default is dataclasses.MISSING else f.default, description=f.metadata["help"]))
        for f in create_params.fields()
    }
    return create_model("CreateParams", __config__=ConfigDict(extra="forbid", protected_namespaces=()), **body)


class RunCreate(_create_params_model()):  # type: ignore[misc]  # (a base built from the one definition)
    """The parameters of foundation_model.create()."""


class DataCheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    train_data_path: str
    task_type: str = "CHAT_COMPLETION"
    model: str | None = None
    context_length: int | None = Field(None, ge=8, le=1_048_576)


class RunsPublic(BaseModel):
    runs: list[dict[str, Any]]
    cursor: str | None = Field(None, description="pass as `cursor` for the next page; null: no more runs")
    has_next_page: bool = False


class EventsPublic(BaseModel):
    events: list[dict[str, Any]]
    last_sequence: int = Field(description="pass as `after` to read only newer events")


class MetricsPublic(BaseModel):
    metrics: list[dict[str, Any]]
    last_id: int


class ProblemsPublic(BaseModel):
    problems: list[dict[str, Any]]


class GenerateRequest(BaseModel):
    """A prompt for Try it: the run's registered version (checkpoint None or "registered") or one of its checkpoints."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="what the model answers; not empty, at most 8,000 characters")
    checkpoint: str | None = Field(None, max_length=256, description='"registered" (the default) or a checkpoint name')
    max_new_tokens: int = Field(128, ge=1, le=2048, description="the answer's length limit, in tokens")
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0: greedy (the most likely answer); above: sampled")
