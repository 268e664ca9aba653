"""Run training loops side by side, one step at a time, so that a noisy shared machine slows all alike.

Timing two trainers one after the other on a machine where other jobs come and go compares the load
more than the trainers. Here each contestant runs in its own thread (or in a child process driven
through a Unix socket: ``remote``/``serve`` here, ``PipeGate`` in the child), but only one computes at
any moment: whoever has made the least progress (fraction of its steps) takes the next step. Each
contestant's time is the sum of its own turns, so a burst of outside load lands on whichever steps
run during it: spread over all contestants in proportion.

``hook_recipe()`` lets tunedeck's real recipe (``tunedeck.training.recipe.run``) be a contestant: it
wraps the recipe's ``train_step`` (timing each step in turn with the others), ``collate`` (counting
padding) and ``make_split`` (exposing the packed data, optionally with a different row length) and, for
experiments, ``pick_device`` (bf16 autocast on CPU), for the thread that attached a ``RecipeProbe`` only.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class Lap:
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


class Lockstep:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._order: list[str] = []
        self._progress: dict[str, float] = {}
        self._ready: set[str] = set()
        self._finished: set[str] = set()
        self._holder: str | None = None
        self.laps: dict[str, list[Lap]] = {}

    def run(self, loops: dict[str, Callable[["Gate"], Any]]) -> dict[str, Any]:
        """Run ``loops[name](gate)`` for every contestant in its own thread; return their results."""
        gates = {name: self._gate(name) for name in loops}
        results: dict[str, Any] = {}
        errors: dict[str, BaseException] = {}

        def body(name: str) -> None:
            try:
                results[name] = loops[name](gates[name])
            except BaseException as error:  # noqa: BLE001 - re-raised below, in the caller's thread
                errors[name] = error
            finally:
                gates[name].finish()

        threads = [threading.Thread(target=body, args=(n,), name=f"race-{n}", daemon=True) for n in loops]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            name, error = next(iter(errors.items()))
            raise RuntimeError(f"contestant {name!r} failed: {error!r}") from error
        return results

    def _gate(self, name: str) -> "Gate":
        self._order.append(name)
        self._progress[name] = 0.0
        self.laps[name] = []
        return Gate(self, name)

    def _next(self) -> str | None:
        waiting = [n for n in self._order if n not in self._finished]
        return min(waiting, key=lambda n: (self._progress[n], self._order.index(n))) if waiting else None

    def _can_go(self, name: str) -> bool:
        return len(self._ready) == len(self._order) and self._holder is None and self._next() == name


class Gate:
    """One contestant's handle: ``begin()`` before its first step, ``lap(progress)`` after each."""

    def __init__(self, race: Lockstep, name: str):
        self.race, self.name = race, name
        self._started = 0.0
        self.begun = False

    def begin(self) -> None:
        """Wait until every contestant is set up and it is this one's turn; start the clock."""
        r = self.race
        with r._cond:
            r._ready.add(self.name)
            r._cond.notify_all()
            r._cond.wait_for(lambda: r._can_go(self.name))
            r._holder = self.name
        self.begun = True
        self._started = time.perf_counter()

    def restart(self) -> None:
        """Do not count what this contestant did since its turn began (e.g. preparing untimed inputs)."""
        self._started = time.perf_counter()

    def lap(self, progress: float, seconds: float | None = None, **info: Any) -> None:
        """Record the time since the turn began; hand over; wait for the next turn (unless done).

        After its last lap (progress >= 1) a contestant keeps the turn until its thread ends, so its
        untimed wrap-up (saving, exporting) never overlaps another contestant's timed steps.
        ``seconds`` overrides the measured time (a contestant in another process times itself).
        """
        if seconds is None:
            seconds = time.perf_counter() - self._started
        r = self.race
        with r._cond:
            r.laps[self.name].append(Lap(seconds, info))
            r._progress[self.name] = progress
            if progress >= 1:
                return
            r._holder = None
            r._cond.notify_all()
            r._cond.wait_for(lambda: r._can_go(self.name))
            r._holder = self.name
        self._started = time.perf_counter()

    def finish(self) -> None:
        r = self.race
        with r._cond:
            r._ready.add(self.name)
            r._finished.add(self.name)
            if r._holder == self.name:
                r._holder = None
            r._cond.notify_all()


