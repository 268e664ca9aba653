"""Where the user's paths point on this machine.

``dbfs:/Volumes/<catalog>/<schema>/<volume>/...`` and ``/Volumes/...`` map onto a local volumes root so
scripts written for the hosted service run unchanged; ``org/name/split`` is a Hugging Face dataset,
read from the local cache because this machine has no network.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tunedeck import config
from tunedeck.errors import Problem
from tunedeck.inputs.spec import DataSource

_HF_DATASET = re.compile(r"^([A-Za-z0-9][\w.\-]*)/([\w.\-]+)/([\w.\-]+)$")
_TABLE = re.compile(r"^[\w\-]+\.[\w\-]+\.[\w\-]+$")


class PathError(ValueError):
    pass


def local_path(path: str) -> Path:
    """The local file a user path refers to (it may not exist)."""
    p = str(path).strip()
    if p.startswith("file://"):
        p = p[len("file://") :]
    if p.startswith("dbfs:/"):
        rest = p[len("dbfs:") :]
        if not rest.startswith("/Volumes/"):
            raise PathError(f"{path!r}: only dbfs:/Volumes/... paths map to this machine")
        p = rest
    if p.startswith("/Volumes/"):
        return config.volumes_root() / p[len("/Volumes/") :]
    return Path(p).expanduser()


def hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(hf_home) / "hub"


def snapshot_dir(repo_dir: Path) -> Path | None:
    """The snapshot folder of a cached Hugging Face repo: the one refs/main names, else the newest."""
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        snap = repo_dir / "snapshots" / ref.read_text().strip()
        if snap.is_dir():
            return snap
    snaps = sorted((repo_dir / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime, reverse=True)
    return snaps[0] if snaps else None


def resolve_data(path: str, task_type: str, field: str) -> tuple[DataSource | None, list[Problem]]:
    """Resolve a train/eval data path to local files, or say why it cannot be."""
    if not isinstance(path, str) or not path.strip():
        return None, [Problem(field, "a data path is required")]
    try:
        local = local_path(path)
    except PathError as exc:
        return None, [Problem(field, str(exc))]

    if local.exists():
        return _local_source(local, path, task_type, field)
    if _HF_DATASET.match(path) and not path.startswith(("/", ".", "~")):
        return _hf_dataset(path, field)
    if _TABLE.match(path):
        return None, [Problem(field, f"{path!r} looks like a Unity Catalog table; tables are not supported here yet: export it to JSONL and pass the file")]
    hint = ""
    if str(path).startswith(("dbfs:/Volumes/", "/Volumes/")):
        hint = f" (Volumes paths map to {config.volumes_root()}; set TUNEDECK_VOLUMES to change that)"
    return None, [Problem(field, f"{local} does not exist{hint}", file=str(local))]


def _local_source(local: Path, origin: str, task_type: str, field: str) -> tuple[DataSource | None, list[Problem]]:
    if task_type == "CONTINUED_PRETRAIN":
        files = sorted(local.rglob("*.txt")) if local.is_dir() else [local]
        if not files:
            return None, [Problem(field, "CONTINUED_PRETRAIN needs a folder of .txt files; none found", file=str(local))]
        return DataSource("txt", [str(f) for f in files], origin), []
    if local.is_dir():
        files = sorted(local.glob("*.jsonl")) or sorted(local.glob("*.json"))
        if not files:
            return None, [Problem(field, "the folder holds no .jsonl files", file=str(local))]
    else:
        files = [local]
    if not all(os.access(f, os.R_OK) for f in files):
        return None, [Problem(field, "the file is not readable", file=str(local))]
    kind = "parquet" if files[0].suffix == ".parquet" else "jsonl"
    return DataSource(kind, [str(f) for f in files], origin), []


def _hf_dataset(path: str, field: str) -> tuple[DataSource | None, list[Problem]]:
    org, name, split = _HF_DATASET.match(path).groups()
    repo_dir = hf_hub_cache() / f"datasets--{org}--{name}"
    snap = snapshot_dir(repo_dir) if repo_dir.is_dir() else None
    if snap is None:
        return None, [
            Problem(
                field,
                f"Hugging Face dataset {org}/{name} is not in the local cache ({hf_hub_cache()}) and this "
                "machine cannot download it: copy the dataset into the cache, or pass a local JSONL file",
            )
        ]
    for pattern in (f"{split}.jsonl", f"{split}.json", f"data/{split}-*.parquet", f"{split}-*.parquet",
                    f"**/{split}/*.parquet", f"**/{split}/*.jsonl", f"**/*{split}*.parquet", f"**/*{split}*.jsonl"):
        files = sorted(snap.glob(pattern))
        if files:
            kind = "parquet" if files[0].suffix == ".parquet" else "jsonl"
            return DataSource(kind, [str(f) for f in files], path), []
    return None, [Problem(field, f"the cached dataset {org}/{name} has no files for split {split!r}", file=str(snap))]
