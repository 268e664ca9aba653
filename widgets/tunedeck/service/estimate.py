"""Before Start, an estimate of a run: tokens per epoch, steps, time on this machine, peak memory; after
it, the estimate against what the run took.

    POST /api/estimate            create()'s parameters -> the estimate (nothing is created)
    PUT  /api/runs/{name}/estimate   record the estimate a run was started with (RUN_DIR/estimate.json)
    GET  /api/runs/{name}/estimate   that estimate, what the run took, and their ratio

A GGUF model is converted to a Hugging Face folder first, once, by the data checker's conversion step
(``DataChecker.prepare_model``: its own process and timeout; ``pending`` with its stage while it runs).
Tokens, steps and the memory plan come from the data-check helper (training/probe.py through
``DataChecker.ask``), which prepares the data exactly as the worker will, so they are exact. Time is
``train_tokens / tokens_per_second`` plus the rest of a run (worker start, model load, checkpoints with
their eval and generations, export and registration). Throughput is kept per (model, hardware,
precision, adapter kind) in ``$TUNEDECK_HOME/estimates.json``: measured by the helper's probe the
first time (a few training steps of the real model: seconds), then replaced by every completed run's
own figure (its TRAIN_FINISHED ``tokens_per_second``), and that run's time outside training becomes the
next estimate's "rest", scaled by checkpoints. Completed runs are learned from lazily, on the next
estimate or estimate read, so the core needs no hook.

The probe is a step of its own too: it runs in the background with its own timeout
(``TUNEDECK_PROBE_TIMEOUT``, default 20 min, not the data check's 120 s: on this 2-core machine at load
average 18 it took 312 s for SmolLM2, ~10 s quiet). An estimate waits for it up to ``PROBE_WAIT``
seconds, then answers ``pending`` (how long it has measured so far) and the probe goes on; the next
estimate finds its figure in the cache. While it runs, the helper is busy: estimates wait for it first.

The probe measures whatever else the machine is doing: an estimate made while another run trains is
pessimistic. Runs that were resumed teach their throughput but not their time (it includes the
failure).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi import Path as PathParam

from tunedeck import config
from tunedeck.errors import InvalidInputError, Problem
from tunedeck.inputs.validate import RunRequest, build_spec
from tunedeck.service.core import RunService
from tunedeck.service.schemas import RunCreate
from tunedeck.types import RunStatus

CACHE_FILE = "estimates.json"
RUN_FILE = "estimate.json"
# The parts of a run the probe does not see, until a completed run has measured them on this machine
# (calibrated on this 2-core CPU with tiny models and SmolLM2-135M): the worker's start (importing torch,
# transformers and MLflow, opening the MLflow run) and the registration of the model in MLflow.
STARTUP_SECONDS = 12.0
REGISTER_SECONDS = 6.0
GENERATION_TOKENS = 100  # what evaluate.GENERATION may generate per eval prompt at each checkpoint
EVAL_SPEEDUP = 3.0  # a forward pass (eval loss) is ~3x faster than forward + backward
LEARN_FROM = 50  # the newest completed runs looked at for measured figures
PROBE_WAIT = 150.0  # an estimate waits this long for a throughput probe, then answers "pending" (the client waits 300 s)
DEFAULT_PROBE_TIMEOUT = 1200.0


def probe_timeout() -> float:
    """Seconds a throughput probe may take before it is stopped (TUNEDECK_PROBE_TIMEOUT, default 1200)."""
    value = os.environ.get("TUNEDECK_PROBE_TIMEOUT")
    return max(1.0, float(value)) if value else DEFAULT_PROBE_TIMEOUT


def adapter_mode(adapter: dict | None) -> str:
    """How the run trains, as the throughput cache tells runs apart (training/probe.py says the same)."""
    if not adapter:
        return "full"
    return "lora-4bit" if adapter.get("quantize_base") else "lora"


def hardware(device_label: str) -> str:
    """This machine as the throughput cache knows it: a GPU's name, or the CPU's model and the cores the
    service (and so its helper and workers) may use."""
    if device_label != "cpu":
        return device_label
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return f"cpu ({name or 'unknown'}, {cores} cores)"


def cache_key(model: str, device_label: str, dtype: str, adapter: str) -> str:
    return " | ".join((model, hardware(device_label), dtype, adapter))


def format_seconds(seconds: float) -> str:
    """1234 -> '20m 34s'; 45 -> '45s'; 7384 -> '2h 3m' (as the worker's events write durations)."""
    s = max(0, round(float(seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m}m" if h else f"{m}m {s}s" if m else f"{s}s"


def format_rate(tps: float) -> str:
    return f"{tps:,.0f} tok/s" if tps >= 100 else f"{tps:.2g} tok/s"


class EstimateCache:
    """``estimates.json``: measured throughput per key, and the runs already learned from. Written whole,
    through a temporary file and a rename, under a lock (one service per state dir)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        data.setdefault("entries", {})
        data.setdefault("learned", [])
        return data

    def update(self, change) -> dict[str, Any]:
        """Apply ``change(data)`` and write the result."""
        with self._lock:
            data = self.read()
            change(data)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
            os.replace(tmp, self.path)
            return data

    def entry(self, key: str) -> dict[str, Any] | None:
        return self.read()["entries"].get(key)


class _Probe:
    """One throughput probe, asked of the helper from a thread of its own; ``answer`` once ``done``."""

    def __init__(self, key: str, model: str, measure: Callable[[], dict[str, Any]]):
        self.key, self.model = key, model
        self.started = time.monotonic()
        self.answer: dict[str, Any] = {}
        self.done = threading.Event()
        threading.Thread(target=self._run, args=(measure,), name=f"probe-{model}", daemon=True).start()

    def _run(self, measure: Callable[[], dict[str, Any]]) -> None:
        try:
            self.answer = measure()
        except Exception as error:  # noqa: BLE001 - an estimate answers with why, never a 500
            message = f"the throughput probe failed: {type(error).__name__}: {str(error)[:300]}"
            self.answer = {"ok": False, "message": message,
                           "problems": [{"field": "model", "message": message, "file": None, "line": None}]}
        finally:
            self.done.set()


class Estimator:
    def __init__(self, service: RunService, cache: EstimateCache | None = None, probe_wait: float = PROBE_WAIT):
        self.service = service
        self.cache = cache or EstimateCache(config.home() / CACHE_FILE)
        self.probe_wait = probe_wait
        self._probe: _Probe | None = None
        self._probe_lock = threading.Lock()

    # -- before Start ------------------------------------------------------------------------------
    def estimate(self, req: RunRequest) -> dict[str, Any]:
        """Tokens, steps, time and peak memory of the run ``req`` would create, or ``ok: False`` with problems."""
        spec, problems = build_spec(req, "estimate", check_data=True, devices=self.service._devices())
        if problems or spec is None:
            return _refused(problems or [Problem("model", "cannot be estimated")])
        if spec.model_gguf_file and spec.model_cache_dir:  # converted once, up front, with its own timeout
            waiting = self.service.data_checker.prepare_model(
                spec.model_name, Path(spec.model_path) / spec.model_gguf_file, spec.model_cache_dir)
            if waiting is not None:
                return waiting
        earlier, waiting = self._wait_for_probe()  # an earlier estimate's probe still measuring: the helper is busy
        if waiting is not None:
            return waiting
        self.learn()
        entries = self.cache.read()["entries"]
        known = {k for k, v in entries.items() if v.get("tokens_per_second")}
        plan = self.service.data_checker.ask({"kind": "estimate", "spec": spec.to_dict(), "probe": False})
        if not plan.get("ok"):
            return plan
        key = cache_key(spec.model_name, plan["device"], plan["dtype"], plan["adapter"])
        probed = None
        if key not in known:
            with self._probe_lock:
                if self._probe is None:
                    request = {"kind": "estimate", "spec": spec.to_dict(), "probe": True}
                    self._probe = _Probe(key, spec.model_name, lambda: self._measure(key, request))
            probe, waiting = self._wait_for_probe()
            if waiting is not None:
                return waiting
            if probe is not None and probe.answer.get("probe"):
                probed = probe.answer["probe"]
        elif earlier is not None and earlier.key == key and earlier.answer.get("probe"):
            probed = earlier.answer["probe"]  # the probe an earlier (pending) estimate of this run started
        entry = self.cache.entry(key)
        if not entry or not entry.get("tokens_per_second"):
            return _refused([Problem("model", "no throughput measured for this model on this machine yet: estimate again")])
        return self._compose(plan, key, entry, probed)

    def _measure(self, key: str, request: dict[str, Any]) -> dict[str, Any]:
        """The probe (in its thread): a few real training steps in the helper, under the probe's own
        timeout; a measured figure goes into the cache whoever is still waiting for it."""
        answer = self.service.data_checker.ask(request, timeout=probe_timeout(), setting="TUNEDECK_PROBE_TIMEOUT")
        probed = answer.get("probe") if answer.get("ok") else None
        if probed:
            self.cache.update(lambda data: data["entries"].__setitem__(key, {
                "tokens_per_second": probed["tokens_per_second"],
                "generated_tokens_per_second": probed["generated_tokens_per_second"],
                "load_seconds": probed["load_seconds"], "probe_seconds": probed["probe_seconds"],
                "source": "probe", "updated_at": _now(),
            }))
        return answer

    def _wait_for_probe(self) -> tuple[_Probe | None, dict[str, Any] | None]:
        """Wait up to ``probe_wait`` for the probe in flight, if any: (the finished probe, None), or
        (None, the answer to give instead: ``pending`` while it goes on, or why it failed)."""
        with self._probe_lock:
            probe = self._probe
        if probe is None:
            return None, None
        probe.done.wait(self.probe_wait)
        if not probe.done.is_set():
            so_far = time.monotonic() - probe.started
            message = (f"measuring how fast this machine trains {probe.model}: a few real training steps, once per "
                       f"model and hardware ({so_far:.0f} s so far, load average {os.getloadavg()[0]:.1f}); "
                       "ask again in a minute")
            return None, {"ok": False, "pending": True, "stage": "throughput probe", "message": message,
                          "seconds_so_far": round(so_far, 1),
                          "problems": [{"field": "model", "message": message, "file": None, "line": None}]}
        with self._probe_lock:
            if self._probe is probe:
                self._probe = None  # taken: a failed probe is tried afresh by the next estimate
        if not probe.answer.get("ok"):
            return None, probe.answer
        return probe, None

    def _compose(self, plan: dict[str, Any], key: str, entry: dict[str, Any], probed: dict | None) -> dict[str, Any]:
        tps = float(entry["tokens_per_second"])
        train_seconds = plan["train_tokens"] / max(1e-9, tps)
        checkpoints = int(plan["checkpoints"])
        if entry.get("other_seconds") is not None:  # measured by a completed run, scaled by checkpoints
            other = float(entry["other_seconds"]) * (1 + checkpoints) / (1 + int(entry.get("other_checkpoints") or 0))
            other_source = f"the rest of run {entry.get('source', '').removeprefix('run ')}"
        else:
            load = float(entry.get("load_seconds") or 0.0)
            gen_tps = float(entry.get("generated_tokens_per_second") or 0.0) or tps / 10
            per_checkpoint = (load + plan["eval_tokens"] / (EVAL_SPEEDUP * tps)
                              + plan["eval_prompts"] * GENERATION_TOKENS / gen_tps)
            other = STARTUP_SECONDS + 2 * load + checkpoints * per_checkpoint + REGISTER_SECONDS
            other_source = "start, model load, checkpoints and registration, from the probe"
        seconds = train_seconds + other
        memory = plan.get("memory") or {}
        peak = memory.get("needed_bytes")
        where = "cached" if probed is None else f"probe took {probed['probe_seconds']:.1f} s"
        source = entry.get("source", "probe")
        measured = f"measured {format_rate(tps)}" + (f" by {source}" if source.startswith("run ") else f", {where}")
        message = (f"~{plan['tokens_per_epoch']:,} tokens/epoch, {plan['total_steps']:,} steps, "
                   f"~{format_seconds(seconds)} on this machine ({measured})")
        if peak:
            message += f", peak ~{peak / 2**30:.1f} GiB"
        return {
            "ok": True,
            "message": message,
            "key": key,
            "tokens_per_epoch": plan["tokens_per_epoch"],
            "total_steps": plan["total_steps"],
            "steps_per_epoch": plan["steps_per_epoch"],
            "epochs": plan["epochs"],
            "train_tokens": plan["train_tokens"],
            "checkpoints": checkpoints,
            "context_length": plan["context_length"],
            "micro_batch_tokens": plan["micro_batch_tokens"],
            "tokens_per_second": tps,
            "throughput_source": source,
            "probe_seconds": probed["probe_seconds"] if probed else None,
            "seconds": round(seconds, 1),
            "train_seconds": round(train_seconds, 3),  # (a tiny model's few steps take well under 0.1 s)
            "other_seconds": round(other, 3),
            "other_source": other_source,
            "peak_memory_bytes": peak,
            "memory": plan.get("memory_note"),
            "device": plan["device"],
            "dtype": plan["dtype"],
        }

    # -- after the run -----------------------------------------------------------------------------
    def record(self, name: str, estimate: dict[str, Any]) -> dict[str, Any]:
        """Keep the estimate a run was started with, for the estimate-vs-actual line."""
        run = self.service.get(name)  # RunNotFoundError -> 404
        if not isinstance(estimate.get("seconds"), (int, float)) or not math.isfinite(estimate["seconds"]):
            raise InvalidInputError([Problem("estimate", "needs the estimated seconds (POST /api/estimate's answer)")])
        folder = Path(run.run_dir or config.runs_root() / name)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RUN_FILE).write_text(json.dumps({**estimate, "recorded_at": _now()}, indent=2, default=str))
        return self.of_run(name)

    def of_run(self, name: str) -> dict[str, Any]:
        """The recorded estimate, what the run took (once it completed) and actual / estimated."""
        run = self.service.get(name)
        folder = Path(run.run_dir or config.runs_root() / name)
        try:
            recorded = json.loads((folder / RUN_FILE).read_text())
        except (OSError, ValueError):
            recorded = None
        actual = self._actual(name) if run.status is RunStatus.COMPLETED else None
        if actual is not None:
            self.learn()
        ratio = None
        if recorded and actual and recorded.get("seconds"):
            ratio = round(actual["seconds"] / float(recorded["seconds"]), 3)
        return {"estimate": recorded, "actual": actual, "ratio": ratio}

    def _actual(self, name: str) -> dict[str, Any] | None:
        """What a completed run measured: its time (started to completed), throughput, tokens and steps."""
        run = self.service.get(name)
        events = self.service.events(name)
        by_type: dict[str, dict[str, Any]] = {}
        for e in events:
            by_type[e.type] = e.data or {}
        finished, initialized = by_type.get("TRAIN_FINISHED"), by_type.get("MODEL_INITIALIZED")
        if run.duration_seconds is None or finished is None or initialized is None:
            return None
        data = by_type.get("DATA_VALIDATED", {})
        return {
            "seconds": round(run.duration_seconds, 1),
            "tokens_per_second": finished.get("tokens_per_second"),
            "total_steps": initialized.get("total_steps"),
            "steps_per_epoch": initialized.get("steps_per_epoch"),
            "tokens_per_epoch": data.get("tokens"),
            "checkpoints": sum(1 for e in events if e.type == "CHECKPOINT_SAVED"),
            "resumed": "TRAIN_RESUMED" in by_type,
            "key": cache_key(run.model, str(initialized.get("device") or "cpu"), str(initialized.get("dtype") or ""),
                             adapter_mode(initialized.get("adapter"))),
        }

    def learn(self) -> None:
        """Take every completed run's measured throughput (and the time it spent outside training) into the cache."""
        learned = set(self.cache.read()["learned"])
        for run in reversed(self.service.list(LEARN_FROM, [RunStatus.COMPLETED.value])):  # oldest first: newest wins
            if run.name in learned:
                continue
            actual = self._actual(run.name)
            if actual is None or not actual.get("tokens_per_second"):
                continue
            self.cache.update(lambda data, a=actual, name=run.name: _learn(data, a, name))

    # -- the routes --------------------------------------------------------------------------------
    def router(self) -> APIRouter:
        routes = APIRouter(prefix="/api", tags=["estimate"])

        @routes.post("/estimate")
        def estimate_run(body: RunCreate) -> dict[str, Any]:
            """Before Start: tokens per epoch, steps, time on this machine (measured throughput) and peak
            memory of the run these create() parameters would make; nothing is created."""
            return self.estimate(RunRequest(**body.model_dump()))

        @routes.put("/runs/{name}/estimate")
        def record_estimate(name: Annotated[str, PathParam(max_length=256)],
                            estimate: Annotated[dict[str, Any], Body(embed=True)]) -> dict[str, Any]:
            """Record the estimate a run was started with (POST /api/estimate's answer)."""
            return self.record(name, estimate)

        @routes.get("/runs/{name}/estimate")
        def get_estimate(name: Annotated[str, PathParam(max_length=256)]) -> dict[str, Any]:
            """A run's recorded estimate, what it took once completed, and actual / estimated time."""
            return self.of_run(name)

        return routes


def _learn(data: dict[str, Any], actual: dict[str, Any], name: str) -> None:
    entry = data["entries"].setdefault(actual["key"], {})
    tps = float(actual["tokens_per_second"])
    entry.update(tokens_per_second=tps, source=f"run {name}", updated_at=_now())
    if not actual["resumed"] and actual.get("total_steps") and actual.get("steps_per_epoch") and actual.get("tokens_per_epoch"):
        train_tokens = actual["tokens_per_epoch"] * actual["total_steps"] / actual["steps_per_epoch"]
        entry.update(other_seconds=round(max(0.0, actual["seconds"] - train_tokens / tps), 2),
                     other_checkpoints=actual["checkpoints"])
    data["learned"] = [*data["learned"], name][-10 * LEARN_FROM:]


def _refused(problems: list[Problem]) -> dict[str, Any]:
    return {"ok": False, "message": str(problems[0]), "problems": [p.to_dict() for p in problems]}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def estimate_router(service: RunService) -> APIRouter:
    """The estimate's routes over ``service`` (service/app.py includes them)."""
    return Estimator(service).router()
