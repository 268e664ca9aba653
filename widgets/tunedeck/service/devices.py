"""The devices this service trains on, and which run holds which.

Devices are GPUs where there are any, else CPU cores. The service never imports torch, so they are
found without it:

    TUNEDECK_DEVICES   the setting, when given: ``cuda:0,1`` (those GPUs), ``cpu`` (every core this
                       service may run on, GPUs hidden from the workers), ``cpu:0-7,16`` (those cores)
    nvidia-smi -L      the GPUs of this machine, narrowed to CUDA_VISIBLE_DEVICES when that is set
    CUDA_VISIBLE_DEVICES   its GPUs, where nvidia-smi is not installed
    os.sched_getaffinity   else: the CPU cores this service may run on

A run asks for ``num_devices`` processes. On GPUs it holds that many GPUs, one per process (the
worker's CUDA_VISIBLE_DEVICES names them; rank i uses the i-th). On CPU it holds its share of the
cores: ``cores // max_concurrent`` (all of them when one run trains at a time), at least one per
process, split among its processes into disjoint sets; each process is pinned to its set
(sched_setaffinity, before it execs the worker) with as many OpenMP threads as cores. Concurrent runs
hold disjoint devices; a run waits in the queue until the oldest waiting run's devices are free
(strictly in order: a small run never overtakes a big one, so neither starves).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

SETTING = "TUNEDECK_DEVICES"

# Run in each training process before the worker: pin it to its cores (for a torchrun rank, the set of
# its LOCAL_RANK), give OpenMP that many threads (torchrun would set 1), then exec the worker in place
# (same pid, so the service's pid + start-time identity of the worker holds). A lone process given every
# core the service has keeps the environment as it was (torch picks its own thread count, as before).
PIN_CODE = (
    "import os, sys\n"
    "sets = sys.argv[1].split(';')\n"
    "cores = sets[int(os.environ.get('LOCAL_RANK') or 0) % len(sets)]\n"
    "cpus = {int(c) for c in cores.split(',')}\n"
    "if hasattr(os, 'sched_setaffinity'):\n"
    "    whole = cpus == os.sched_getaffinity(0)\n"
    "    os.sched_setaffinity(0, cpus)\n"
    "    if 'LOCAL_RANK' in os.environ or not whole:\n"
    "        os.environ['OMP_NUM_THREADS'] = str(len(cpus))\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


@dataclass(frozen=True)
class DevicePool:
    """All the devices runs may use: ``kind`` "cuda" (ids: CUDA_VISIBLE_DEVICES entries) or "cpu" (core numbers)."""

    kind: str
    ids: tuple[str, ...]
    source: str  # how they were found, for messages
    hide_gpus: bool = False  # TUNEDECK_DEVICES=cpu...: the workers see no GPU

    @property
    def noun(self) -> str:
        return "GPU" if self.kind == "cuda" else "CPU core"

    def count(self, n: int) -> str:
        """'1 GPU', '2 CPU cores'."""
        return f"{n} {self.noun}{'' if n == 1 else 's'}"

    def describe(self) -> str:
        """'2 CPU cores (0-1; CPU affinity)', '4 GPUs (0, 1, 2, 3; nvidia-smi -L)'."""
        ids = format_cpu_list([int(i) for i in self.ids]) if self.kind == "cpu" else ", ".join(self.ids)
        return f"{self.count(len(self.ids))} ({ids}; {self.source})"


def discover(env: dict[str, str] | None = None) -> DevicePool:
    """This machine's devices (see the module's docstring); ValueError for a TUNEDECK_DEVICES it cannot read."""
    env = dict(os.environ if env is None else env)
    setting = (env.get(SETTING) or "").strip()
    if setting:
        return parse_setting(setting)
    visible = env.get("CUDA_VISIBLE_DEVICES")
    hidden = visible is not None and visible.strip() in ("", "-1")
    if not hidden:
        listed = nvidia_smi_gpus()
        wanted = [v.strip() for v in visible.split(",") if v.strip()] if visible else None
        if listed:
            if wanted is None:
                return DevicePool("cuda", tuple(index for index, _ in listed), "nvidia-smi -L")
            known = {i for pair in listed for i in pair}
            gpus = tuple(w for w in wanted if w in known or w.startswith("MIG-"))
            if gpus:
                return DevicePool("cuda", gpus, "nvidia-smi -L and CUDA_VISIBLE_DEVICES")
        elif wanted:
            return DevicePool("cuda", tuple(wanted), "CUDA_VISIBLE_DEVICES")
    return DevicePool("cpu", tuple(str(c) for c in allowed_cores()), "CPU affinity")


def allowed_cores() -> list[int]:
    """The cores this process may run on (all of them where the OS cannot say, e.g. macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def parse_setting(value: str) -> DevicePool:
    """TUNEDECK_DEVICES: ``cpu``, ``cpu:0-3,8``, ``cuda:0,1`` (``gpu:`` too)."""
    kind, _, rest = value.strip().partition(":")
    kind = kind.strip().lower()
    rest = rest.strip()
    how = f"{SETTING}={value}"
    if kind == "cpu":
        allowed = set(allowed_cores())
        cores = sorted(allowed) if not rest else parse_cpu_list(rest, SETTING)
        outside = sorted(set(cores) - allowed)
        if outside:
            raise ValueError(f"{how}: core(s) {format_cpu_list(outside)} are not among the cores this service may "
                             f"run on ({format_cpu_list(sorted(allowed))})")
        return DevicePool("cpu", tuple(str(c) for c in cores), how, hide_gpus=True)
    if kind in ("cuda", "gpu") and rest:
        gpus = [g.strip() for g in rest.split(",")]
        if any(not g or "'" in g or ";" in g for g in gpus) or len(set(gpus)) != len(gpus):
            raise ValueError(f"{how}: expected distinct GPU indices or UUIDs separated by commas, e.g. cuda:0,1")
        return DevicePool("cuda", tuple(gpus), how)
    raise ValueError(f"{how} is not a device list: use cuda:0,1 (GPUs), cpu (every core) or cpu:0-7 (those cores)")


def nvidia_smi_gpus() -> list[tuple[str, str]]:
    """(index, UUID) of each GPU ``nvidia-smi -L`` lists; [] without nvidia-smi or an answer."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():  # "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5d2c...)"
        head, _, rest = line.partition(":")
        if head.startswith("GPU ") and head[4:].strip().isdigit():
            uuid = rest.rpartition("UUID:")[2].strip(" )") if "UUID:" in rest else ""
            gpus.append((head[4:].strip(), uuid))
    return gpus


def parse_cpu_list(text: str, what: str = "cpu list") -> list[int]:
    """'0-3,8' -> [0, 1, 2, 3, 8] (the kernel's and taskset's cpu-list syntax)."""
    cores: set[int] = set()
    try:
        for part in text.split(","):
            low, dash, high = part.strip().partition("-")
            first, last = int(low), int(high) if dash else int(low)
            if first < 0 or last < first:
                raise ValueError
            cores.update(range(first, last + 1))
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a list of cores such as 0-3,8") from None
    return sorted(cores)


def format_cpu_list(cores: list[int]) -> str:
    """[0, 1, 2, 3, 8] -> '0-3,8'."""
    ranges: list[list[int]] = []
    for c in sorted(set(cores)):
        if ranges and c == ranges[-1][1] + 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


@dataclass(frozen=True)
class Assignment:
    """The devices one run holds, and how its processes are placed on them."""

    kind: str
    ids: tuple[str, ...]
    processes: int
    hide_gpus: bool = False
    rank_cores: tuple[tuple[int, ...], ...] = field(default=())  # CPU: each process's cores

    def env(self) -> dict[str, str]:
        """What the worker's environment gets: its GPUs, or none when the service trains on CPU by setting."""
        if self.kind == "cuda":
            return {"CUDA_VISIBLE_DEVICES": ",".join(self.ids)}
        return {"CUDA_VISIBLE_DEVICES": ""} if self.hide_gpus else {}

    def pin_sets(self) -> str | None:
        """PIN_CODE's argument: each process's cores, '0,1;2,3' (None on GPUs: no pinning)."""
        if self.kind != "cpu":
            return None
        return ";".join(",".join(str(c) for c in cores) for cores in self.rank_cores)

    def launcher_cores(self) -> str | None:
        """All the run's cores, '0,1,2,3', for its launcher (torchrun, or the one worker)."""
        return ",".join(self.ids) if self.kind == "cpu" else None

    def describe(self) -> str:
        if self.kind == "cuda":
            return f"GPU{'s' if len(self.ids) > 1 else ''} {', '.join(self.ids)}"
        cores = format_cpu_list([int(i) for i in self.ids])
        per = " / ".join(format_cpu_list(list(c)) for c in self.rank_cores)
        return f"CPU core{'s' if len(self.ids) > 1 else ''} {cores}" + (f" (processes on {per})" if self.processes > 1 else "")

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "ids": list(self.ids), "processes": self.processes,
                           "hide_gpus": self.hide_gpus, "rank_cores": [list(c) for c in self.rank_cores]})

    @classmethod
    def from_json(cls, text: str | None) -> Assignment | None:
        if not text:
            return None
        try:
            d: dict[str, Any] = json.loads(text)
            return cls(str(d["kind"]), tuple(str(i) for i in d["ids"]), int(d["processes"]), bool(d.get("hide_gpus")),
                       tuple(tuple(int(c) for c in cores) for cores in d.get("rank_cores") or ()))
        except (ValueError, KeyError, TypeError):
            return None


