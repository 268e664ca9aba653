"""Checkpoints and the final model, as Hugging Face folders.

    RUN_DIR/checkpoints/ep{E}-ba{B}/          save_pretrained model + tokenizer + checkpoint.json
    RUN_DIR/checkpoints/latest-sharded-rank0.symlink   a text file holding the latest folder's name
    RUN_DIR/model/                             the final model (loads with from_pretrained)

A checkpoint is written to a temporary folder and renamed into place, and the "symlink" file is
replaced atomically, so a crash or a kill mid-save never leaves a half checkpoint that looks whole.
Checkpoints hold weights only (no optimizer state): they are meant for ``custom_weights_path``,
which starts a new run from the weights, and optimizer state would triple their size.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

LATEST = "latest-sharded-rank0.symlink"
INFO = "checkpoint.json"


@dataclass(frozen=True)
class SavedCheckpoint:
    name: str
    path: Path
    epoch: int
    batch: int
    step: int
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "epoch": self.epoch, "batch": self.batch,
                "step": self.step, "created_at": self.created_at}


def checkpoint_name(epoch: int, batch: int) -> str:
    return f"ep{epoch}-ba{batch}"


def save_checkpoint(model: Any, tokenizer: Any, run_dir: Path, epoch: int, batch: int, step: int) -> SavedCheckpoint:
    root = Path(run_dir) / "checkpoints"
    name = checkpoint_name(epoch, batch)
    final = root / name
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    created = datetime.now(timezone.utc).isoformat()
    save_hf(model, tokenizer, tmp)
    info = SavedCheckpoint(name, final, epoch, batch, step, created)
    (tmp / INFO).write_text(json.dumps({"epoch": epoch, "batch": batch, "step": step, "created_at": created}, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _write_atomic(root / LATEST, name)
    return info


def export_model(checkpoint: Path, run_dir: Path) -> Path:
    """The final model folder: the last checkpoint's files, hard-linked (no second copy on disk)."""
    target = Path(run_dir) / "model"
    tmp = Path(run_dir) / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(checkpoint, tmp, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(INFO))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def save_hf(model: Any, tokenizer: Any, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or the ``latest-sharded-rank0.symlink`` file naming one beside it."""
    path = Path(path)
    if path.is_file() and path.name.endswith(".symlink"):
        return path.parent / path.read_text().strip()
    return path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
