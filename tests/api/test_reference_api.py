"""tunedeck's Python API against the reference client's (databricks-genai 1.1.8).

reference_api_1.1.8.json is read from the reference's source by reference_signatures.py (run it to
regenerate); these tests compare tunedeck's functions and types with it, then check the behaviour
on an in-memory service (conftest.ApiFake). The real-service run of a reference-style script is
tests/e2e/test_reference_script.py.
"""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from tests.ui.fakes import T0

import tunedeck
import tunedeck.types
from tunedeck import foundation_model as fm
from tunedeck.errors import InvalidInputError, Problem, RunNotFoundError, ServiceUnavailableError
from tunedeck.exceptions import (
    DatabricksGenAIError,
    DatabricksGenAIResponseError,
    DatabricksModelTrainingRequestError,
    MAPIException,
    ValidationError,
)
from tunedeck.types import Checkpoint, ModelInfo, RunStatus, TrainingEvent, TrainingRun

REFERENCE = json.loads((Path(__file__).parent / "reference_api_1.1.8.json").read_text())

# tunedeck's own parameters, after the reference's: keyword-only, with a default
EXTRA_PARAMETERS = {"create": {"adapter", "num_devices"}}

# Reference names tunedeck does not have, and why (docs/reference-compatibility.md says the same)
MISSING = {
    ("TrainingRun", "from_mapi_response"): "no MAPI: runs come from tunedeck's REST API",
    ("TrainingEvent", "from_mapi_response"): "no MAPI",
    ("TrainingModelConstants", "from_mapi_response"): "no MAPI",
    ("TrainingConstants", "from_mapi_response"): "no MAPI",
    ("TrainConfig", "validate_dict"): "the reference's internal submission plumbing",
    ("TrainConfig", "from_dict"): "the reference's internal submission plumbing",
    ("TrainConfig", "from_mapi_response"): "no MAPI",
    ("TrainConfig", "to_create_api_input"): "no MAPI",
    ("TrainConfig", "to_yaml"): "the reference's internal submission plumbing",
    ("ObjectList", "display_columns"): "tunedeck's lists render their own columns",
}

# list's own methods, which take the same arguments by position (positional-only, other names)
BY_POSITION = {("ObjectList", "insert"), ("ObjectList", "append"), ("ObjectList", "extend")}

CLASSES = {
    "TrainingRun": tunedeck.types.TrainingRun,
    "TrainingEvent": tunedeck.types.TrainingEvent,
    "RunStatus": tunedeck.types.RunStatus,
    "TrainingModelConstants": tunedeck.types.TrainingModelConstants,
    "TrainingConstants": tunedeck.types.TrainingConstants,
    "TrainConfig": tunedeck.types.TrainConfig,
    "ObjectList": tunedeck.types.TunedeckList,
    "PaginatedObjectList": tunedeck.types.PaginatedList,
}


def _default(p: inspect.Parameter) -> dict:
    return {"required": True} if p.default is inspect.Parameter.empty else {"value": p.default}


# -- the reference's names and signatures -----------------------------------------------------------
@pytest.mark.parametrize("name", sorted(REFERENCE["functions"]))
def test_each_function_has_the_reference_parameters_in_order_with_its_defaults(name):
    reference = REFERENCE["functions"][name]["parameters"]
    ours = list(inspect.signature(getattr(fm, name)).parameters.values())
    assert [(p.name, p.kind.name, _default(p)) for p in ours[: len(reference)]] == [
        (p["name"], p["kind"], {k: v for k, v in p["default"].items() if k != "source"}) for p in reference
    ]
    for extra in ours[len(reference):]:
        assert extra.name in EXTRA_PARAMETERS.get(name, set()), extra.name
        assert extra.kind is inspect.Parameter.KEYWORD_ONLY and extra.default is not inspect.Parameter.empty


