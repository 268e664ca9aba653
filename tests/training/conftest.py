"""Shared fixtures for the trainer's tests: a tiny model built once, data writers and run specs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tunedeck.inputs.spec import DataSource, RunSpec

PAIRS = [
    ("What is the capital of France?", "Paris."),
    ("Say hello.", "Hello there!"),
    ("2+2=", "4"),
    ("Color of the sky?", "Blue, mostly."),
    ("Opposite of hot?", "Cold."),
    ("Name a fruit.", "An apple."),
]

CHATS = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}, {"role": "assistant", "content": r}]}
    for p, r in PAIRS
]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def jsonl_source(path: Path) -> DataSource:
    return DataSource("jsonl", [str(path)], str(path))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """One tiny Llama + ChatML tokenizer for the whole session (built from scratch, never downloaded)."""
    from tunedeck.training.tiny import build_tiny_model

    texts = [f"{p} {r}" for p, r in PAIRS]
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def make_spec(tmp: Path, model: Path, train: DataSource, **overrides: Any) -> RunSpec:
    """A complete RunSpec with its run dir and a private SQLite MLflow store under ``tmp``."""
    run_dir = tmp / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    fields: dict[str, Any] = dict(
        name="test-run",
        task_type="INSTRUCTION_FINETUNE",
        model_name="tiny",
        model_path=str(model),
        train_data=train,
        register_to="main.tests.tiny",
        experiment_path="/Users/tester/test-run",
        run_dir=str(run_dir),
        mlflow_tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
        mlflow_artifact_root=str(tmp / "mlartifacts"),
    )
    fields.update(overrides)
    spec = RunSpec(**fields)
    spec.save(run_dir / "spec.json")
    return spec


def run_in_process(spec: RunSpec):
    """Run the recipe in this process; returns (result, reports)."""
    from tunedeck.training.recipe import run
    from tunedeck.training.report import Reporter

    reports: list[dict[str, Any]] = []
    result = run(spec, Reporter(sink=reports.append))
    return result, reports


def events(reports: list[dict[str, Any]], type: str | None = None) -> list[dict[str, Any]]:
    return [r for r in reports if r["kind"] == "event" and (type is None or r["type"] == type)]


class Worker:
    """``python -m tunedeck.training.worker RUN_DIR`` as the service launches it: reports in a journal file."""

    def __init__(self, run_dir: Path):
        import os
        import subprocess
        import sys
        import threading

        self.journal = Path(run_dir) / "journal.jsonl"
        env = dict(os.environ, TUNEDECK_JOURNAL=str(self.journal))
        self.log = Path(run_dir) / "worker.log"
        self._log_file = open(self.log, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tunedeck.training.worker", str(run_dir)],
            env=env, stdout=subprocess.DEVNULL, stderr=self._log_file,
        )
        self.reports: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        import time

        offset, done = 0, False
        while not done:
            done = self.process.poll() is not None  # read once more after the exit: the last lines
            data = self.journal.read_bytes()[offset:] if self.journal.exists() else b""
            complete = data[: data.rfind(b"\n") + 1]
            offset += len(complete)
            with self._changed:
                self.reports.extend(json.loads(line) for line in complete.splitlines())
                self._changed.notify_all()
            time.sleep(0.05)

    def wait_for(self, predicate, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: any(predicate(r) for r in self.reports) or self.process.poll() is not None, timeout)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(10)
        self._log_file.close()
        return code

    def log_text(self) -> str:
        return self.log.read_text()
