"""The architecture, checked (docs/architecture.md): the layer contracts in pyproject.toml's
[tool.importlinter] hold, and the light entry points load no torch / transformers at run time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "tokenizers", "peft", "mlflow", "safetensors", "gguf")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "widgets"), os.environ.get("PYTHONPATH", "")])}


def test_layer_contracts_hold():
    """lint-imports on pyproject.toml's contracts (notebook side / service / inputs / training / shared)."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, f"a layer contract is broken (see docs/architecture.md):\n{report[-6000:]}"


@pytest.mark.parametrize("module", ["tunedeck", "tunedeck.service.core", "tunedeck.service.app", "tunedeck.inputs.validate"])
def test_light_modules_load_no_torch_or_transformers(module):
    """`import tunedeck` (the notebook) and the service's modules stay light: the trainer's stack is
    only ever imported by the worker and the data check's helper process."""
    probe = f"import sys, json, {module}; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [], f"import {module} loaded the trainer's stack"


def test_import_tunedeck_loads_neither_the_service_nor_the_trainer():
    probe = ("import sys, tunedeck; print(sorted({m.split('.')[1] for m in sys.modules "
             "if m.startswith(('tunedeck.service', 'tunedeck.training'))}))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
