"""tunedeck.sweep: a grid of runs, every cell checked before any is created.

The FakeClient tests pin the order and the values each cell is created with; the service tests check
the same promises against the real service's validation (a bad learning rate, a bad duration).
"""

from __future__ import annotations

import pytest
from tests.helpers import PAIRS, write_jsonl
from tests.ui.fakes import FakeClient

import tunedeck
from tunedeck.errors import InvalidInputError, Problem, ServiceError
from tunedeck.types import LoRA

BASE = {"model": "tiny-chat", "train_data_path": "/d/train.jsonl", "register_to": "main.demo"}


class CheckingClient(FakeClient):
    """The FakeClient with a validate() that refuses a learning rate of 'abc' and a duration of '0ba',
    and a data problem every cell shares when ``bad_data`` is set."""

    bad_data = False

    def validate(self, params):
        self.calls.append(("validate", params))
        problems = []
        if str(params.get("learning_rate")) == "abc":
            problems.append(Problem("learning_rate", "must be a number"))
        if params.get("training_duration") == "0ba":
            problems.append(Problem("training_duration", "must be greater than 0"))
        if self.bad_data:
            problems.append(Problem("train_data_path", "line 2: not JSON", "/d/train.jsonl", 2))
        return problems


@pytest.fixture
def client(home, monkeypatch) -> CheckingClient:
    import tunedeck.client
    import tunedeck.foundation_model

    c = CheckingClient()
    monkeypatch.setattr(tunedeck.client, "get_client", lambda: c)
    monkeypatch.setattr(tunedeck.foundation_model, "get_client", lambda: c)
    return c


def test_sweep_creates_one_run_per_cell_in_grid_order(client):
    runs = tunedeck.sweep(learning_rates=[1e-4, 3e-4], training_durations=["5ba", "10ba"], **BASE,
                          task_type="INSTRUCTION_FINETUNE")
    assert [(p["learning_rate"], p["training_duration"]) for p in client.created] == [
        (1e-4, "5ba"), (1e-4, "10ba"), (3e-4, "5ba"), (3e-4, "10ba")]
    assert all(p["task_type"] == "INSTRUCTION_FINETUNE" and p["model"] == "tiny-chat" for p in client.created)
    assert [r.name for r in runs] == [f"tiny-chat-{i:06d}" for i in range(1, 5)]
    assert [(c.index, c.learning_rate, c.training_duration, c.lora_rank) for c in runs.cells] == [
        (0, 1e-4, "5ba", None), (1, 1e-4, "10ba", None), (2, 3e-4, "5ba", None), (3, 3e-4, "10ba", None)]
    assert runs.cells[3].label == "lr 0.0003 · 10ba"
    assert len([c for c in client.calls if c[0] == "validate"]) == 4  # every cell checked
    assert "adapter" not in client.created[0]


def test_lora_ranks_make_a_third_axis_on_the_given_adapter(client):
    runs = tunedeck.sweep([1e-3], ["5ba"], [4, 8], adapter=LoRA(rank=16, alpha=32.0, target_modules="attention"), **BASE)
    assert [p["adapter"]["rank"] for p in client.created] == [4, 8]
    assert all(p["adapter"]["alpha"] == 32.0 and p["adapter"]["target_modules"] == "attention" for p in client.created)
    assert [c.label for c in runs.cells] == ["lr 0.001 · 5ba · r4", "lr 0.001 · 5ba · r8"]
    tunedeck.sweep([1e-3], ["5ba"], [2], **BASE)  # no adapter given: a LoRA of that rank
    assert client.created[-1]["adapter"]["type"] == "lora" and client.created[-1]["adapter"]["rank"] == 2


def test_a_bad_cell_creates_nothing_and_names_its_cell_and_field(client):
    with pytest.raises(InvalidInputError) as err:
        tunedeck.sweep(learning_rates=[1e-4, "abc"], training_durations=["5ba", "0ba"], **BASE)
    assert client.created == []  # nothing created: not even the good first cell
    by_field = {}
    for p in err.value.problems:
        by_field.setdefault(p.field, []).append(p.message)
    assert by_field["learning_rate"] == ["cell 3 (lr abc · 5ba); cell 4 (lr abc · 0ba): must be a number"]
    assert by_field["training_duration"] == ["cell 2 (lr 0.0001 · 0ba); cell 4 (lr abc · 0ba): must be greater than 0"]


