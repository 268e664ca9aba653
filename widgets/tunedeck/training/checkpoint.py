"""Checkpoints, resume points and the final model, as Hugging Face folders.

    RUN_DIR/checkpoints/ep{E}-ba{B}/          save_pretrained model + tokenizer + checkpoint.json (+ trainer_state.pt)
    RUN_DIR/checkpoints/latest-sharded-rank0.symlink   a text file holding the latest folder's name
    RUN_DIR/resume/                            a resume snapshot between checkpoints: weights + trainer_state.pt + resume.json
    RUN_DIR/model/                             the final model (loads with from_pretrained)

A checkpoint or snapshot is written to a temporary folder and renamed into place, and the "symlink"
file is replaced atomically, so a crash or a kill mid-save never leaves a half checkpoint that looks whole.

A checkpoint's weights are what ``custom_weights_path`` starts a *new* run from. ``trainer_state.pt``
(optimizer and LR-schedule state, step, RNG states, losses so far, and a fingerprint of the plan and
the data) is what ``resume_from`` needs to continue *the same* run exactly where it was. It is up to
twice the weights in size (AdamW's two moments), so only the newest resume point keeps one: writing a
checkpoint or snapshot drops the older ones' (their weights stay). ``step`` is also in checkpoint.json /
resume.json, so finding the latest resume point needs no torch. The data position needs no saving:
each epoch's packing is seeded (data.Split.rows), so step N always trains on the same rows.

A sharded (FSDP) run's checkpoints hold the same consolidated Hugging Face weights (gathered on rank
0), its trainer_state.pt everything but the optimizer, whose state every rank writes in shards with
torch.distributed.checkpoint into ``optimizer.dcp/`` (sharding.py): it resumes at any number of processes.

Under LoRA a checkpoint (and a snapshot) is PEFT's adapter folder (a few MB; see adapters.py), its
optimizer state that of the adapter only, and the final model is the base with the adapter merged in,
plus the adapter itself in ``model/adapter/``:

    RUN_DIR/model/              merged weights: loads with plain from_pretrained, no PEFT, no base needed
    RUN_DIR/model/adapter/      the LoRA adapter (adapter_config.json names its base model folder)
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tunedeck.training.failures import TrainingFailure

log = logging.getLogger(__name__)

LATEST = "latest-sharded-rank0.symlink"
INFO = "checkpoint.json"
TRAINER_STATE = "trainer_state.pt"
RESUME = "resume"  # RUN_DIR/resume: the snapshot between checkpoints
RESUME_INFO = "resume.json"
_RESUME_TMP = ".resume.tmp"
_RESUME_OLD = ".resume.old"  # the previous snapshot, for the instant between two renames
OPTIMIZER_DCP = "optimizer.dcp"  # a sharded run's optimizer state, written by every rank (sharding.py)
NOT_EXPORTED = (INFO, TRAINER_STATE, OPTIMIZER_DCP)


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


def checkpoint_tmp(run_dir: Path, epoch: int, batch: int) -> Path:
    """The temporary folder save_checkpoint writes ``ep{epoch}-ba{batch}`` in before renaming it into place."""
    return Path(run_dir) / "checkpoints" / f".{checkpoint_name(epoch, batch)}.tmp"


def resume_tmp(run_dir: Path) -> Path:
    """The temporary folder save_resume_snapshot writes in."""
    return Path(run_dir) / _RESUME_TMP


def prepare_tmp(tmp: Path) -> Path:
    """An empty ``tmp``, for a sharded run's ranks to write their shards in before rank 0 saves the rest."""
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def save_checkpoint(
    model: Any, tokenizer: Any, run_dir: Path, epoch: int, batch: int, step: int,
    extra: dict[str, Any] | None = None, state: dict[str, Any] | None = None,
    weights: dict[str, Any] | None = None, prepared: bool = False,
) -> SavedCheckpoint:
    """``state`` (see recipe.trainer_state) makes the checkpoint a resume point too. ``weights``: the
    model's full state dict when ``model`` itself holds shards (FSDP); ``prepared``: the temporary
    folder (checkpoint_tmp) already holds the ranks' shards, keep them."""
    root = Path(run_dir) / "checkpoints"
    name = checkpoint_name(epoch, batch)
    final = root / name
    tmp = checkpoint_tmp(run_dir, epoch, batch)
    if not prepared:
        shutil.rmtree(tmp, ignore_errors=True)
    created = datetime.now(timezone.utc).isoformat()
    if weights is None:
        save_hf(model, tokenizer, tmp)
    else:  # a sharded run's weights, gathered whole on this rank
        save_hf(model, tokenizer, tmp, weights)
    info = SavedCheckpoint(name, final, epoch, batch, step, created)
    info_json = {"epoch": epoch, "batch": batch, "step": step, "created_at": created, **(extra or {})}
    if state is not None:
        _save_state(state, tmp)
        info_json.update(_state_summary(state))
    (tmp / INFO).write_text(json.dumps(info_json, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _write_atomic(root / LATEST, name)
    if state is not None:
        _drop_states_but(run_dir, final)
    return info


def save_resume_snapshot(
    model: Any, run_dir: Path, state: dict[str, Any], extra: dict[str, Any] | None = None,
    weights: dict[str, Any] | None = None, prepared: bool = False,
) -> Path:
    """Weights (or the adapter) + trainer state in RUN_DIR/resume, replacing the previous snapshot.

    A directory cannot be renamed over a non-empty one, so the old snapshot is first renamed aside:
    at every instant one whole snapshot exists under one of the two names (latest_resume_point reads both).
    """
    run_dir = Path(run_dir)
    tmp, final, old = run_dir / _RESUME_TMP, run_dir / RESUME, run_dir / _RESUME_OLD
    if not prepared:
        shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, state_dict=weights)
    _save_state(state, tmp)
    info = {"created_at": datetime.now(timezone.utc).isoformat(), **_state_summary(state), **(extra or {})}
    (tmp / RESUME_INFO).write_text(json.dumps(info, indent=2))
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    _drop_states_but(run_dir, final)
    return final


def resume_info(folder: str | Path) -> dict[str, Any] | None:
    """checkpoint.json / resume.json of a resume point (step, epoch, fingerprint...); None when it is none."""
    folder = Path(folder)
    if not (folder / TRAINER_STATE).is_file():
        return None
    for name in (RESUME_INFO, INFO):
        try:
            info = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and isinstance(info.get("step"), int):
            return info
    return None


def latest_resume_point(run_dir: str | Path) -> Path | None:
    """The resume point (a checkpoint or RUN_DIR/resume) with the highest step, None if there is none."""
    best: tuple[int, int, Path] | None = None
    for rank, folder in enumerate(_resume_candidates(Path(run_dir))):
        info = resume_info(folder)
        if info is not None and (best is None or (info["step"], -rank) > best[:2]):
            best = (info["step"], -rank, folder)
    return best[2] if best else None


def load_trainer_state(folder: str | Path) -> dict[str, Any]:
    import torch

    path = Path(folder) / TRAINER_STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # missing, truncated or foreign file
        raise TrainingFailure(f"resume_from: cannot read {path} ({type(error).__name__}: {error})") from error


def check_same_run(saved: dict[str, Any], now: dict[str, Any], folder: str | Path) -> None:
    """Refuse to resume when the data or settings differ from the saved run's: steps would not line up."""
    different = [
        f"{key} {saved.get(key)!r} then, {value!r} now"
        for key, value in now.items() if saved.get(key) != value
    ]
    if different:
        raise TrainingFailure(
            f"resume_from: {folder} was saved by a run with other data or settings ({'; '.join(different)}); "
            "an exact resume needs the same ones (custom_weights_path starts a new run from its weights)"
        )


def saved_checkpoints(run_dir: str | Path, up_to_step: int) -> list[SavedCheckpoint]:
    """The checkpoints already written by this run up to ``up_to_step``, by step (a resumed run keeps them)."""
    found = []
    for meta in (Path(run_dir) / "checkpoints").glob("ep*-ba*/" + INFO):
        try:
            info = json.loads(meta.read_text())
            step = int(info["step"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if step <= up_to_step:
            found.append(SavedCheckpoint(meta.parent.name, meta.parent, int(info.get("epoch", 0)),
                                         int(info.get("batch", step)), step, str(info.get("created_at", ""))))
    return sorted(found, key=lambda c: c.step)


def forget_resume_points_after(run_dir: str | Path, step: int) -> None:
    """Resuming from an older point abandons later ones: drop their trainer state so none is resumed from."""
    for folder in _resume_candidates(Path(run_dir)):
        info = resume_info(folder)
        if info is not None and info["step"] > step:
            _drop_state(folder)


def capture_rng(device_type: str) -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device_type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def export_model(checkpoint: Path, run_dir: Path) -> Path:
    """The final model folder: the last checkpoint's files, hard-linked (no second copy on disk)."""
    target = Path(run_dir) / "model"
    tmp = Path(run_dir) / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(checkpoint, tmp, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(*NOT_EXPORTED))
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
    shutil.copytree(adapter_checkpoint, tmp / "adapter", copy_function=_link_or_copy,
                    ignore=shutil.ignore_patterns(*NOT_EXPORTED))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def save_hf(model: Any, tokenizer: Any, folder: Path, weights: dict[str, Any] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, state_dict=weights)
    tokenizer.save_pretrained(folder)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or the ``latest-sharded-rank0.symlink`` file naming one beside it."""
    path = Path(path)
    if path.is_file() and path.name.endswith(".symlink"):
        return path.parent / path.read_text().strip()
    return path


def _save_state(state: dict[str, Any], folder: Path) -> None:
    import torch

    torch.save(state, folder / TRAINER_STATE)


def _state_summary(state: dict[str, Any]) -> dict[str, Any]:
    """What checkpoint.json / resume.json repeat of the trainer state, to be read without torch."""
    return {"step": int(state["step"]), "fingerprint": state.get("fingerprint"),
            "mlflow_run_id": state.get("mlflow_run_id")}


def _resume_candidates(run_dir: Path) -> list[Path]:
    """Checkpoints first: at the same step, a checkpoint's name says more than "resume"."""
    root = run_dir / "checkpoints"
    folders = sorted(p for p in root.glob("ep*-ba*") if p.is_dir()) if root.is_dir() else []
    return [*folders, run_dir / RESUME, run_dir / _RESUME_OLD]


def _drop_states_but(run_dir: Path, keep: Path) -> None:
    for folder in _resume_candidates(Path(run_dir)):
        if folder != keep and (folder / TRAINER_STATE).is_file():
            if folder.name in (RESUME, _RESUME_OLD):
                shutil.rmtree(folder, ignore_errors=True)  # a snapshot is nothing but a resume point
            else:
                _drop_state(folder)
    log.debug("resume state kept in %s only", keep)


def _drop_state(folder: Path) -> None:
    """A checkpoint no longer a resume point: its trainer state (and a sharded run's optimizer shards) go."""
    (folder / TRAINER_STATE).unlink(missing_ok=True)
    shutil.rmtree(folder / OPTIMIZER_DCP, ignore_errors=True)


def _tuples(value: Any) -> Any:
    """random.setstate wants the nested tuples random.getstate gave (a list would be refused)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
