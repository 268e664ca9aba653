"""A run reads the Delta table version that create() accepted, also when rows are added while it waits
in the queue and when it is launched again (an autoresume): service/core.py pin_data_versions."""

from __future__ import annotations

import json

import pytest

deltalake = pytest.importorskip("deltalake")
pa = pytest.importorskip("pyarrow")

from tests.helpers import PAIRS  # noqa: E402

from tunedeck import config  # noqa: E402
from tunedeck.inputs.validate import RunRequest, build_spec  # noqa: E402
from tunedeck.service.core import DATA_VERSIONS, RunService, pin_data_versions  # noqa: E402
from tunedeck.service.store import Store  # noqa: E402

ROWS = [{"prompt": p, "response": r} for p, r in PAIRS]


def table(name: str, rows: list[dict], mode: str = "error") -> None:
    folder = config.tables_root().joinpath(*name.split("."))
    folder.parent.mkdir(parents=True, exist_ok=True)
    deltalake.write_deltalake(str(folder), pa.Table.from_pylist(rows), mode=mode)


@pytest.fixture
def service(home):
    from tunedeck.training.tiny import build_tiny_model

    build_tiny_model(home / "models" / "tiny", [t for p in PAIRS for t in p])
    svc = RunService(Store(home / "tunedeck.db"))  # not started: nothing launches a worker here
    yield svc
    svc.store.close()


def test_rows_added_after_create_are_not_read_by_the_run(service):
    table("main.demo.train", ROWS[:3])
    table("main.demo.eval", ROWS[3:])
    run = service.create(RunRequest(model="tiny", train_data_path="main.demo.train", eval_data_path="main.demo.eval",
                                     register_to="main.demo", task_type="INSTRUCTION_FINETUNE"))
    run_dir = config.runs_root() / run.name
    assert json.loads((run_dir / DATA_VERSIONS).read_text()) == {"train_data": 0, "eval_data": 0}

    table("main.demo.train", ROWS, mode="append")  # version 1, while the run waits
    request = RunRequest.from_dict(json.loads((run_dir / "request.json").read_text()))
    spec, problems = build_spec(request, run.name, check_data=False)  # what the launch resolves
    assert problems == [] and spec.train_data.version == 1
    pin_data_versions(spec, run_dir)
    assert (spec.train_data.version, spec.eval_data.version) == (0, 0)


def test_without_checks_at_create_the_first_launch_pins_them(service):
    table("main.demo.train", ROWS)
    run = service.create(RunRequest(model="tiny", train_data_path="main.demo.train", register_to="main.demo",
                                    task_type="INSTRUCTION_FINETUNE", validate_inputs=False))
    run_dir = config.runs_root() / run.name
    assert not (run_dir / DATA_VERSIONS).exists()
    request = RunRequest.from_dict(json.loads((run_dir / "request.json").read_text()))
    first, _ = build_spec(request, run.name, check_data=False)
    pin_data_versions(first, run_dir)
    table("main.demo.train", ROWS, mode="append")
    again, _ = build_spec(request, run.name, check_data=False)  # an autoresume's launch
    pin_data_versions(again, run_dir)
    assert (first.train_data.version, again.train_data.version) == (0, 0)
