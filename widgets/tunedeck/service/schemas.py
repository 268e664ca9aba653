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
