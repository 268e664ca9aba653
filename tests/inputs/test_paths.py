import json

from tunedeck.inputs.paths import local_path, resolve_data


def test_volumes_paths_map_onto_the_local_volumes_root(home):
    expected = home / "volumes" / "main" / "mydirectory" / "ift" / "train.jsonl"
    assert local_path("dbfs:/Volumes/main/mydirectory/ift/train.jsonl") == expected
    assert local_path("/Volumes/main/mydirectory/ift/train.jsonl") == expected


def test_missing_file_names_the_mapped_place(home):
    source, problems = resolve_data("dbfs:/Volumes/main/x/y/train.jsonl", "INSTRUCTION_FINETUNE", "train_data_path")
    assert source is None
    assert problems[0].field == "train_data_path"
    assert "does not exist" in problems[0].message and "TUNEDECK_VOLUMES" in problems[0].message


def test_continued_pretrain_takes_a_folder_of_txt(home, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("hello")
    (folder / "b.md").write_text("ignored")
    source, problems = resolve_data(str(folder), "CONTINUED_PRETRAIN", "train_data_path")
    assert not problems and source.kind == "txt" and [p.endswith("a.txt") for p in source.files] == [True]


def test_hf_dataset_read_from_a_local_cache_layout_fake_hub_cache(home, tmp_path):
    # The hub itself is out of reach here; this builds the cache layout huggingface_hub writes.
    repo = tmp_path / "hf-cache" / "datasets--mosaicml--dolly_hhrlhf"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    (snap / "train.jsonl").write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    source, problems = resolve_data("mosaicml/dolly_hhrlhf/train", "INSTRUCTION_FINETUNE", "train_data_path")
    assert not problems and source.kind == "jsonl" and source.files == [str(snap / "train.jsonl")]
    _, problems = resolve_data("mosaicml/not_cached/train", "INSTRUCTION_FINETUNE", "train_data_path")
    assert "not in the local cache" in problems[0].message


def test_a_unity_catalog_table_name_is_a_table_under_the_catalog_root(home):
    _, problems = resolve_data("main.schema.table", "INSTRUCTION_FINETUNE", "train_data_path")
    assert problems[0].message.startswith("table main.schema.table: the local catalog root")  # tests/inputs/test_tables.py


def test_reference_checkpoint_paths_map_to_the_runs_checkpoint_folder(home):
    """get_checkpoints()' form, dbfs:/databricks/mlflow-tracking/<exp>/<run id>/artifacts/<run>/checkpoints/
    ep#-ba#, names the run's local checkpoint folder; unknown runs and checkpoints, another MLflow run's
    id and other mlflow-tracking paths are PathErrors that say which."""
    import pytest

    from tunedeck import config
    from tunedeck.errors import Problem
    from tunedeck.inputs.paths import PathError, checkpoint_path
    from tunedeck.inputs.validate import RunRequest, request_problems

    folder = config.runs_root() / "my-run-abc" / "checkpoints" / "ep0-ba4"
    folder.mkdir(parents=True)
    (folder / "checkpoint.json").write_text(json.dumps({"step": 4, "mlflow_run_id": "0123abcd"}))
    base = "dbfs:/databricks/mlflow-tracking/7/0123abcd/artifacts/my-run-abc/checkpoints"
    assert checkpoint_path(f"{base}/ep0-ba4") == folder
    assert checkpoint_path(f"{base}/ep0-ba4".removeprefix("dbfs:")) == folder  # /databricks/... as well
    assert checkpoint_path(str(folder)) == folder  # local paths as before

    with pytest.raises(PathError, match="no run named 'other-run'"):
        checkpoint_path("dbfs:/databricks/mlflow-tracking/7/0123abcd/artifacts/other-run/checkpoints/ep0-ba4")
    with pytest.raises(PathError, match=r"has no checkpoint 'ep9-ba99' \(its checkpoints: ep0-ba4\)"):
        checkpoint_path(f"{base}/ep9-ba99")
    with pytest.raises(PathError, match="belongs to MLflow run 0123abcd, not 'ffff'"):
        checkpoint_path("dbfs:/databricks/mlflow-tracking/7/ffff/artifacts/my-run-abc/checkpoints/ep0-ba4")
    with pytest.raises(PathError, match="is not a checkpoint path"):
        checkpoint_path("dbfs:/databricks/mlflow-tracking/7/0123abcd/artifacts/model")
    with pytest.raises(PathError, match="'..' may not appear"):
        checkpoint_path("dbfs:/databricks/mlflow-tracking/7/0123abcd/artifacts/../checkpoints/ep0-ba4")
    with pytest.raises(PathError, match="only dbfs:/Volumes"):
        local_path(f"{base}/ep0-ba4")  # data paths do not take this form

    # a create() request names the field, without touching anything else
    req = RunRequest(model="tiny", train_data_path="/data.jsonl", register_to="main.compat",
                     custom_weights_path=f"{base}/ep5-ba1")
    problems = [p for p in request_problems(req) if p.field == "custom_weights_path"]
    assert len(problems) == 1 and isinstance(problems[0], Problem) and "has no checkpoint 'ep5-ba1'" in problems[0].message
    ok = RunRequest(model="tiny", train_data_path="/data.jsonl", register_to="main.compat",
                    custom_weights_path=f"{base}/ep0-ba4")
    assert not [p for p in request_problems(ok) if p.field == "custom_weights_path"]
