"""The views' pure JavaScript logic, through node's built-in test runner (skipped without node)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tunedeck.ui import _static

HERE = Path(__file__).parent


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_view_logic():
    proc = subprocess.run(["node", "--test", str(HERE / "js")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_each_view_is_one_module_with_its_imports_inlined():
    for name in ("monitor.js", "runs.js", "code_block.js"):
        source = _static.esm(name)
        assert "export default" in source
        assert 'from "./' not in source, name
        assert source.count("function h(") == 1  # shared helpers included once


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_inlined_modules_parse(tmp_path):
    for name in ("monitor.js", "runs.js", "code_block.js"):
        path = tmp_path / name.replace(".js", ".mjs")
        path.write_text(_static.esm(name))
        proc = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr


def test_no_view_writes_html_from_data():
    """Text reaches the DOM through textContent only: no innerHTML / insertAdjacentHTML anywhere."""
    for path in _static.static_dir().glob("*.js"):
        source = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
            assert sink not in source, f"{path.name} uses {sink}"