def test_the_reference_modules_and_exports_exist_under_tunedeck():
    import importlib

    assert set(REFERENCE["exports"]["databricks.model_training"]) <= set(tunedeck.__all__)
    assert set(REFERENCE["exports"]["databricks.model_training.api.foundation_model"]) <= set(fm.__all__)
    assert set(REFERENCE["exports"]["databricks.model_training.types"]) <= set(tunedeck.types.__all__)
    for module, names in {
        "tunedeck.types.run_status": ["RunStatus"],
        "tunedeck.types.training_run": ["TrainingRun", "TrainingEvent"],
        "tunedeck.types.training_constants": ["TrainingModelConstants", "TrainingConstants"],
        "tunedeck.types.train_config": ["TrainConfig"],
        "tunedeck.types.common": ["ObjectList", "PaginatedObjectList"],
        "tunedeck.api.exceptions": list(REFERENCE["exceptions"]),
        "tunedeck.exceptions": list(REFERENCE["exceptions"]),
    }.items():
        mod = importlib.import_module(module)
        for name in names:
            assert hasattr(mod, name), f"{module}.{name}"


def test_the_exception_classes_keep_the_reference_hierarchy():
    import tunedeck.exceptions as exc

    for name, bases in REFERENCE["exceptions"].items():
        cls = getattr(exc, name)
        for base in bases:
            assert issubclass(cls, Exception if base == "Exception" else getattr(exc, base)), (name, base)
    assert exc.DatabricksGenAIError is tunedeck.TunedeckError  # every tunedeck error is one


@pytest.mark.parametrize("cls_name", sorted(REFERENCE["classes"]))
def test_each_type_has_the_reference_attributes_and_methods(cls_name):
    ref, ours = REFERENCE["classes"][cls_name], CLASSES[cls_name]
    names = {f["name"] for f in ref["fields"]} | set(ref["properties"]) | set(ref["methods"])
    dataclass_fields = {f.name for f in getattr(ours, "__dataclass_fields__", {}).values()}
    for name in sorted(names):
        if (cls_name, name) in MISSING:
            continue
        assert name in dataclass_fields or hasattr(ours, name), f"{cls_name}.{name}"
    for name, method in ref["methods"].items():
        if (cls_name, name) in MISSING:
            continue
        params = [p for p in inspect.signature(getattr(ours, name)).parameters.values() if p.name not in ("self", "cls")]
        reference = [p for p in method["parameters"] if p["name"] not in ("self", "cls")]
        if (cls_name, name) in BY_POSITION:
            assert len(params) == len(reference) and all(p.kind is p.POSITIONAL_ONLY for p in params)
            continue
        assert [(p.name, _default(p)) for p in params] == [
            (p["name"], {k: v for k, v in p["default"].items() if k != "source"}) for p in reference
        ], f"{cls_name}.{name}"
    if "members" in ref:
        assert [m.name for m in ours] == ref["members"]


def test_train_config_has_the_reference_fields_in_order():
    ref = [f["name"] for f in REFERENCE["classes"]["TrainConfig"]["fields"]]
    assert list(tunedeck.types.TrainConfig.__dataclass_fields__) == ref


# -- RunStatus and events ---------------------------------------------------------------------------
def test_run_status_compares_by_lifecycle_as_the_reference():
    latest_first = REFERENCE["run_status_order_latest_first"]
    assert [s.value for s in RunStatus.order] == latest_first
    assert [s.value for s in sorted(RunStatus)] == latest_first[::-1]
    assert RunStatus.RUNNING < RunStatus.COMPLETED and RunStatus.PENDING < RunStatus.QUEUED < RunStatus.STARTING
    assert RunStatus.TERMINATING > RunStatus.RUNNING and RunStatus.FAILED >= RunStatus.STOPPED >= RunStatus.COMPLETED
    assert max([RunStatus.RUNNING, RunStatus.PENDING]) is RunStatus.RUNNING
    assert RunStatus.RUNNING.before(RunStatus.COMPLETED) and RunStatus.COMPLETED.after(RunStatus.RUNNING)
    assert not RunStatus.RUNNING.before(RunStatus.RUNNING) and RunStatus.RUNNING.before(RunStatus.RUNNING, inclusive=True)
    assert {s for s in RunStatus if s.is_terminal()} == {RunStatus.COMPLETED, RunStatus.STOPPED, RunStatus.FAILED}
    with pytest.raises(TypeError):
        RunStatus.RUNNING < "COMPLETED"  # noqa: B015 - the reference refuses to order a status and a str


