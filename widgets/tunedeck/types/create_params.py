"""create()'s parameters, defined once.

Every place that speaks of them derives from ``CreateParams``: the service's request (``RunRequest`` in
inputs/validate.py is this class), the REST body (service/schemas.py builds ``RunCreate`` from its
fields), the official client's GraphQL config (service/graphql_api.py reads and writes the ``wire``
paths below), the run record (``TrainingRun.from_params`` copies the ``recorded`` fields), and the
form (ui/_validation.py takes its labels and its preview's order from here). ``foundation_model.create``
spells its signature out, because help(), IDEs and the reference's parity tests read it there;
tests/api/test_create_params.py holds it equal to these fields, names and defaults.

Each field's metadata:
- ``origin``: "reference" (the reference's create() has it), "tunedeck" (tunedeck's own keyword) or
  "service" (filled in by the client or service, never typed by a user);
- ``label``: the form's label;
- ``wire``: where the official client's createFinetune config carries it (a dotted path), or None;
- ``help``: one line for the API docs (the REST schema's descriptions).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TASK_TYPE = "CHAT_COMPLETION"


def _meta(label: str, wire: str | None, help: str, origin: str = "reference") -> dict[str, Any]:
    return {"label": label, "wire": wire, "help": help, "origin": origin}


@dataclass
class CreateParams:
    """The parameters of create(), as the user gave them (not yet checked: the checks say what is wrong)."""

    model: str = field(metadata=_meta(
        "Model", "model", "a get_models() name, a local Hugging Face model folder or a Hugging Face id in the local cache"))
    train_data_path: str = field(metadata=_meta(
        "Train data", "trainDataPath",
        "a JSONL file, a folder of .txt files, a dbfs:/Volumes/... path, org/dataset/split or a <catalog>.<schema>.<table>"))
    register_to: str = field(metadata=_meta(
        "Register to", "experimentTracker.mlflow.modelRegistryPath", "<catalog>.<schema> or <catalog>.<schema>.<model>"))
    task_type: str = field(default=DEFAULT_TASK_TYPE, metadata=_meta(
        "Task", "taskType", "CHAT_COMPLETION, INSTRUCTION_FINETUNE or CONTINUED_PRETRAIN"))
    eval_data_path: str | None = field(default=None, metadata=_meta(
        "Eval data", "evalDataPath", "data in the train data's format"))
    eval_prompts: list[str] | str | None = field(default=None, metadata=_meta(
        "Eval prompts", "evalPrompts", "prompts the model answers at each checkpoint"))
    custom_weights_path: str | None = field(default=None, metadata=_meta(
        "Custom weights", "customWeightsPath", "a checkpoint (ep#-ba#) to start from: its weights only, in a new run"))
    training_duration: str | None = field(default=None, metadata=_meta(
        "Duration", "trainingDuration", "e.g. 3ep, 10000tok, 50ba; default 1ep"))
    learning_rate: str | float | None = field(default=None, metadata=_meta(
        "Learning rate", "learningRate", "default: by the model's size (and adapter)"))
    context_length: str | int | None = field(default=None, metadata=_meta(
        "Context length", "contextLength", "tokens per sample; default: the model's (at most 8,192)"))
    experiment_path: str | None = field(default=None, metadata=_meta(
        "Experiment", "experimentTracker.mlflow.experimentPath", "the MLflow experiment; default /Users/<you>/<run name>"))
    data_prep_cluster_id: str | None = field(default=None, metadata=_meta(
        "Data prep cluster", "dataPrepConfig.clusterId", "recorded with the run"))
    # on the wire it is the opposite, disableCredentialsCheck (service/graphql_api.py turns it round)
    validate_inputs: bool = field(default=True, metadata=_meta(
        "Validate inputs", None, "check paths, data and parameters before the run is created"))
    adapter: str | dict[str, Any] | None = field(default=None, metadata=_meta(
        "Fine-tuning", None, 'None: full fine-tuning; "lora", "qlora" or LoRA settings', origin="tunedeck"))
    created_by: str | None = field(default=None, metadata=_meta(
        "Created by", None, "who created the run (the client sends its OS user)", origin="service"))
    num_devices: int | None = field(default=None, metadata=_meta(
        "Devices", None, "processes of the run, one device each; default TUNEDECK_NUM_DEVICES, else 1", origin="tunedeck"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CreateParams:
        """From a stored request.json; an unknown key is a TypeError naming it (nothing is dropped silently)."""
        unknown = sorted(set(d) - set(names()))
        if unknown:
            raise TypeError(f"unknown parameter(s): {', '.join(str(u)[:80] for u in unknown[:10])}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fields() -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(CreateParams)


def names() -> tuple[str, ...]:
    return tuple(f.name for f in fields())


def required() -> tuple[str, ...]:
    return tuple(f.name for f in fields() if f.default is dataclasses.MISSING)


def api_names() -> tuple[str, ...]:
    """What create() takes: the reference's parameters and tunedeck's own (not the service's)."""
    return tuple(f.name for f in fields() if f.metadata["origin"] != "service")


def labels() -> dict[str, str]:
    return {f.name: f.metadata["label"] for f in fields()}


def defaults() -> dict[str, Any]:
    return {f.name: f.default for f in fields() if f.default is not dataclasses.MISSING}


def wire_paths() -> dict[str, str]:
    """create() parameter -> where the official client's createFinetune config carries it."""
    return {f.name: f.metadata["wire"] for f in fields() if f.metadata["wire"]}


__all__ = ["DEFAULT_TASK_TYPE", "CreateParams", "api_names", "defaults", "fields", "labels", "names", "required",
           "wire_paths"]
