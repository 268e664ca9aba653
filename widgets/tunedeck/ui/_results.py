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


def duration(seconds: float) -> str:
    """1234 -> '20m 34s'; 45 -> '45s'; 7384 -> '2h 3m' (as the worker's events write durations)."""
    s = max(0, round(float(seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m}m" if h else f"{m}m {s}s" if m else f"{s}s"


def estimate_vs_actual(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """'estimated 1m 10s, took 1m 2s (-11%)' from GET /api/runs/{name}/estimate's answer (None without
    a recorded estimate or before the run completed)."""
    estimate, actual = (record or {}).get("estimate"), (record or {}).get("actual")
    if not estimate or not actual or not estimate.get("seconds") or actual.get("seconds") is None:
        return None
    estimated, took = float(estimate["seconds"]), float(actual["seconds"])
    off = round(100 * (took - estimated) / estimated)
    sign = "+" if off > 0 else "\u00b1" if off == 0 else "\u2212"  # a minus sign, as the line is read, not a hyphen
    line = f"estimated {duration(estimated)}, took {duration(took)} ({sign}{abs(off)}%)"
    rate = estimate.get("tokens_per_second")
    if rate and actual.get("tokens_per_second"):
        line += f"; throughput estimated {_rate(rate)}, measured {_rate(actual['tokens_per_second'])}"
    return {"estimated_seconds": estimated, "actual_seconds": took, "off_percent": off, "line": line}


def _rate(tps: float) -> str:
    return f"{tps:,.0f} tok/s" if tps >= 100 else f"{tps:.2g} tok/s"


def results_card(summary: dict[str, Any], checkpoints: list[Any], generations: list[dict[str, Any]],
                 estimate: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the results card shows for a COMPLETED run ({} for any other): the registered version and
    its load line, the MLflow run and model version, the checkpoints, the eval generations side by side,
    the models Try it can ask (the registered version first, then the checkpoints newest first), and
    the estimate made before Start against what the run took (``estimate``: the service's record)."""
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
        "estimate": estimate_vs_actual(estimate),
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
