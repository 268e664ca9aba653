"""Request and response bodies of the REST API, kept apart from the core's own types."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RunCreate(BaseModel):
    """The parameters of foundation_model.create()."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    train_data_path: str
    register_to: str
    task_type: str = "CHAT_COMPLETION"
    eval_data_path: str | None = None
    eval_prompts: list[str] | str | None = None
    custom_weights_path: str | None = None
    training_duration: str | None = None
    learning_rate: str | float | None = None
    context_length: str | int | None = None
    experiment_path: str | None = None
    data_prep_cluster_id: str | None = None
    validate_inputs: bool = True
    adapter: str | dict[str, Any] | None = None
    created_by: str | None = None
    num_devices: int | None = None


class DataCheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    train_data_path: str
    task_type: str = "CHAT_COMPLETION"
    model: str | None = None
    context_length: int | None = Field(None, ge=8, le=1_048_576)


class RunsPublic(BaseModel):
    runs: list[dict[str, Any]]


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
