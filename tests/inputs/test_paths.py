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


def test_unity_catalog_tables_are_refused_clearly(home):
    _, problems = resolve_data("main.schema.table", "INSTRUCTION_FINETUNE", "train_data_path")
    assert "table" in problems[0].message