def test_run_status_helpers():
    assert RunStatus.from_string("running") is RunStatus.RUNNING
    assert RunStatus.from_string("Terminating") is RunStatus.TERMINATING
    assert RunStatus.from_string(RunStatus.FAILED) is RunStatus.FAILED
    assert RunStatus.from_string("nonsense") is RunStatus.UNKNOWN
    assert RunStatus.COMPLETED.display_name == "Completed" and str(RunStatus.RUNNING) == "RUNNING"
    assert {RunStatus.RUNNING: 1}["RUNNING"] == 1  # still a str for tunedeck's own use


@pytest.mark.parametrize("event_type", ["COMPLETED", "FAILED", "STOPPED", "CANCELED", "RUNNING", "TRAIN_UPDATED"])
def test_training_event_is_terminal_state(event_type):
    event = TrainingEvent(event_type, T0, "")
    assert event.is_terminal_state() is (event_type in REFERENCE["terminal_event_types"])


# -- to_pandas --------------------------------------------------------------------------------------
def test_to_pandas_has_the_reference_columns_first(fake):
    fake.add("r1", 0, RunStatus.RUNNING, progress=42.0, mlflow_experiment_id="1", mlflow_run_id="abc",
             experiment_path="/Users/me/r1", learning_rate=1e-3, training_duration="1ep")
    runs = fm.list().to_pandas()
    columns = REFERENCE["to_pandas_columns"]
    assert list(runs.columns[: len(columns["TRAINING_RUN"])]) == columns["TRAINING_RUN"]
    row = runs.iloc[0]
    assert row["run_progress"] == "RUNNING ■■■■□□□□□□(42%)" and row["_get_mlflow_path_html_with_link"] == "/Users/me/r1/r1"
    assert row["register_to"] == "main.demo" and row["learning_rate"] == 1e-3 and row["status"] == "RUNNING"
    events = fm.get_events("r1").to_pandas()
    assert list(events.columns[:3]) == columns["RUN_EVENT"]
    models = fm.get_models().to_pandas()
    assert list(models.columns[:3]) == columns["TRAINING_MODEL_CONSTANTS"]
    assert models["display_name"].tolist() == [m.name for m in fake.models()]


# -- functions --------------------------------------------------------------------------------------
def test_get_takes_a_name_or_a_run_and_an_unknown_run_is_the_references_response_error(fake):
    fake.add("r1", 0)
    assert fm.get(training_run="r1").name == "r1"
    assert fm.get(fm.get("r1")).name == "r1"
    with pytest.raises(DatabricksGenAIResponseError) as err:
        fm.get("nope")
    assert isinstance(err.value, RunNotFoundError) and "nope" in err.value.message
    with pytest.raises(DatabricksGenAIResponseError):
        fm.get_events("nope")


def test_list_filters_like_the_reference(fake):
    fake.add("a", 0, RunStatus.COMPLETED, created_by="ann", mlflow_experiment_id="7", experiment_path="/Users/ann/x")
    fake.add("b", 10, RunStatus.RUNNING, created_by="bob", mlflow_experiment_id="8", experiment_path="/Users/bob/y")
    fake.add("c", 20, RunStatus.PENDING, created_by="ann", experiment_path="/Users/ann/x")  # not started: no id yet
    fake.add("d", 30, RunStatus.FAILED, created_by="bob")

    def names(**kw):
        return [r.name for r in fm.list(**kw)]

    assert names() == ["d", "c", "b", "a"]  # newest first
    assert names(training_runs=["a", fm.get("b"), "zzz"]) == ["b", "a"]
    assert names(experiment_id="7") == ["c", "a"]  # c is in a's experiment, by its path
    assert names(statuses=[RunStatus.COMPLETED, "FAILED"]) == ["d", "a"]
    assert names(statuses=["running"]) == ["b"]
    assert names(user_emails=["ann"]) == ["c", "a"]
    assert names(before=T0 + timedelta(minutes=20)) == ["b", "a"]
    assert names(after=T0 + timedelta(minutes=10)) == ["d", "c", "b"]
    local = (T0 + timedelta(minutes=10)).astimezone().replace(tzinfo=None)
    assert names(after=local.strftime("%Y-%m-%d %H:%M:%S"), before=local + timedelta(minutes=15)) == ["c", "b"]
    assert names(training_runs=["a", "b"], statuses=["RUNNING"], include_details=False) == ["b"]
    with pytest.raises(ValidationError):
        fm.list(before="next tuesday")
    with pytest.raises(ValidationError):
        fm.list(limit=0)


