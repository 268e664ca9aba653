"""create()'s parameters are defined once (types/create_params.py); everything that speaks of them
derives from it or is held equal to it here, so a parameter added in one place and forgotten in
another fails these tests (issue 10 part 5)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from tunedeck import foundation_model as fm
from tunedeck.types import TrainingRun, create_params
from tunedeck.types.create_params import CreateParams

# create()'s own defaults that differ from the definition's on purpose: the reference's experiment_path
# default is '' (and '' means the same as None: /Users/<you>/<run name>)
SIGNATURE_DEFAULTS = {"experiment_path": ""}


def test_create_signature_has_every_parameter_with_its_default():
    signature = inspect.signature(fm.create).parameters
    # (the order is the reference's: tests/api/test_reference_api.py)
    assert set(signature) == set(create_params.api_names())
    for name in create_params.required():
        assert signature[name].default is inspect.Parameter.empty, name
    for name, default in create_params.defaults().items():
        if name in signature:
            assert signature[name].default == SIGNATURE_DEFAULTS.get(name, default), name


def test_created_by_is_the_services_not_a_create_argument():
    assert "created_by" in create_params.names()
    assert "created_by" not in inspect.signature(fm.create).parameters


def test_the_run_record_has_a_field_for_every_parameter():
    record = {f.name for f in dataclasses.fields(TrainingRun)}
    missing = set(create_params.names()) - record
    assert not missing, f"TrainingRun lacks {sorted(missing)}: add them (the service copies every parameter)"


def test_the_services_request_is_the_definition():
    from tunedeck.inputs.validate import RunRequest

    assert RunRequest is CreateParams
    request = CreateParams(model="m", train_data_path="/d.jsonl", register_to="main.demo", num_devices=2, adapter="lora")
    assert CreateParams.from_dict(request.to_dict()) == request
    with pytest.raises(TypeError, match="unknown parameter.*colour"):
        CreateParams.from_dict({**request.to_dict(), "colour": "red"})


def test_the_rest_body_is_built_from_the_definition():
    pytest.importorskip("fastapi")
    from pydantic import ValidationError

    from tunedeck.service.schemas import RunCreate

    assert tuple(RunCreate.model_fields) == create_params.names()
    for name, info in RunCreate.model_fields.items():
        assert info.is_required() == (name in create_params.required()), name
        assert info.description, f"{name} has no description in the API docs"
        if not info.is_required():
            assert info.default == create_params.defaults()[name], name
    body = RunCreate(model="m", train_data_path="/d.jsonl", register_to="main.demo", learning_rate="1e-4", num_devices=2)
    assert CreateParams(**body.model_dump()).learning_rate == "1e-4"
    with pytest.raises(ValidationError, match="colour"):
        RunCreate(model="m", train_data_path="/d.jsonl", register_to="main.demo", colour="red")


def test_the_official_clients_config_maps_every_wire_field():
    pytest.importorskip("graphql")
    from tunedeck.service.graphql_api import _run_request

    config = {
        "model": "m", "trainDataPath": "/Volumes/a/b/c/train.jsonl", "taskType": "INSTRUCTION_FINETUNE",
        "evalDataPath": "/Volumes/a/b/c/eval.jsonl", "evalPrompts": ["hi"], "customWeightsPath": "/ckpt",
        "trainingDuration": "2ep", "learningRate": 1e-4, "contextLength": 512,
        "experimentTracker": {"mlflow": {"experimentPath": "/Users/ada/exp", "modelRegistryPath": "main.demo"}},
        "dataPrepConfig": {"clusterId": "c-1"}, "disableCredentialsCheck": True,
    }
    request = _run_request(config)
    assert dataclasses.asdict(request) == {
        "model": "m", "train_data_path": "/Volumes/a/b/c/train.jsonl", "register_to": "main.demo",
        "task_type": "INSTRUCTION_FINETUNE", "eval_data_path": "/Volumes/a/b/c/eval.jsonl", "eval_prompts": ["hi"],
        "custom_weights_path": "/ckpt", "training_duration": "2ep", "learning_rate": 1e-4, "context_length": 512,
        "experiment_path": "/Users/ada/exp", "data_prep_cluster_id": "c-1", "validate_inputs": False,
        "adapter": None, "created_by": None, "num_devices": None,
    }
    # every parameter the wire carries is read from it
    assert set(create_params.wire_paths()) <= {k for k, v in dataclasses.asdict(request).items() if v is not None}
    # the client's default experiment path names the user and lets the service name the experiment
    default = _run_request({"model": "m", "trainDataPath": "/t", "experimentTracker": {"mlflow": {"experimentPath": "/Users/ada/{}"}}})
    assert (default.experiment_path, default.created_by, default.register_to, default.task_type) == (
        None, "ada", "", create_params.DEFAULT_TASK_TYPE)


def test_the_form_labels_every_parameter_and_previews_them_in_order():
    pytest.importorskip("ipywidgets")
    from tunedeck.ui._validation import LABELS, PARAMETERS, REQUIRED

    assert set(create_params.names()) <= set(LABELS)
    assert REQUIRED == create_params.required()
    assert PARAMETERS == create_params.api_names()  # every create() parameter, num_devices (Devices) included