# --- a contestant in another process ----------------------------------------------------------------

GATE_ENV = "TUNEDECK_BENCH_GATE"  # the Unix socket a child contestant connects to


def listen() -> tuple[socket.socket, str]:
    """A Unix socket for one child contestant (short path: socket paths are limited to ~100 bytes)."""
    path = os.path.join(tempfile.mkdtemp(prefix="race-", dir="/tmp"), "gate.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    server.settimeout(0.5)
    return server, path


def serve(gate: Gate, server: socket.socket, alive: Callable[[], bool], feed: Callable[[int], Any] | None = None) -> Any:
    """Hand out turns to the child connected on ``server``; return what it sends as its result.

    ``feed(k)`` (optional) is sent with the turn for the child's step k+1 (``PipeGate.data``).
    """
    path = server.getsockname()
    try:
        while True:
            try:
                conn, _ = server.accept()
                break
            except socket.timeout:
                if not alive():
                    raise RuntimeError("the contestant process ended before joining the race") from None
    finally:
        server.close()
        os.unlink(path)
        os.rmdir(os.path.dirname(path))
    conn.settimeout(None)
    result = None
    with conn, conn.makefile("r", encoding="utf-8") as inbox, conn.makefile("w", encoding="utf-8") as outbox:

        laps = 0

        def go() -> None:
            outbox.write(json.dumps({"go": True, "data": feed(laps) if feed else None}) + "\n")
            outbox.flush()

        for line in inbox:
            msg = json.loads(line)
            if "begin" in msg:
                gate.begin()
                go()
            elif "lap" in msg:
                gate.lap(msg["lap"], seconds=msg["seconds"], **msg["info"])
                laps += 1
                if msg["lap"] < 1:
                    go()
            elif "result" in msg:
                result = msg["result"]
    return result


def remote(cmd: list[str], log: Path, feed: Callable[[int], Any] | None = None, new_session: bool = False) -> Callable[[Gate], Any]:
    """A contestant that runs ``cmd`` in a child process, which steps through ``PipeGate.from_env()``.

    For trainers that cannot share a process (e.g. Accelerate keeps one process-wide precision
    setting), or to run a baseline in a process started like tunedeck's worker (``new_session``).
    The child times its own steps; this side only hands out the turns (and ``feed``, see ``serve``).
    """

    def loop(gate: Gate) -> Any:
        server, path = listen()
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, env={**os.environ, GATE_ENV: path}, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=new_session)
        try:
            result = serve(gate, server, lambda: proc.poll() is None, feed)
        finally:
            if proc.wait() != 0:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{' '.join(cmd[1:4])} exited with {proc.returncode}:\n{tail}")
        return result

    return loop


class PipeGate:
    """The child's side of ``serve``: the same ``begin`` / ``lap`` / ``restart`` as a ``Gate``."""

    def __init__(self, path: str):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self._in = self._sock.makefile("r", encoding="utf-8")
        self._out = self._sock.makefile("w", encoding="utf-8")
        self._started = self._cpu = 0.0
        self.begun = False
        self.data: Any = None  # what the coordinator sent with the current turn

    @classmethod
    def from_env(cls) -> "PipeGate":
        return cls(os.environ[GATE_ENV])

    def _send(self, msg: dict, wait: bool) -> None:
        self._out.write(json.dumps(msg) + "\n")
        self._out.flush()
        if wait:
            line = self._in.readline()
            if not line:
                raise RuntimeError("the race coordinator went away")
            self.data = json.loads(line)["data"]
            self._started, self._cpu = time.perf_counter(), time.process_time()

    def begin(self) -> None:
        self._send({"begin": True}, wait=True)
        self.begun = True

    def restart(self) -> None:
        self._started, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, progress: float, **info: Any) -> None:
        """As ``Gate.lap``; also reports the CPU time this process used in the lap (all its threads)."""
        info["cpu_seconds"] = time.process_time() - self._cpu
        self._send({"lap": progress, "seconds": time.perf_counter() - self._started, "info": info}, wait=progress < 1)

    def result(self, value: Any) -> None:
        self._send({"result": value}, wait=False)


