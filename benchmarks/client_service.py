"""Client and service costs: import time, create() latency, event polling and listing at 1k-100k events.

What is compared, and how:
  * ``import tunedeck`` versus ``import ipywidgets`` (the widget library every notebook already loads),
    each in a fresh interpreter, alternating, median of N; the tunedeck child also reports whether torch
    (or transformers, mlflow, fastapi) got imported. Target: <= 1.2x, and no torch.
  * ``fm.create()`` latency against a warm embedded service: the real service process started by the
    first API call (``tunedeck.client.launcher``) in a fresh TUNEDECK_HOME, through the real HTTP client,
    with input validation on (it reads the 256-row data file). The service is started with
    TUNEDECK_MAX_CONCURRENT=0 so every run stays QUEUED: no training competes for the 2 cores.
  * ``get_events`` at 1k, 10k and 100k stored events (inserted into the service's database file with
    ``tunedeck.service.store.Store.add_event``, one transaction per event as the service writes them):
    an incremental poll (``ServiceClient.events(after=cursor)``, 10 new events, as a live monitor
    polls) and an empty poll (nothing new), p50/p99; and the full listing ``fm.get_events(run)``.
    Target: poll p99 <= 10 ms and flat in the number of stored events.

    python benchmarks/client_service.py [--quick]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PY, isolated_home, median, parse_args, percentile, print_table, save_json, skewed_rows, verdict, write_jsonl  # noqa: E402

IMPORT_PROBE = """
import sys, time
t = time.perf_counter()
import {module}
dt = time.perf_counter() - t
print(dt, ' '.join(m for m in ('torch', 'transformers', 'mlflow', 'fastapi', 'pandas') if m in sys.modules))
"""


def import_times(n: int) -> dict:
    def once(module: str) -> tuple[float, str]:
        out = subprocess.run([PY, "-c", IMPORT_PROBE.format(module=module)], capture_output=True, text=True, check=True,
                             cwd="/", env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}).stdout.split(maxsplit=1)
        return float(out[0]), out[1].strip() if len(out) > 1 else ""

    once("tunedeck"), once("ipywidgets")  # warm the file cache and the .pyc files
    ours, theirs, heavy = [], [], set()
    for _ in range(n):
        t, loaded = once("tunedeck")
        ours.append(t)
        heavy.update(loaded.split())
        theirs.append(once("ipywidgets")[0])
    return {"tunedeck_ms": 1000 * median(ours), "ipywidgets_ms": 1000 * median(theirs),
            "ratio": median(ours) / median(theirs), "heavy_modules": sorted(heavy)}


def stop_service(home: Path) -> None:
    """SIGTERM the service this benchmark started (its pid is in the state dir)."""
    try:
        pid = json.loads((home / "service.json").read_text())["pid"]
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, KeyError):
        return
    for _ in range(100):
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.1)


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    args = parse_args(__doc__)
    quick = args.quick
    figures: dict = {}

    imports = import_times(3 if quick else 15)
    figures["import"] = imports

    with isolated_home() as home:
        os.environ["TUNEDECK_MAX_CONCURRENT"] = "0"  # runs stay QUEUED: nothing trains during the measurements
        from tunedeck import foundation_model as fm
        from tunedeck.client.http import get_client
        from tunedeck.service.store import Store
        from tunedeck.training.tiny import build_tiny_model

        rows = skewed_rows(256)
        data = write_jsonl(home / "data" / "train.jsonl", rows)
        build_tiny_model(home / "models" / "tiny", [r["prompt"] for r in rows[:20]])

        def create():
            return fm.create(model="tiny", train_data_path=str(data), register_to="main.bench",
                             task_type="INSTRUCTION_FINETUNE")

        try:
            t = time.perf_counter()
            first = create()  # starts the service
            cold = time.perf_counter() - t
            assert first.status.value == "QUEUED", first.status
            for _ in range(3):
                create()
            creates = timed(create, 5 if quick else 50)
            figures["create"] = {"cold_s": cold, "p50_ms": 1000 * median(creates), "p99_ms": 1000 * percentile(creates, 99), "n": len(creates)}

            client = get_client()
            store = Store(home / "tunedeck.db")  # a second connection to the service's own database file
            sizes = [200, 2_000] if quick else [1_000, 10_000, 100_000]
            polls = 20 if quick else 300
            per_size = []
            for size in sizes:
                run = create()
                have = len(client.events(run.name))
                t = time.perf_counter()
                for i in range(size - have):
                    store.add_event(run.name, "TRAIN_UPDATED", f"[ep 1/1] [ba {i}/{size}] loss 1.2345, 2,000 tok/s, ETA 3m 12s",
                                    {"step": i, "total_steps": size, "progress": round(100 * i / size, 2), "loss": 1.2345,
                                     "lr": 1e-4, "tokens_per_second": 2000.0, "eta_seconds": 192.0})
                insert_us = 1e6 * (time.perf_counter() - t) / max(1, size - have)
                last = client.events(run.name, after=size - 1)[-1].sequence
                assert last == size, (last, size)
                client.events(run.name, after=last - 10)  # warm
                new10 = timed(lambda: client.events(run.name, after=last - 10), polls)
                empty = timed(lambda: client.events(run.name, after=last), polls)
                full = timed(lambda: fm.get_events(run), 2 if size >= 100_000 else 5)
                assert len(fm.get_events(run)) == size
                per_size.append({"events": size, "insert_us": insert_us,
                                 "poll10_p50_ms": 1000 * median(new10), "poll10_p99_ms": 1000 * percentile(new10, 99),
                                 "empty_p50_ms": 1000 * median(empty), "empty_p99_ms": 1000 * percentile(empty, 99),
                                 "full_s": median(full)})
            store.close()
            figures["events"] = per_size
        finally:
            stop_service(home)

    print_table("Import (fresh interpreter, median)", ["what", "ms", "ratio", "target", ""], [
        ["import tunedeck", imports["tunedeck_ms"], f"{imports['ratio']:.2f}x", "<= 1.2x", verdict(imports["ratio"], 1.2, False)],
        ["import ipywidgets", imports["ipywidgets_ms"], "1.00x", "", ""],
        ["heavy modules loaded by tunedeck", ", ".join(imports["heavy_modules"]) or "none", "", "no torch",
         "MISSED" if "torch" in imports["heavy_modules"] else "met"],
    ])
    c = figures["create"]
    print_table("create() on a warm service (validation on, 256-row file)", ["what", "value"], [
        ["first call (starts the service)", f"{c['cold_s']:.2f} s"],
        [f"p50 over {c['n']}", f"{c['p50_ms']:.1f} ms"],
        [f"p99 over {c['n']}", f"{c['p99_ms']:.1f} ms"],
    ])
    base = per_size[0]
    print_table("get_events (real HTTP client and service)", ["stored events", "poll 10 new p50 ms", "p99 ms",
                "empty poll p50 ms", "p99 ms", "p50 vs smallest", "full listing s", "append us/event", "p99 <= 10 ms"], [
        [e["events"], e["poll10_p50_ms"], e["poll10_p99_ms"], e["empty_p50_ms"], e["empty_p99_ms"],
         f"{e['poll10_p50_ms'] / base['poll10_p50_ms']:.2f}x", e["full_s"], e["insert_us"],
         verdict(max(e["poll10_p99_ms"], e["empty_p99_ms"]), 10, False)] for e in per_size
    ])
    save_json(args.json, figures)


if __name__ == "__main__":
    main()
