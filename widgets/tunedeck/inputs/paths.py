"""Where the user's paths point on this machine, and how they are opened safely.

``dbfs:/Volumes/<catalog>/<schema>/<volume>/...`` and ``/Volumes/...`` map onto a local volumes root so
scripts written for the hosted service run unchanged; ``org/name/split`` is a Hugging Face dataset,
read from the local cache because this machine has no network; ``<catalog>.<schema>.<table>`` is a
Delta table under the local catalog root (inputs/tables.py).

Every path comes from a caller the service does not trust, so:

* local paths must be absolute: the service's working directory means nothing to its caller (the
  client turns a relative path into an absolute one against the caller's own directory);
* a Volumes path stays inside the volumes root (no ``..`` segment);
* only regular files and folders are read: a named pipe, a device or a socket is refused before it is
  opened (``os.stat``), files are opened with ``O_NONBLOCK`` and checked again on the open descriptor,
  and nothing under /proc, /sys or /dev is read;
* a data file may be at most TUNEDECK_MAX_DATA_BYTES (default 10 GiB), a folder may hold at most
  MAX_DATA_FILES data files, and small metadata files (config.json, *.symlink) at most 16 MiB;
* an OS error on a path (name too long, permission denied, symlink loop, ...) is a Problem naming the
  parameter, never an exception out of the request.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path
from typing import BinaryIO

from tunedeck import config
from tunedeck.errors import Problem
from tunedeck.inputs.spec import DataSource

_HF_DATASET = re.compile(r"^([A-Za-z0-9][\w.\-]*)/([\w.\-]+)/([\w.\-]+)$")
TABLE_NAME = re.compile(r"^([\w\-]+)\.([\w\-]+)\.([\w\-]+)$")  # <catalog>.<schema>.<table>: inputs/tables.py

MAX_PATH_CHARS = 4096
DEFAULT_MAX_DATA_BYTES = 10 * 1024**3
MAX_DATA_FILES = 10_000
MAX_DATA_FOLDERS = 2_000
MAX_SMALL_FILE_BYTES = 16 * 1024**2
ROW_SUFFIXES = (".jsonl", ".json", ".ndjson", ".parquet")
_PSEUDO_ROOTS = ("/proc", "/sys", "/dev")


class PathError(ValueError):
    pass


def is_dataset_id(path: str) -> bool:
    """A Hugging Face dataset id ('org/name/split') or a Unity Catalog table name ('a.b.c'), not a local path."""
    p = path.strip() if isinstance(path, str) else ""
    return bool((_HF_DATASET.match(p) and not p.startswith(("/", ".", "~"))) or TABLE_NAME.match(p))


def max_data_bytes() -> int:
    """The largest data file the service reads (TUNEDECK_MAX_DATA_BYTES, bytes; default 10 GiB)."""
    value = os.environ.get("TUNEDECK_MAX_DATA_BYTES", "").strip().replace("_", "")
    try:
        return int(value) if value else DEFAULT_MAX_DATA_BYTES
    except ValueError:
        return DEFAULT_MAX_DATA_BYTES


def local_path(path: str) -> Path:
    """The local file a user path refers to (it may not exist); PathError when it can have none."""
    if not isinstance(path, str):
        raise PathError(f"a path must be a string, found {type(path).__name__}")
    p = path.strip()
    if not p:
        raise PathError("the path is empty")
    if len(p) > MAX_PATH_CHARS:
        raise PathError(f"the path is {len(p):,} characters long; at most {MAX_PATH_CHARS:,} are allowed")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in p):
        raise PathError(f"{short(p)} contains a control character (a NUL byte, newline, ...)")
    if p.startswith("file://"):
        p = p[len("file://") :]
    if p.startswith("dbfs:"):
        rest = p[len("dbfs:") :]
        if not rest.startswith("/Volumes/"):
            raise PathError(f"{short(path)}: only dbfs:/Volumes/... paths map to this machine")
        p = rest
    if p.startswith("/Volumes/"):
        rest = p[len("/Volumes/") :]
        if ".." in rest.split("/"):
            raise PathError(f"{short(path)}: '..' may not appear in a Volumes path (it would leave the volumes root)")
        return config.volumes_root() / rest.lstrip("/")
    try:
        local = Path(p).expanduser()
    except RuntimeError:  # ~user with no such user
        raise PathError(f"{short(path)}: cannot expand '~' (no such user on the service's machine)") from None
    if not local.is_absolute():
        raise PathError(
            f"{short(path)} is a relative path: pass an absolute path (the service does not know your working "
            "directory; foundation_model.create() makes local relative paths absolute for you)"
        )
    return local


_MLFLOW_CHECKPOINT = re.compile(
    r"^(?:dbfs:)?/databricks/mlflow-tracking/(?P<experiment>[^/]+)/(?P<run_id>[^/]+)/artifacts/"
    r"(?P<run>[^/]+)/checkpoints/(?P<checkpoint>[^/]+?)/?$"
)
MLFLOW_TRACKING_PREFIXES = ("dbfs:/databricks/mlflow-tracking/", "/databricks/mlflow-tracking/")


def checkpoint_path(path: str) -> Path:
    """The local checkpoint a ``custom_weights_path`` names: as ``local_path``, and also the reference's
    form that ``get_checkpoints()`` answers, ``dbfs:/databricks/mlflow-tracking/<experiment id>/<MLflow
    run id>/artifacts/<run name>/checkpoints/ep#-ba#`` (or its ``latest-sharded-rank0.symlink``), mapped
    to that run's local checkpoint folder. PathError when the run or the checkpoint is unknown here, or
    the checkpoint belongs to another MLflow run."""
    p = path.strip() if isinstance(path, str) else path
    if not (isinstance(p, str) and p.startswith(MLFLOW_TRACKING_PREFIXES)):
        return local_path(path)
    local_path("/" + p.split("/", 1)[1])  # length and control characters, as for any path
    m = _MLFLOW_CHECKPOINT.match(p)
    if m is None:
        raise PathError(
            f"{short(p)} is not a checkpoint path: expected dbfs:/databricks/mlflow-tracking/<experiment id>/"
            "<run id>/artifacts/<run name>/checkpoints/ep#-ba# (as get_checkpoints() answers)"
        )
    run, checkpoint, run_id = m["run"], m["checkpoint"], m["run_id"]
    if any(part in (".", "..") for part in (run, checkpoint, run_id, m["experiment"])):
        raise PathError(f"{short(p)}: '.' and '..' may not appear in a checkpoint path")
    run_dir = config.runs_root() / run
    if not is_folder(run_dir):
        raise PathError(f"{short(p)}: there is no run named {short(run, 60)} on this service")
    folder = run_dir / "checkpoints" / checkpoint
    if not (is_folder(folder) or (checkpoint.endswith(".symlink") and is_regular_file(folder))):
        known = sorted(c.name for c in (run_dir / "checkpoints").glob("ep*-ba*")) if is_folder(run_dir / "checkpoints") else []
        raise PathError(
            f"{short(p)}: run {run} has no checkpoint {short(checkpoint, 60)} "
            f"(its checkpoints: {', '.join(known) or 'none yet'})"
        )
    recorded = _checkpoint_run_id(folder)
    if recorded and recorded != run_id:
        raise PathError(
            f"{short(p)}: checkpoint {checkpoint} of run {run} belongs to MLflow run {recorded}, not {short(run_id, 40)}"
        )
    return folder


def _checkpoint_run_id(folder: Path) -> str | None:
    """The MLflow run id a checkpoint's checkpoint.json records (training/checkpoint.py), if any."""
    info = folder / "checkpoint.json"
    if not is_regular_file(info):
        return None
    try:
        value = json.loads(read_small_text(info, 1024 * 1024)).get("mlflow_run_id")
    except (ValueError, OSError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def short(text: str, limit: int = 120) -> str:
    """``repr`` of user text, cut to ``limit`` characters so a hostile value is never echoed whole."""
    text = str(text)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text):,} characters)"