def test_list_pages_with_has_next_page_and_next_page(fake):
    for i in range(5):
        fake.add(f"r{i}", i)
    first = fm.list(limit=2)
    assert [r.name for r in first] == ["r4", "r3"] and first.has_next_page and first.cursor
    fake.add("new", 99)  # created between pages: the pages go on from where the first ended
    second = first.next_page()
    assert [r.name for r in second] == ["r2", "r1"] and second.has_next_page
    third = second.next_page(limit=10)
    assert [r.name for r in third] == ["r0"] and not third.has_next_page
    with pytest.raises(StopIteration):
        third.next_page()
    everything = fm.list(limit=None)
    assert len(everything) == 6 and not everything.has_next_page
    assert len(fm.list()) == 6


def test_cancel_as_the_reference(fake, capsys):
    fake.add("a", 0, RunStatus.RUNNING, mlflow_experiment_id="7", experiment_path="/e")
    fake.add("b", 1, RunStatus.PENDING, experiment_path="/e")
    fake.add("c", 2, RunStatus.COMPLETED, mlflow_experiment_id="7", experiment_path="/e")
    fake.add("d", 3, RunStatus.RUNNING)
    with pytest.raises(DatabricksModelTrainingRequestError):
        fm.cancel()
    with pytest.raises(DatabricksModelTrainingRequestError):
        fm.cancel(runs="a", experiment_id="7")
    assert fm.cancel(experiment_id="7") == 2  # b and a (newest first): c had already ended, d is elsewhere
    assert "Canceled b, a successfully." in capsys.readouterr().out
    assert fake.runs["a"].status is RunStatus.STOPPED and fake.runs["d"].status is RunStatus.RUNNING
    assert fm.cancel(["d", "c", "no-such-run"]) == 1
    assert "Canceled d successfully. 2 run(s) were not found or already terminated." in capsys.readouterr().out
    assert fm.cancel(runs=fm.get("d")) == 0
    assert "No active runs found to cancel." in capsys.readouterr().out


def test_cancel_wraps_a_service_failure_in_the_references_request_error(fake, monkeypatch):
    fake.add("a", 0)

    def down(name):
        raise ServiceUnavailableError("the tunedeck service is not answering")

    monkeypatch.setattr(fake, "cancel_run", down)
    with pytest.raises(DatabricksModelTrainingRequestError) as err:
        fm.cancel("a")
    assert isinstance(err.value.__cause__, ServiceUnavailableError) and "not answering" in str(err.value)


def test_get_checkpoints_returns_path_strings_that_carry_the_details(fake, capsys):
    run = fake.add("r", 0, RunStatus.COMPLETED)
    assert fm.get_checkpoints(run) == []
    assert "No checkpoints created yet" in capsys.readouterr().out
    fake.checkpoint_log["r"] = [Checkpoint("ep1-ba2", "/runs/r/checkpoints/ep1-ba2", 1, 2),
                                Checkpoint("ep1-ba4", "/runs/r/checkpoints/ep1-ba4", 1, 4, is_latest=True)]
    paths = fm.get_checkpoints(training_run=run)
    assert paths == ["/runs/r/checkpoints/ep1-ba2", "/runs/r/checkpoints/ep1-ba4"]
    assert all(isinstance(p, str) for p in paths) and json.dumps(paths)
    assert paths[-1].is_latest and paths[-1].batch == 4 and paths[-1].name == "ep1-ba4" and paths[-1].path == paths[-1]
    assert paths.to_pandas()["name"].tolist() == ["ep1-ba2", "ep1-ba4"]
    with pytest.raises(DatabricksGenAIResponseError):
        fm.get_checkpoints(None)
    with pytest.raises(RunNotFoundError):
        fm.get_checkpoints("nope")


