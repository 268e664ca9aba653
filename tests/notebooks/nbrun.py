"""Run a notebook headless with nbclient and read what it printed or displayed."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
ARTIFACTS = REPO / "test-artifacts"


def execute(nb: nbformat.NotebookNode, workdir: Path, save_as: str | None = None, timeout: int = 600) -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel (raises CellExecutionError on the first error)."""
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    if save_as:
        ARTIFACTS.mkdir(exist_ok=True)
        nbformat.write(nb, ARTIFACTS / save_as)
    return nb


def outputs(nb: nbformat.NotebookNode, cell: int) -> list[dict]:
    return nb.cells[cell].get("outputs", [])


def text_of(output: dict) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "") if output.get("name") == "stdout" else ""  # not progress bars
    data = output.get("data", {})
    return data.get("text/plain", "") + data.get("text/html", "")
