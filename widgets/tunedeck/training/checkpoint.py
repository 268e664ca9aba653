"""Checkpoints and the final model, as Hugging Face folders.

    RUN_DIR/checkpoints/ep{E}-ba{B}/          save_pretrained model + tokenizer + checkpoint.json
    RUN_DIR/checkpoints/latest-sharded-rank0.symlink   a text file holding the latest folder's name
    RUN_DIR/model/                             the final model (loads with from_pretrained)

A checkpoint is written to a temporary folder and renamed into place, and the "symlink" file is
replaced atomically, so a crash or a kill mid-save never leaves a half checkpoint that looks whole.
Checkpoints hold weights only (no optimizer state): they are meant for ``custom_weights_path``,
which starts a new run from the weights, and optimizer state would triple their size. Under LoRA a
checkpoint is PEFT's adapter folder (a few MB; see adapters.py), and the final model is the base with
the adapter merged in, plus the adapter itself in ``model/adapter/``:

    RUN_DIR/model/              merged weights: loads with plain from_pretrained, no PEFT, no base needed
    RUN_DIR/model/adapter/      the LoRA adapter (adapter_config.json names its base model folder)
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


def save_checkpoint(
    model: Any, tokenizer: Any, run_dir: Path, epoch: int, batch: int, step: int, extra: dict[str, Any] | None = None
) -> SavedCheckpoint:
    root = Path(run_dir) / "checkpoints"
    name = checkpoint_name(epoch, batch)
    final = root / name
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    created = datetime.now(timezone.utc).isoformat()
    save_hf(model, tokenizer, tmp)
    info = SavedCheckpoint(name, final, epoch, batch, step, created)
    info_json = {"epoch": epoch, "batch": batch, "step": step, "created_at": created, **(extra or {})}
    (tmp / INFO).write_text(json.dumps(info_json, indent=2))
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


def export_merged(model: Any, tokenizer: Any, adapter_checkpoint: Path, run_dir: Path) -> Path:
    """The final model of a LoRA run: ``model`` (the adapter already merged in) plus the adapter folder.

    Merged weights make the registered version self-contained: it loads with plain transformers, needs
    no PEFT and keeps working if the base model's folder moves; the adapter beside it is the small
    download for those who want to apply it to the base themselves.
    """
    target = Path(run_dir) / "model"
    tmp = Path(run_dir) / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_hf(model, tokenizer, tmp)
    shutil.copytree(adapter_checkpoint, tmp / "adapter", copy_function=_link_or_copy, ignore=shutil.ignore_patterns(INFO))
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
