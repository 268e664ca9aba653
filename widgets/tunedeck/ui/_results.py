"""The results card of a completed run, as plain data: what the monitor's view (js/monitor.js) draws and
its HTML/text snapshots print, computed once in the kernel so both say the same.

No widget code here: ``results_card`` is a function of the run's summary, its checkpoints and its eval
generations, tested without Jupyter.
"""

from __future__ import annotations

import json
from typing import Any

REGISTERED = "registered"  # Try it's name for the registered version (service/generate.py says the same)


def load_line(name: str, version: Any) -> str:
    """The Python that loads a registered model version (tunedeck.registry.load_model)."""
    v = str(version) if str(version).isdigit() else json.dumps(str(version))
    return f"import tunedeck.registry\nmodel, tokenizer = tunedeck.registry.load_model({json.dumps(str(name))}, {v})"


def generations_table(generations: list[dict[str, Any]]) -> dict[str, Any]:
    """Eval generations side by side: one column per checkpoint (by step), one row per prompt (in the order
    the prompts first came), None where a checkpoint has no generation for a prompt. A checkpoint
    reported twice (a resumed run generates again) keeps its last generations."""
    by_checkpoint: dict[str, dict[str, Any]] = {}
    for group in generations:
        name = str(group.get("checkpoint") or f"step {group.get('step')}")
        by_checkpoint.pop(name, None)
        by_checkpoint[name] = group
    ordered = sorted(by_checkpoint.items(), key=lambda item: (item[1].get("step") is None, item[1].get("step") or 0))
    names = [name for name, _ in ordered]
    prompts: list[str] = []
    for _, group in ordered:
        for g in group.get("generations") or []:
            prompt = str(g.get("prompt", ""))
            if prompt not in prompts:
                prompts.append(prompt)
    rows = []
    for prompt in prompts:
        outputs = []
        for _, group in ordered:
            found = [g for g in group.get("generations") or [] if str(g.get("prompt", "")) == prompt]
            outputs.append(str(found[-1].get("generation", "")) if found else None)
        rows.append({"prompt": prompt, "outputs": outputs})
    return {"checkpoints": names, "rows": rows}


def results_card(summary: dict[str, Any], checkpoints: list[Any], generations: list[dict[str, Any]]) -> dict[str, Any]:
    """What the results card shows for a COMPLETED run ({} for any other): the registered version and
    its load line, the MLflow run and model version, the checkpoints, the eval generations side by side,
    and the models Try it can ask (the registered version first, then the checkpoints newest first)."""
    if summary.get("status") != "COMPLETED":
        return {}
    name, version = summary.get("registered_model_name"), summary.get("registered_model_version")
    registered = None
    if name and version is not None:
        registered = {"name": name, "version": version, "load_line": load_line(name, version)}
    points = [_checkpoint(c) for c in checkpoints]
    points.sort(key=lambda c: (c["batch"], c["name"]))
    targets = []
    if registered:
        targets.append({"value": REGISTERED, "label": f"registered version {version}"})
    for c in reversed(points):
        targets.append({"value": c["name"], "label": f"checkpoint {c['name']}" + (" (latest)" if c["is_latest"] else "")})
    mlflow = {
        "experiment_path": summary.get("experiment_path"),
        "experiment_id": summary.get("mlflow_experiment_id"),
        "run_id": summary.get("mlflow_run_id"),
        "model_version": f"{name} version {version}" if registered else None,
    }
    return {
        "registered": registered,
        "mlflow": mlflow,
        "checkpoints": points,
        "generations": generations_table(generations),
        "try_targets": targets,
    }


def _checkpoint(c: Any) -> dict[str, Any]:
    d = c if isinstance(c, dict) else c.to_dict()
    return {
        "name": str(d["name"]),
        "path": str(d.get("path") or ""),
        "epoch": d.get("epoch"),
        "batch": int(d.get("batch") or 0),
        "created_at": d.get("created_at") if isinstance(d.get("created_at"), str) or d.get("created_at") is None
        else d["created_at"].isoformat(),
        "is_latest": bool(d.get("is_latest")),
    }
