"""Real runs of a tiny model in a browser test's service (the lab fixture's TUNEDECK_HOME), made from the
test process so the notebook under test has rows and histories to show."""

from __future__ import annotations

import nbformat

from tests.helpers import PAIRS, wait_for, write_jsonl

KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}}


def use_lab_service(lab, monkeypatch) -> None:
    """Point this process's tunedeck client at the lab's service."""
    import tunedeck.client.http as http

    monkeypatch.setenv("TUNEDECK_HOME", str(lab.home))
    http._client = None


def start_run(lab, duration: str = "2ba", register_to: str = "main.saved") -> str:
    """Create one run of a tiny model built here (once per lab); returns its name."""
    from tunedeck import config, foundation_model as fm
    from tunedeck.training.tiny import build_tiny_model

    model_dir = config.models_root() / "tiny-saved"
    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir, [f"{q} {a}" for q, a in PAIRS])
    data = write_jsonl(lab.home / "saved-notebooks" / "train.jsonl", [{"prompt": q, "response": a} for q, a in PAIRS])
    return fm.create(model="tiny-saved", train_data_path=str(data), register_to=register_to,
                     task_type="INSTRUCTION_FINETUNE", training_duration=duration).name


def wait_status(name: str, statuses: set[str], timeout: float = 300) -> str:
    from tunedeck import foundation_model as fm

    return wait_for(lambda: fm.get(name).status.value in statuses and fm.get(name).status.value, timeout=timeout, interval=0.5)


def notebook(lab, file: str, *sources: str) -> str:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources], metadata=KERNEL)
    nbformat.write(nb, lab.root / file)
    return file


def shut_down_kernels(lab) -> None:
    """End every session and kernel of the lab, as closing the notebook and shutting its kernel does."""
    for session in lab.api("GET", "/api/sessions").json():
        lab.api("DELETE", f"/api/sessions/{session['id']}")
    for kernel in lab.api("GET", "/api/kernels").json():
        lab.api("DELETE", f"/api/kernels/{kernel['id']}")
    wait_for(lambda: lab.api("GET", "/api/kernels").json() == [], timeout=30)