def os_problem(field: str, error: OSError, path: str | Path | None = None) -> Problem:
    """An OSError on a path as a Problem (ENAMETOOLONG, EACCES, ELOOP, ...)."""
    reason = error.strerror or errno.errorcode.get(error.errno or 0) or type(error).__name__
    where = str(path if path is not None else error.filename or "")
    return Problem(field, f"cannot use the path: {reason}", file=where[:MAX_PATH_CHARS] or None)


def stat_path(path: Path) -> os.stat_result | None:
    """os.stat (following symlinks), or None when nothing is there; other OS errors propagate."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None


def file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _pseudo(path: Path) -> bool:
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root + "/") for root in _PSEUDO_ROOTS)


def check_regular(path: Path, max_bytes: int | None = None) -> str | None:
    """Why ``path`` may not be read as a data file (None when it may): not regular, too big, /proc..."""
    if _pseudo(path):
        return f"{path} is on a system pseudo-filesystem (/proc, /sys, /dev): only regular files are read"
    st = stat_path(path)
    if st is None:
        return f"{path} does not exist"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is {file_kind(st.st_mode)}, not a regular file"
    limit = max_data_bytes() if max_bytes is None else max_bytes
    if st.st_size > limit:
        return f"{path} is {st.st_size:,} bytes; files larger than {limit:,} bytes are not read (TUNEDECK_MAX_DATA_BYTES)"
    return None


def open_regular(path: str | Path, max_bytes: int | None = None) -> BinaryIO:
    """Open a regular file for binary reading without ever blocking; PathError for anything else.

    The path is checked with ``os.stat`` before it is opened (a FIFO or a device is never opened), then
    opened with O_NONBLOCK and checked again on the descriptor, in case it was swapped in between.
    """
    path = Path(path)
    why = check_regular(path, max_bytes)
    if why:
        raise PathError(why)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        limit = max_data_bytes() if max_bytes is None else max_bytes
        if not stat.S_ISREG(st.st_mode):
            raise PathError(f"{path} is {file_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise PathError(f"{path} is {st.st_size:,} bytes; files larger than {limit:,} bytes are not read")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_small(path: str | Path, max_bytes: int = MAX_SMALL_FILE_BYTES) -> bytes:
    """A small metadata file's bytes (config.json, a *.symlink file), read safely; PathError/OSError."""
    with open_regular(path, max_bytes) as f:
        return f.read(max_bytes + 1)[:max_bytes]


