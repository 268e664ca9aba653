"""Where tunedeck keeps its state, read from the environment each time it is asked.

TUNEDECK_HOME     state dir (default ~/.tunedeck): service.json, token, store, runs, MLflow store
TUNEDECK_URL      a service to use instead of the embedded one (with TUNEDECK_TOKEN)
TUNEDECK_VOLUMES  local root that dbfs:/Volumes/... and /Volumes/... map onto (default $HOME/volumes)
TUNEDECK_MODELS   a folder of Hugging Face model folders offered by get_models() (default $HOME/models)
TUNEDECK_TABLES   local catalog root that <catalog>.<schema>.<table> data names map onto: a Delta table
                  at <root>/<catalog>/<schema>/<table> (default $HOME/tables)
MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI   override the default SQLite store under TUNEDECK_HOME
TUNEDECK_BATCH_TOKENS  tokens per optimizer step (default: the trainer's, 4096 on CPU)
TUNEDECK_AUTORESUME    times a run whose worker died is resumed from its latest checkpoint (default 2)
TUNEDECK_RESUME_EVERY_SECONDS  a resume snapshot of the training state this often (default 600)
TUNEDECK_ORPHAN_GRACE_SECONDS  a worker whose service is gone this long stops itself (default 120)
TUNEDECK_CANCEL_GRACE_SECONDS  cancel's SIGKILL fallback after this long (default 30)
TUNEDECK_IDLE_EXIT_SECONDS     an auto-started service with nothing to do exits after this long (default 3600)
TUNEDECK_DATA_CHECK_TIMEOUT    the form's data check is stopped after this long (default 120 s)
TUNEDECK_PRECISION     auto (default: bf16 autocast on a GPU with native bf16, and on a CPU when a start-up
                       probe measures bf16 matmuls >= 1.3x float32), fp32, or bf16
TUNEDECK_RAY_ADDRESS   a Ray cluster (ray.init's address, e.g. 10.0.0.5:6379): each run is a Ray Train job
                       on it instead of a local worker (`tunedeck serve --ray ADDRESS`)
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


def tables_root() -> Path:
    """The local catalog root: ``<catalog>.<schema>.<table>`` is the Delta table ``<root>/<catalog>/<schema>/<table>``."""
    return Path(os.environ.get("TUNEDECK_TABLES") or home() / "tables").expanduser()


def cluster_ids() -> tuple[str, ...]:
    """Cluster ids the service answers as its own data preparation besides ``tunedeck-local``
    (TUNEDECK_CLUSTER_IDS, comma-separated): the ids hosted code names, so it runs unchanged."""
    return tuple(part.strip() for part in os.environ.get("TUNEDECK_CLUSTER_IDS", "").split(",") if part.strip())


def runs_root() -> Path:
    return home() / "runs"


def mlflow_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home() / 'mlflow.db'}"


def mlflow_artifact_root() -> Path:
    return home() / "mlartifacts"


PRECISIONS = ("auto", "fp32", "bf16")


def precision() -> str:
    """How the trainer computes (TUNEDECK_PRECISION): auto, fp32 or bf16 (autocast, float32 weights).

    bf16 on a CPU is ~2x faster where it has AVX512-BF16/AMX units and far slower where it has not, so
    "auto" measures it at start (training/precision.py) instead of trusting a CPU flag.
    """
    value = (os.environ.get("TUNEDECK_PRECISION") or "auto").strip().lower()
    if value not in PRECISIONS:
        raise ValueError(f"TUNEDECK_PRECISION={value!r} is not one of {', '.join(PRECISIONS)}")
    return value


def batch_tokens() -> int | None:
    """Tokens per optimizer step (TUNEDECK_BATCH_TOKENS); None lets the trainer choose."""
    value = os.environ.get("TUNEDECK_BATCH_TOKENS")
    return int(value) if value else None


def num_devices() -> int:
    """Processes (one device each) a run trains on when create() does not say (TUNEDECK_NUM_DEVICES, default 1)."""
    value = (os.environ.get("TUNEDECK_NUM_DEVICES") or "1").strip()
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"TUNEDECK_NUM_DEVICES={value!r} is not a whole number of at least 1")
    return int(value)


SHARDINGS = ("auto", "ddp", "fsdp")


def sharding() -> str:
    """How a run of several processes holds the model (TUNEDECK_SHARDING): ``auto`` (default) a replica
    per process (DDP) while replicas fit, else FSDP shards; ``ddp`` or ``fsdp`` always that
    (training/sharding.py). Read by the worker and by create()'s memory check."""
    value = (os.environ.get("TUNEDECK_SHARDING") or "auto").strip().lower()
    if value not in SHARDINGS:
        raise ValueError(f"TUNEDECK_SHARDING={value!r}: expected one of {', '.join(SHARDINGS)}")
    return value


def autoresume() -> int:
    """How many times a run whose worker died (killed, crashed, lost its service) is resumed from its
    latest checkpoint before it fails (TUNEDECK_AUTORESUME, default 2; 0 turns it off)."""
    value = os.environ.get("TUNEDECK_AUTORESUME")
    return max(0, int(value)) if value else 2


def ray_address() -> str | None:
    """The Ray cluster runs train on (TUNEDECK_RAY_ADDRESS, set by ``tunedeck serve --ray``); None: local workers."""
    return (os.environ.get("TUNEDECK_RAY_ADDRESS") or "").strip() or None


def data_check_timeout() -> float:
    """Seconds the form's data check may take before it is stopped (TUNEDECK_DATA_CHECK_TIMEOUT, default
    120): the first check also starts the helper that loads transformers (~5 s on a 2-core CPU)."""
    value = os.environ.get("TUNEDECK_DATA_CHECK_TIMEOUT")
    return max(1.0, float(value)) if value else 120.0