def test_a_problem_every_cell_shares_is_reported_once_as_the_service_words_it(client):
    client.bad_data = True
    with pytest.raises(InvalidInputError) as err:
        tunedeck.sweep([1e-4, 2e-4], ["5ba"], **BASE)
    assert err.value.problems == [Problem("train_data_path", "line 2: not JSON", "/d/train.jsonl", 2)]
    assert client.created == []


def test_an_empty_axis_or_a_single_value_argument(client):
    with pytest.raises(InvalidInputError, match="learning_rates: give at least one value"):
        tunedeck.sweep([], ["5ba"], **BASE)
    with pytest.raises(TypeError, match="learning_rates"):
        tunedeck.sweep([1e-4], ["5ba"], learning_rate=1e-3, **BASE)
    runs = tunedeck.sweep(1e-4, "5ba", **BASE)  # a single value is a one-cell grid
    assert len(runs) == 1 and client.created[0]["learning_rate"] == 1e-4
    assert client.created == [client.created[0]]


def test_a_refusal_midway_says_which_runs_were_made(client):
    real_create = client.create_run

    def create_run(params):
        if len(client.created) == 2:
            client.created.append(params)
            raise ServiceError("service went away", 503)
        return real_create(params)

    client.create_run = create_run
    with pytest.raises(ServiceError) as err:
        tunedeck.sweep([1e-4, 2e-4], ["5ba", "6ba"], **BASE)
    assert [r.name for r in err.value.created_runs] == ["tiny-chat-000001", "tiny-chat-000002"]
    assert [c.index for c in err.value.created_runs.cells] == [0, 1]
    assert "2 of 4 runs were created" in "".join(err.value.__notes__)


# -- the real service's validation ----------------------------------------------------------------------
@pytest.fixture
def tiny_service(service_home, tmp_path):
    from tunedeck.training.tiny import build_tiny_model

    build_tiny_model(service_home / "models" / "tiny", [t for p in PAIRS for t in p])
    data = write_jsonl(tmp_path / "train.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    return {"model": "tiny", "train_data_path": str(data), "register_to": "main.sweep.tiny", "task_type": "INSTRUCTION_FINETUNE"}


@pytest.mark.e2e
def test_the_real_service_refuses_a_bad_grid_and_creates_nothing(tiny_service):
    from tunedeck import foundation_model as fm

    with pytest.raises(InvalidInputError) as err:
        tunedeck.sweep(learning_rates=[1e-3, "abc"], training_durations=["5ba", "-3ba"], **tiny_service)
    fields = {p.field for p in err.value.problems}
    assert {"learning_rate", "training_duration"} <= fields, err.value.problems
    lr = next(p for p in err.value.problems if p.field == "learning_rate")
    assert lr.message.startswith("cell 3 (lr abc · 5ba); cell 4 (lr abc · -3ba): "), lr
    assert list(fm.list()) == []


@pytest.mark.e2e
def test_a_2x2_sweep_trains_and_compares_on_the_real_service(tiny_service):
    """Four very short runs (3 batches each) through the real service's queue; the comparison's rows
    and curves are the service's own runs and metrics."""
    from tests.helpers import wait_for

    from tunedeck import foundation_model as fm

    runs = tunedeck.sweep([1e-3, 3e-3], ["2ba", "3ba"], **tiny_service)
    assert [(r.learning_rate, r.training_duration) for r in runs] == [(1e-3, "2ba"), (1e-3, "3ba"), (3e-3, "2ba"), (3e-3, "3ba")]
    view = tunedeck.compare(runs, poll_seconds=0.5)
    try:
        wait_for(lambda: view.finished, timeout=900, interval=1.0)
        view.refresh()
        for cell, run, row in zip(runs.cells, runs, view.rows, strict=True):
            final = fm.get(run)
            assert row["name"] == run.name and row["label"] == cell.label
            assert row["status"] == final.status.value == "COMPLETED", final.details
            assert row["registered_model_version"] == final.registered_model_version is not None
            steps = [p[0] for p in view.series[run.name]["train"]]
            assert steps == list(range(1, int(cell.training_duration[:-2]) + 1))
            assert row["loss"] == view.series[run.name]["train"][-1][1]
            assert row["seconds"] is not None and row["seconds"] > 0
        assert sum(r["best"] for r in view.rows) == 1
    finally:
        view.close()