def test_create_has_the_reference_defaults_and_its_refusal_is_the_references_errors(fake):
    fm.create("tiny-chat", "/d/train.jsonl", "main.demo")
    sent = fake.created[-1]
    assert sent["task_type"] == "CHAT_COMPLETION" and sent["validate_inputs"] is True and "experiment_path" not in sent
    fm.create("tiny-chat", "/d/train.jsonl", "main.demo", task_type=None, validate_inputs=None, experiment_path="")
    assert fake.created[-1]["task_type"] == "CHAT_COMPLETION" and fake.created[-1]["validate_inputs"] is False
    fake.create_error = InvalidInputError([Problem("model", "is not available")])
    with pytest.raises(InvalidInputError) as err:
        fm.create("nope", "/d/train.jsonl", "main.demo")
    assert isinstance(err.value, ValidationError) and isinstance(err.value, MAPIException) and isinstance(err.value, ValueError)
    assert err.value.status == 400 and err.value.problems[0].field == "model" and "model: is not available" in str(err.value)
    assert isinstance(err.value, DatabricksGenAIError)


# -- TrainingRun ------------------------------------------------------------------------------------
def test_a_training_run_has_the_reference_attributes(fake):
    soon = datetime.now(timezone.utc) + timedelta(minutes=5, seconds=30)
    fake.add("r", 0, RunStatus.RUNNING, mlflow_experiment_id="7", mlflow_run_id="abc", experiment_path="/Users/me/r",
             run_dir="/runs/r", estimated_end_time=soon, learning_rate=1e-3, context_length=512, training_duration="1ep",
             data_prep_cluster_id="c-1", created_by="me")
    fake.emit("r", "STARTED")
    run = fm.get("r")
    assert (run.experiment_id, run.run_id) == ("7", "abc")
    assert (run.save_folder, run.submitted_experiment_path) == ("/runs/r", "/Users/me/r")
    assert run.formatted_eta == "5min" and run.run_progress.startswith("RUNNING ") and run.run_progress.endswith("%)")
    config = run.submitted_config
    assert (config.model, config.learning_rate, config.context_length) == ("tiny-chat", 1e-3, 512)
    assert config.training_duration == "1ep"
    assert config.experiment_tracker == {"mlflow": {"experiment_path": "/Users/me/r", "model_registry_path": "main.demo"}}
    assert config.data_prep_config == {"clusterId": "c-1"} and config.disable_credentials_check is False
    assert [e.type for e in run.events] == ["CREATED", "STARTED"] and "STARTED" in run.formatted_events
    fake.emit("r", "TRAIN_UPDATED")
    assert len(run.events) == 2 and len(run.get_events()) == 3 and len(run.refresh().events) == 3  # events: read once
    assert run.cancel() == 1 and run.refresh().status is RunStatus.STOPPED and run.status is RunStatus.RUNNING
    assert run.refresh().formatted_eta is None and run.refresh().run_progress == "STOPPED"


def test_model_info_has_the_reference_display_name(fake):
    models = fm.get_models()
    assert all(isinstance(m, ModelInfo) and m.display_name == m.name for m in models)
    assert tunedeck.types.TrainingModelConstants is ModelInfo


def test_a_run_shows_as_a_table_where_no_monitor_can(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj))
    monkeypatch.setattr(tunedeck.types, "_display", lambda run: False)
    TrainingRun("r", RunStatus.RUNNING, "m", "/d", "main.demo")._ipython_display_()
    assert "tunedeck-run" in shown[0]["text/html"]


# -- types imports nothing of the API ---------------------------------------------------------------
def test_types_imports_no_other_part_of_tunedeck():
    folder = Path(tunedeck.types.__file__).parent
    for source in folder.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tunedeck"):
                assert node.module == "tunedeck.types", f"{source.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("tunedeck") for a in node.names), source.name


def test_importing_the_types_or_the_api_loads_no_http_or_widget_library():
    code = ("import sys, tunedeck.types, tunedeck.types.training_run; from tunedeck import foundation_model; "
            "print(' '.join(m for m in ('requests', 'urllib3', 'ipywidgets', 'IPython', 'pandas') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""


def test_the_compatibility_page_names_every_reference_name():
    page = (Path(__file__).parents[2] / "docs" / "reference-compatibility.md").read_text()
    names = set(REFERENCE["functions"]) | set(REFERENCE["exceptions"]) | set(REFERENCE["classes"])
    for cls in REFERENCE["classes"].values():
        names |= {f["name"] for f in cls["fields"]} | set(cls["properties"]) | set(cls["methods"]) | set(cls.get("members", []))
    for module, exports in REFERENCE["exports"].items():
        names |= {module, *exports}
    assert not sorted(n for n in names if n not in page)
