"""Every benchmark script still runs: each with ``--quick`` (tiny models and data, seconds to a minute).

Benchmarks are not timed assertions: the figures of a quick run mean little and are not checked, only
that the script finishes and writes its JSON figures. The real runs: ``make bench`` (benchmarks/README.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ISOLATED_ENV

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["client_service", "packing", "overhead", "vs_trl", "hardware", "memory", "scale", "estimate"]

pytestmark = pytest.mark.bench_smoke


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_runs_quick(name, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_ENV and k != "TUNEDECK_HOME"}
    env["TUNEDECK_BENCH_CACHE"] = str(tmp_path / "cache")
    figures = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick", "--json", str(figures)],
                          capture_output=True, text=True, timeout=600 if name == "scale" else 300, env=env, cwd=tmp_path)
    assert done.returncode == 0, f"{name}.py --quick failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert run_all().headlines(name, json.loads(figures.read_text()))  # run_all's summary can read them


def run_all():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run_all as module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def test_run_all_lists_every_script():
    # faults.py is not smoke-run here: even --quick trains ~9 runs through killed and restarted services
    # (minutes); tests/service/test_faults.py runs the same kills on the same ServiceProcess.
    assert [s for s, _ in run_all().SCRIPTS] == [*SCRIPTS, "faults"]