# --- tunedeck's recipe as a contestant ------------------------------------------------------------

_PROBES: dict[threading.Thread, "RecipeProbe"] = {}
_hooked = False


class RecipeProbe:
    """Hooks for one recipe run in the current thread: step timing, padding, the packed data."""

    def __init__(self, gate: Gate | None, pack_tokens: int | None = None, last_lap_at_event: str | None = None,
                 send_rows: bool = False, autocast: str | None = None):
        self.gate = gate
        self.pack_tokens = pack_tokens  # override the recipe's packed row length (an experiment)
        self.autocast = autocast  # e.g. "bfloat16": autocast on CPU too, as the recipe does on a GPU (an experiment)
        self.last_lap_at_event = last_lap_at_event  # e.g. "TRAIN_FINISHED": the last lap runs until that event
        self.send_rows = send_rows  # put each step's rows (token ids, labels) in its lap, for a bare replay
        self.plan: dict | None = None  # the data of MODEL_INITIALIZED: total_steps, row_tokens, ...
        self.planned = threading.Event()
        self.total_steps: int | None = None
        self.split = None
        self.split_ready = threading.Event()
        self.step = 0
        self.computed_tokens = 0  # tokens in collated batches, padding included
        self.groups: list[int] = []  # rows in each collated micro-batch
        self.attention = [0, 0]  # attention scores needed (sum of example length^2), computed (rows x row length^2)
        self.events: list[tuple[float, dict]] = []

    def attach(self) -> "RecipeProbe":
        """Watch the recipe run that the current thread is about to start."""
        hook_recipe()
        _PROBES[threading.current_thread()] = self
        return self

    def close(self) -> None:
        _PROBES.pop(threading.current_thread(), None)

    def run_recipe(self, spec, gate: Gate) -> None:
        """Run the real recipe on ``spec`` in this thread, watched by this probe and paced by ``gate``."""
        from tunedeck.training.recipe import run

        self.gate = gate
        self.attach()
        try:
            run(spec, reporter_for(self))
        finally:
            self.close()
            self.split_ready.set()  # wake a baseline waiting for the split even if the recipe failed early

    def on_report(self, report: dict[str, Any]) -> None:
        if report.get("kind") != "event":
            return
        self.events.append((time.perf_counter(), report))
        data = report.get("data") or {}
        if report["type"] == "MODEL_INITIALIZED":
            self.total_steps = int(data["total_steps"])
            self.plan = data
            self.planned.set()
        if self.last_lap_at_event and report["type"] == self.last_lap_at_event and self.gate and self.gate.begun:
            self.gate.lap(1.0, kind="tail")


def watch_all_reports(probe: RecipeProbe) -> None:
    """Let the probe see every report of every ``Reporter`` in this process (the worker makes its own)."""
    from tunedeck.training.report import Reporter

    emit = Reporter.emit

    def emit_and_watch(self, report):
        emit(self, report)
        probe.on_report(report)

    Reporter.emit = emit_and_watch


def reporter_for(probe: RecipeProbe, stream=None):
    """A real ``Reporter`` (to ``stream``, or nowhere) that also lets the probe see every report."""
    from tunedeck.training.report import Reporter

    class ProbeReporter(Reporter):
        def emit(self, report: dict[str, Any]) -> None:
            super().emit(report)
            probe.on_report(report)

    return ProbeReporter(stream=stream)


