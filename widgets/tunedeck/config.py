"""Where tunedeck keeps its state, read from the environment each time it is asked.

TUNEDECK_HOME     state dir (default ~/.tunedeck): service.json, token, store, runs, MLflow store
TUNEDECK_URL      a service to use instead of the embedded one (with TUNEDECK_TOKEN)
TUNEDECK_VOLUMES  local root that dbfs:/Volumes/... and /Volumes/... map onto (default $HOME/volumes)
TUNEDECK_MODELS   a folder of Hugging Face model folders offered by get_models() (default $HOME/models)
MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI   override the default SQLite store under TUNEDECK_HOME
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("TUNEDECK_HOME") or Path.home() / ".tunedeck").expanduser()


def volumes_root() -> Path:
    return Path(os.environ.get("TUNEDECK_VOLUMES") or home() / "volumes").expanduser()


def models_root() -> Path:
    return Path(os.environ.get("TUNEDECK_MODELS") or home() / "models").expanduser()


def runs_root() -> Path:
    return home() / "runs"


def mlflow_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home() / 'mlflow.db'}"


def mlflow_artifact_root() -> Path:
    return home() / "mlartifacts"


def batch_tokens() -> int | None:
    """Tokens per optimizer step (TUNEDECK_BATCH_TOKENS); None lets the trainer choose."""
    value = os.environ.get("TUNEDECK_BATCH_TOKENS")
    return int(value) if value else None
