"""The resolved description of one run that the service hands to its training worker (run_dir/spec.json)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DataSource:
    """Training or eval data resolved to local files.

    kind: "jsonl" (INSTRUCTION_FINETUNE / CHAT_COMPLETION rows), "parquet" (same rows, from a Hugging
    Face dataset cache), "txt" (CONTINUED_PRETRAIN documents) or "delta" (a Unity Catalog table name:
    ``files`` is the Delta table's folder, read through deltalake, inputs/tables.py). ``origin`` is what
    the user wrote.
    """

    kind: str
    files: list[str]
    origin: str
    version: int | None = None  # "delta": the table version resolved when the run was launched, read by the worker


@dataclass
class RunSpec:
    name: str
    task_type: str
    model_name: str
    model_path: str  # a Hugging Face model folder (or the folder holding model_gguf_file)
    train_data: DataSource
    register_to: str  # full three-part registered model name
    experiment_path: str
    run_dir: str
    mlflow_tracking_uri: str
    mlflow_artifact_root: str
    model_gguf_file: str | None = None
    model_cache_dir: str | None = None  # where a GGUF model is converted to HF format once
    eval_data: DataSource | None = None
    eval_prompts: list[str] = field(default_factory=list)
    custom_weights_path: str | None = None  # a checkpoint folder, resolved
    training_duration: str = "1ep"
    learning_rate: float | None = None
    context_length: int | None = None
    max_context_length: int | None = None
    created_by: str | None = None
    validate_inputs: bool = True
    data_prep_cluster_id: str | None = None  # recorded (MLflow params) as the reference's create() takes it
    batch_tokens: int | None = None  # tokens per optimizer step; None = the trainer's default
    precision: str = "auto"  # auto | fp32 | bf16 (config.precision)
    adapter: dict[str, Any] | None = None  # params.parse_adapter(...): LoRA settings; None = full fine-tuning
    # Exact resume of this same run: a folder with trainer_state.pt (a checkpoint of it, or RUN_DIR/resume).
    # Unlike custom_weights_path (weights only, a new run) it restores optimizer, schedule, RNG and step.
    resume_from: str | None = None
    resume_every_seconds: float | None = 600.0  # a resume snapshot between checkpoints; None or 0 = none
    resume_mlflow_run_id: str | None = None  # go on logging into this MLflow run (one run's metrics in one place)
    num_devices: int = 1  # processes of the run (one device each): > 1 trains with DDP under torchrun

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        d = dict(d)
        for key in ("train_data", "eval_data"):
            if d.get(key) is not None:
                d[key] = DataSource(**d[key])
        return cls(**d)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> RunSpec:
        return cls.from_dict(json.loads(Path(path).read_text()))