def hook_recipe() -> None:
    global _hooked
    if _hooked:
        return
    from tunedeck.training import recipe

    train_step, collate, make_split, pick_device = recipe.train_step, recipe.collate, recipe.make_split, recipe.pick_device

    def device_hook(*args, **kwargs):
        probe = _PROBES.get(threading.current_thread())
        if probe is None or not probe.autocast:
            return pick_device(*args, **kwargs)
        import torch

        from tunedeck.training.models import Device

        return Device(torch.device("cpu"), getattr(torch, probe.autocast))

    def timed_train_step(model, optimizer, rows, *args, **kwargs):
        probe = _PROBES.get(threading.current_thread())
        if probe is None or probe.gate is None:
            return train_step(model, optimizer, rows, *args, **kwargs)
        if not probe.gate.begun:
            probe.gate.begin()
        before, attention_before, groups_before = probe.computed_tokens, list(probe.attention), len(probe.groups)
        started, cpu_started = time.perf_counter(), time.process_time()
        result = train_step(model, optimizer, rows, *args, **kwargs)
        step_seconds, step_cpu = time.perf_counter() - started, time.process_time() - cpu_started
        probe.step += 1
        extra = {}
        if probe.send_rows:  # enough to replay this very step elsewhere
            extra = {"rows": [[[e.input_ids, e.labels] for e in row] for row in rows],
                     "micro": probe.groups[groups_before:],  # rows per collated micro-batch
                     "args": [a if isinstance(a, (int, float, str)) else type(a).__name__ for a in args]}
            if probe.step == 1:
                extra["plan"] = probe.plan
        total = probe.total_steps or probe.step
        last = probe.step >= total
        progress = probe.step / total
        if last and probe.last_lap_at_event:
            progress = (probe.step - 0.5) / total  # the clock runs on to the event, which takes the last lap
        probe.gate.lap(
            progress, kind="step", step=probe.step, loss=result[0], step_seconds=step_seconds, step_cpu=step_cpu,
            tokens=sum(len(e) for row in rows for e in row),
            loss_tokens=sum(sum(1 for x in e.labels[1:] if x != -100) for row in rows for e in row),
            computed=probe.computed_tokens - before,
            attn_needed=probe.attention[0] - attention_before[0], attn_computed=probe.attention[1] - attention_before[1],
            **extra,
        )
        return result

    def counting_collate(rows, *args, **kwargs):
        batch = collate(rows, *args, **kwargs)
        probe = _PROBES.get(threading.current_thread())
        if probe is not None:
            probe.computed_tokens += int(batch.input_ids.numel())
            probe.groups.append(len(rows))
            probe.attention[0] += sum(len(e) ** 2 for row in rows for e in row)
            probe.attention[1] += batch.input_ids.shape[0] * batch.input_ids.shape[1] ** 2
        return batch

    def split_hook(*args, **kwargs):
        probe = _PROBES.get(threading.current_thread())
        if probe is not None and probe.pack_tokens:
            if "pack_tokens" in kwargs:
                kwargs["pack_tokens"] = probe.pack_tokens
            else:
                args = (*args[:3], probe.pack_tokens, *args[4:])
        split = make_split(*args, **kwargs)
        if probe is not None and split.field == "train_data_path":
            probe.split = split
            probe.split_ready.set()
        return split

    recipe.train_step, recipe.collate, recipe.make_split, recipe.pick_device = timed_train_step, counting_collate, split_hook, device_hook
    _hooked = True


def lap_table(race: Lockstep, keys: tuple[str, ...] = ("tokens", "step_seconds", "cpu_seconds", "step_cpu")) -> dict[str, list]:
    """Every lap's seconds and chosen info, for the JSON output (to look into noise afterwards)."""
    return {name: [[round(lap.seconds, 4), *(lap.info.get(k) for k in keys)] for lap in laps] for name, laps in race.laps.items()}


def wasted(laps: list[Lap], needed: str, computed: str) -> float:
    """1 - needed / computed, summed over laps (e.g. the padding fraction)."""
    total = sum(lap.info.get(computed, 0) for lap in laps)
    return 1 - sum(lap.info.get(needed, 0) for lap in laps) / total if total else float("nan")


def rate(laps: list[Lap], key: str, skip: int = 1) -> float:
    """Sum of ``info[key]`` over seconds, leaving out the first ``skip`` laps (warm-up)."""
    use = laps[skip:] if len(laps) > skip else laps
    seconds = sum(lap.seconds for lap in use)
    return sum(lap.info.get(key, 0) for lap in use) / seconds if seconds else float("nan")