def read_small_text(path: str | Path, max_bytes: int = MAX_SMALL_FILE_BYTES) -> str:
    return read_small(path, max_bytes).decode("utf-8")


def is_regular_file(path: Path) -> bool:
    """A regular file (after symlinks) that can be stat'ed; False on any OS error."""
    try:
        st = stat_path(path)
    except (OSError, ValueError):
        return False
    return st is not None and stat.S_ISREG(st.st_mode)


def is_folder(path: Path) -> bool:
    try:
        st = stat_path(path)
    except (OSError, ValueError):
        return False
    return st is not None and stat.S_ISDIR(st.st_mode)


def hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(hf_home) / "hub"


def snapshot_dir(repo_dir: Path) -> Path | None:
    """The snapshot folder of a cached Hugging Face repo: the one refs/main names, else the newest."""
    ref = repo_dir / "refs" / "main"
    try:
        if is_regular_file(ref):
            name = read_small_text(ref, 4096).strip()
            snap = repo_dir / "snapshots" / name
            if name and "/" not in name and name not in (".", "..") and is_folder(snap):
                return snap
        snaps = sorted((p for p in (repo_dir / "snapshots").glob("*") if is_folder(p)),
                       key=lambda p: p.stat().st_mtime, reverse=True)
    except (OSError, ValueError):
        return None
    return snaps[0] if snaps else None


def resolve_data(path: str, task_type: str, field: str) -> tuple[DataSource | None, list[Problem]]:
    """Resolve a train/eval data path to local files, or say why it cannot be."""
    if not isinstance(path, str) or not path.strip():
        return None, [Problem(field, "a data path is required")]
    path = path.strip()
    hf_like = _HF_DATASET.match(path) and not path.startswith(("/", ".", "~", "file:", "dbfs:"))
    if hf_like:
        return _hf_dataset(path, field)
    if TABLE_NAME.match(path):  # a Delta table under the local catalog root (deltalake: imported when read)
        from tunedeck.inputs.tables import resolve_table

        return resolve_table(path, task_type, field)
    try:
        local = local_path(path)
    except PathError as exc:
        return None, [Problem(field, str(exc))]
    try:
        found = stat_path(local)
        if found is not None:
            return _local_source(local, path, task_type, field, found)
    except OSError as exc:
        return None, [os_problem(field, exc, local)]
    hint = ""
    if path.startswith(("dbfs:/Volumes/", "/Volumes/")):
        hint = f" (Volumes paths map to {config.volumes_root()}; set TUNEDECK_VOLUMES to change that)"
    return None, [Problem(field, f"{local} does not exist{hint}", file=str(local))]