def split(cores: list[int], parts: int) -> list[list[int]]:
    """``cores`` in ``parts`` contiguous sets as even as can be (the first ones one larger)."""
    size, extra = divmod(len(cores), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(cores[start:end])
        start = end
    return out


class DeviceScheduler:
    """Which run holds which devices. Not thread-safe: the service calls it under its own lock."""

    def __init__(self, pool: DevicePool, max_concurrent: int):
        self.pool = pool
        self.max_concurrent = max_concurrent
        self._held: dict[str, Assignment] = {}

    def need(self, processes: int) -> int:
        """Devices a run of ``processes`` processes holds: one GPU each; on CPU its share of the cores."""
        if self.pool.kind == "cuda":
            return processes
        share = len(self.pool.ids) // max(1, self.max_concurrent)
        return min(len(self.pool.ids), max(processes, share, 1))

    def free(self) -> list[str]:
        taken = {i for a in self._held.values() for i in a.ids}
        return [i for i in self.pool.ids if i not in taken]

    def held(self) -> dict[str, Assignment]:
        return dict(self._held)

    def fits_now(self, processes: int) -> bool:
        """Whether a run of ``processes`` processes would get its devices now."""
        return processes <= len(self.pool.ids) and self.need(processes) <= len(self.free())

    def take(self, name: str, processes: int) -> Assignment | None:
        """Devices for run ``name``, or None while not enough are free."""
        if not self.fits_now(processes):
            return None
        free = self.free()
        n = self.need(processes)
        ids = free[:n]
        rank_cores: tuple[tuple[int, ...], ...] = ()
        if self.pool.kind == "cpu":
            rank_cores = tuple(tuple(s) for s in split([int(i) for i in ids], processes))
        assignment = Assignment(self.pool.kind, tuple(ids), processes, self.pool.hide_gpus, rank_cores)
        self._held[name] = assignment
        return assignment

    def adopt(self, name: str, assignment: Assignment) -> None:
        """A re-attached worker keeps the devices it was given (its pinning and CUDA_VISIBLE_DEVICES are its own)."""
        self._held[name] = assignment

    def release(self, name: str) -> None:
        self._held.pop(name, None)

    def waiting_reason(self, processes: int) -> str:
        """Why a run of ``processes`` processes cannot start now."""
        n = self.need(processes)
        free = len(self.free())
        holders = ", ".join(sorted(self._held))
        return (f"waiting for {self.pool.count(n)} ({free} of {len(self.pool.ids)} free"
                + (f"; held by {holders})" if holders else ")"))

    def status(self) -> dict[str, Any]:
        return {"kind": self.pool.kind, "total": len(self.pool.ids), "free": len(self.free()), "source": self.pool.source,
                "held": {name: list(a.ids) for name, a in self._held.items()}}
