"""A Unity Catalog table name as train and eval data through the real service: a Delta table written here
trains exactly like the same rows as JSONL files (issue 10 part 4)."""

from __future__ import annotations

import pytest

from tunedeck import InvalidInputError
from tunedeck import foundation_model as fm

from tests.helpers import PAIRS, write_jsonl

pytestmark = pytest.mark.e2e
pa = pytest.importorskip("pyarrow")
deltalake = pytest.importorskip("deltalake")


def _trained(run) -> tuple[dict, list[float]]:
    """The run's DATA_VALIDATED summary and its train loss at every step (the service's metrics)."""
    from tunedeck.client.http import get_client

    events = fm.get_events(run, follow=True)
    assert events[-1].type == "COMPLETED", events[-1].message
    data = next(e.data for e in events if e.type == "DATA_VALIDATED")
    losses = sorted((m["step"], m["value"]) for m in get_client().metrics(run.name) if m["name"] == "train/loss")
    return data, [value for _, value in losses]


def test_a_delta_table_trains_like_the_same_rows_as_jsonl(e2e_home, tmp_path):
    rows = [{"prompt": p + "\n", "response": r} for p, r in PAIRS]
    catalog = e2e_home / "tables" / "main" / "demo"  # the default catalog root: $TUNEDECK_HOME/tables
    catalog.mkdir(parents=True)
    deltalake.write_deltalake(str(catalog / "train"), pa.Table.from_pylist([{**r, "id": i} for i, r in enumerate(rows)]))
    deltalake.write_deltalake(str(catalog / "eval"), pa.Table.from_pylist(rows[:2]))
    train, evaluation = write_jsonl(tmp_path / "train.jsonl", rows), write_jsonl(tmp_path / "eval.jsonl", rows[:2])
    same = dict(model="tiny-llama", register_to="main.tests", task_type="INSTRUCTION_FINETUNE",
                training_duration="12ba", learning_rate=3e-3, context_length=64)

    # A table that is not there is refused at create(), naming the field and the table.
    with pytest.raises(InvalidInputError) as refused:
        fm.create(train_data_path="main.demo.missing", eval_data_path="main.demo.eval", **same)
    assert [p.field for p in refused.value.problems] == ["train_data_path"]
    assert "table main.demo.missing does not exist" in refused.value.problems[0].message

    from_table = fm.create(train_data_path="main.demo.train", eval_data_path="main.demo.eval",
                           data_prep_cluster_id="0101-tables", **same)
    from_jsonl = fm.create(train_data_path=str(train), eval_data_path=str(evaluation), **same)
    table_data, table_losses = _trained(from_table)
    jsonl_data, jsonl_losses = _trained(from_jsonl)

    assert table_data["train"] == jsonl_data["train"] and table_data["eval"] == jsonl_data["eval"]  # rows, tokens, packing
    assert table_data["train"]["rows"] == len(PAIRS) and table_data["eval"]["rows"] == 2
    assert len(table_losses) == 12 and table_losses == pytest.approx(jsonl_losses, rel=1e-5)  # the same seed, the same curve
    assert table_losses[-1] < table_losses[0] * 0.75  # it learned
    run = fm.get(from_table)
    assert run.train_data_path == "main.demo.train" and run.data_prep_cluster_id == "0101-tables"

    # MLflow records which version of each table trained the model; JSONL files have none.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{e2e_home / 'mlflow.db'}")
    params = client.get_run(run.mlflow_run_id).data.params
    assert (params["train_data_path"], params["train_data_version"], params["eval_data_version"]) == ("main.demo.train", "0", "0")
    assert params["data_prep_cluster_id"] == "0101-tables"
    assert "train_data_version" not in client.get_run(fm.get(from_jsonl).mlflow_run_id).data.params