def _local_source(
    local: Path, origin: str, task_type: str, field: str, st: os.stat_result
) -> tuple[DataSource | None, list[Problem]]:
    if _pseudo(local):
        return None, [Problem(field, "files on /proc, /sys or /dev are not training data: pass a regular file", file=str(local))]
    is_dir = stat.S_ISDIR(st.st_mode)
    if not is_dir and not stat.S_ISREG(st.st_mode):
        return None, [
            Problem(
                field,
                f"this is {file_kind(st.st_mode)}, not a regular file or folder: only files and folders are read",
                file=str(local),
            )
        ]
    if task_type == "CONTINUED_PRETRAIN":
        if is_dir:
            files, problem = _walk(local, (".txt",), recursive=True)
            if problem:
                return None, [Problem(field, problem, file=str(local))]
        elif local.suffix != ".txt":
            return None, [
                Problem(
                    field,
                    "CONTINUED_PRETRAIN reads .txt files (or a folder of them); this file is not a .txt file",
                    file=str(local),
                )
            ]
        else:
            files = [local]
        if not files:
            return None, [Problem(field, "CONTINUED_PRETRAIN needs a folder of .txt files; none found", file=str(local))]
        kind = "txt"
    else:
        if is_dir:
            files = []
            for suffix in (".jsonl", ".json", ".parquet"):
                files, problem = _walk(local, (suffix,), recursive=False)
                if problem:
                    return None, [Problem(field, problem, file=str(local))]
                if files:
                    break
            if not files:
                return None, [Problem(field, "the folder holds no .jsonl (or .json / .parquet) files", file=str(local))]
        elif local.suffix not in ROW_SUFFIXES:
            return None, [
                Problem(
                    field,
                    f"{task_type or 'this task'} reads rows from .jsonl files (one JSON object per line) or .parquet files; "
                    f"{local.name[:100]!r} is neither"
                    + (" (a .txt file is CONTINUED_PRETRAIN data)" if local.suffix == ".txt" else ""),
                    file=str(local),
                )
            ]
        else:
            files = [local]
        kind = "parquet" if files[0].suffix == ".parquet" else "jsonl"
    total = 0
    for f in files:
        why = check_regular(f)
        if why:
            return None, [Problem(field, why, file=str(f))]
        if not os.access(f, os.R_OK):
            return None, [Problem(field, "the file is not readable", file=str(f))]
        total += os.stat(f).st_size
    if total > max_data_bytes():
        return None, [
            Problem(
                field,
                f"the data files hold {total:,} bytes; at most {max_data_bytes():,} are read (TUNEDECK_MAX_DATA_BYTES)",
                file=str(local),
            )
        ]
    return DataSource(kind, [str(f) for f in files], origin), []


def _walk(folder: Path, suffixes: tuple[str, ...], recursive: bool) -> tuple[list[Path], str | None]:
    """Regular files with one of ``suffixes`` under ``folder`` (sorted), never following symlinked
    folders; a message instead when there are more than MAX_DATA_FILES or the walk goes too wide."""
    found: list[Path] = []
    pending = [folder]
    visited = 0
    while pending:
        current = pending.pop()
        visited += 1
        if visited > MAX_DATA_FOLDERS:
            return (
                [],
                f"the folder holds too many subfolders to scan (more than {MAX_DATA_FOLDERS:,}): pass the folder of the data",
            )
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        if recursive and entry.path not in _PSEUDO_ROOTS:
                            pending.append(Path(entry.path))
                    elif entry.name.endswith(suffixes) and entry.is_file():
                        found.append(Path(entry.path))
                        if len(found) > MAX_DATA_FILES:
                            return [], f"the folder holds more than {MAX_DATA_FILES:,} data files; pass a smaller folder"
        except OSError as exc:
            if current == folder:
                raise
            return [], f"cannot read the subfolder {current}: {exc.strerror or exc}"
    return sorted(found), None


def _hf_dataset(path: str, field: str) -> tuple[DataSource | None, list[Problem]]:
    match = _HF_DATASET.match(path)
    if match is None:
        return None, [Problem(field, f"{path!r} is not a Hugging Face dataset id (org/name/split)")]
    org, name, split = match.groups()
    if ".." in (org, name, split):
        return None, [Problem(field, f"{path!r}: '..' is not a dataset name")]
    repo_dir = hf_hub_cache() / f"datasets--{org}--{name}"
    snap = snapshot_dir(repo_dir) if is_folder(repo_dir) else None
    if snap is None:
        return None, [
            Problem(
                field,
                f"Hugging Face dataset {org}/{name} is not in the local cache ({hf_hub_cache()}) and this "
                "machine cannot download it: copy the dataset into the cache, or pass a local JSONL file "
                "(as an absolute path)",
            )
        ]
    try:
        for pattern in (f"{split}.jsonl", f"{split}.json", f"data/{split}-*.parquet", f"{split}-*.parquet",
                        f"**/{split}/*.parquet", f"**/{split}/*.jsonl", f"**/*{split}*.parquet", f"**/*{split}*.jsonl"):
            files = sorted(f for f in snap.glob(pattern) if is_regular_file(f))[: MAX_DATA_FILES]
            if files:
                for f in files:
                    why = check_regular(f)
                    if why:
                        return None, [Problem(field, why, file=str(f))]
                kind = "parquet" if files[0].suffix == ".parquet" else "jsonl"
                return DataSource(kind, [str(f) for f in files], path), []
    except OSError as exc:
        return None, [os_problem(field, exc, snap)]
    return None, [Problem(field, f"the cached dataset {org}/{name} has no files for split {split!r}", file=str(snap))]
