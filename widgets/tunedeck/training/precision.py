"""Choose the precision a run computes in: float32, or bf16 autocast (weights stay float32).

TUNEDECK_PRECISION=fp32 or bf16 is done as asked. With ``auto`` (the default):

* CUDA: bf16 autocast when the GPU has native bf16 (Ampere and later, or ROCm). Otherwise float32.
  Emulated bf16 is slower than float32, and fp16 autocast is not offered.
* CPU: a probe times a matmul shaped like the model's MLP (tokens x hidden @ hidden x intermediate,
  in nn.Linear's layout), in float32 and under bf16 autocast as training runs it. It picks bf16 when
  bf16 measures at least ``BF16_MIN_SPEEDUP`` times float32's throughput and gives finite, accurate
  results. A CPU flag isn't enough to decide. CPUs with AVX512-BF16/AMX run bf16 matmuls several times
  faster than float32. Those without run them several to a hundred times slower, depending on the
  kernel. Tiny models gain little either way.

The probe runs in three steps:

1. float32: a warm-up call, which covers one-off setup and wakes torch's worker threads. Then
   back-to-back timed repeats of at least ``REPEAT_SECONDS`` of calls each, until ``REPEATS`` are done
   or ``BUDGET_SECONDS`` have passed (at least ``MIN_REPEATS``). A busy or slow CPU shows up as
   float32 below ``MIN_FP32_GFLOPS``. The probe can't be trusted then, and it stops with float32.
2. Scout, when a float32 call takes over ``SCOUT_ABOVE_SECONDS``: raw bf16 on the first ``SCOUT_TOKENS``
   rows only (median of ``MIN_REPEATS``). It stops the probe with float32 when bf16 is hopelessly slow
   (emulated, no bf16 units). On such a CPU one full bf16 call can take 0.1-1 s.
3. bf16: warm-up, then timed repeats as for float32. It stops early after a repeat that shows bf16
   can't win. The probe compares medians.

It uses torch's thread count as set. On a 2-core machine with a load average of 4-5 from other
processes, it measured ~0.3 s for SmolLM2-135M's shape and 0.07-0.2 s for a tiny model.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

# Why 1.3: the probe times GEMMs only. In a real training step the norms, attention softmax,
# elementwise ops and the float32 optimizer step don't get faster, and autocast adds casts, so a GEMM
# speedup of s gives an end-to-end gain well below s. bf16 also costs precision, so it has to pay
# clearly. Repeated probes of one shape varied by up to ~±30% on a loaded 2-core machine, so 1.3 keeps
# a real ratio of ~1 from flipping to bf16 on noise. CPUs with bf16 units do bf16 matmuls ~4x as fast
# (~2x end to end, benchmarks/vs_trl.py --bf16), well clear of it.
log = logging.getLogger(__name__)

BF16_MIN_SPEEDUP = 1.3
# The scout's cut-off, in throughput relative to float32. A CPU without bf16 units (AVX2 only)
# measured 0.01-0.4x, depending on the kernel's layout and rows. A CPU with bf16 units stays well
# above 1/4, even on the scout's few rows.
SCOUT_MIN_SPEEDUP = 0.25
# A post-warm-up bf16 repeat that takes twice float32's median can't be a 1.3x win: no timing noise
# makes bf16 2.6x faster. The remaining repeats are skipped.
GIVE_UP_SPEEDUP = 0.5
# Every CPU with bf16 units does tens of GFLOP/s per core in float32. A slower float32 measurement
# means the probe mostly timed waiting. With more runnable threads than cores, each of torch's
# parallel regions can stall for a scheduler tick. Under such load on this machine, a tiny float32
# matmul measured 0.1 GFLOP/s (60-80 quiet), and bf16 looked "2x faster".
MIN_FP32_GFLOPS = 5.0
# Relative error of a bf16 matmul against float32 that still counts as usable. bf16 rounding gives ~0.5%.
MAX_RELATIVE_ERROR = 0.05

DEFAULT_HIDDEN, DEFAULT_INTERMEDIATE = 576, 1536  # SmolLM2-135M's, when the model's shape is unknown
PROBE_TOKENS, MIN_PROBE_TOKENS = 256, 64
MAX_PROBE_FLOPS = 5e8  # bigger models get fewer rows, then fewer columns: one float32 call stays ~5 ms
SCOUT_TOKENS = 16
SCOUT_ABOVE_SECONDS = 5e-4  # faster float32 calls skip the scout: bf16 even 100x slower costs <= 0.1 s
REPEATS, MIN_REPEATS = 7, 3
REPEAT_SECONDS = 1e-3  # least work per timed repeat: fast calls are batched up to this
MAX_CALLS_PER_REPEAT = 64
BUDGET_SECONDS = 0.15  # per precision; repeats stop once it is spent and MIN_REPEATS are done

REQUESTS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class PrecisionChoice:
    """The compute precision of a run, with the reason, a single line, for the run's events."""

    autocast_dtype: torch.dtype | None  # None: float32
    reason: str
    speedup: float | None = None  # measured bf16/float32 matmul throughput ratio; None when not measured


@dataclass(frozen=True)
class Timings:
    """What the CPU probe measured: seconds per call of one matmul of ``shape``, float32 and bf16."""

    shape: tuple[int, int, int]  # tokens, hidden, columns (the model's intermediate size, or a slice)
    fp32: tuple[float, ...]
    bf16: tuple[float, ...] = ()  # empty: not measured (float32 was too slow to trust the probe)
    scout: bool = False  # bf16 was timed on SCOUT_TOKENS rows only, scaled up to ``shape``
    usable: bool = True  # the bf16 result was finite and close to float32's
    model_shape: bool = True  # shaped like the model's MLP (False: SmolLM2's, the model's unknown)

    @property
    def speedup(self) -> float | None:
        """bf16 throughput over float32's: median float32 seconds / median bf16 seconds."""
        if not self.bf16:
            return None
        return statistics.median(self.fp32) / max(statistics.median(self.bf16), 1e-12)

    @property
    def fp32_gflops(self) -> float:
        tokens, hidden, columns = self.shape
        return 2 * tokens * hidden * columns / max(statistics.median(self.fp32), 1e-12) / 1e9


def choose_precision(
    device: torch.device,
    requested: str = "auto",
    *,
    hidden_size: int | None = None,
    intermediate_size: int | None = None,
) -> PrecisionChoice:
    """The precision to train in on ``device``. ``requested`` is TUNEDECK_PRECISION: auto, fp32 or bf16.

    On CPU, ``auto`` probes a matmul shaped like the model's MLP (``hidden_size`` x
    ``intermediate_size``), or like SmolLM2-135M's when those are not given.
    """
    if requested not in REQUESTS:
        raise ValueError(f"precision {requested!r} is not one of {', '.join(REQUESTS)}")
    if requested == "fp32":
        return PrecisionChoice(None, "float32: TUNEDECK_PRECISION=fp32")
    if device.type == "cuda":
        if _cuda_has_bf16():
            why = "TUNEDECK_PRECISION=bf16" if requested == "bf16" else "CUDA device with bf16 support"
            return PrecisionChoice(torch.bfloat16, f"bf16 autocast: {why}")
        if requested == "bf16":
            # bf16 is asked for speed. Emulated it is slower, and float32 gives the same run with
            # better numerics, so the run trains in float32 and says why instead of failing late.
            return PrecisionChoice(
                None, "float32: TUNEDECK_PRECISION=bf16, but this CUDA device has no native bf16 (emulated is slower)"
            )
        return PrecisionChoice(None, "float32: this CUDA device has no native bf16 support")
    if requested == "bf16":
        return PrecisionChoice(torch.bfloat16, "bf16 autocast: TUNEDECK_PRECISION=bf16")
    if device.type != "cpu":
        return PrecisionChoice(None, f"float32: no bf16 probe for {device.type} devices")
    try:
        timings = measure_cpu(hidden_size, intermediate_size)
    except RuntimeError as error:  # a probe that can't run must not fail the run: float32 always works
        detail = (str(error).strip().splitlines() or [""])[0]
        return PrecisionChoice(None, f"float32: the bf16 probe failed ({type(error).__name__}: {detail})")
    return decide_cpu(timings)


DECISIONS_ENV = "TUNEDECK_PRECISION_DECISIONS"


def remembered_precision(
    device: torch.device,
    requested: str = "auto",
    *,
    hidden_size: int | None = None,
    intermediate_size: int | None = None,
) -> PrecisionChoice:
    """``choose_precision``, and under ``auto`` on a CPU decided once per CPU model, model shape, thread
    count and torch version when TUNEDECK_PRECISION_DECISIONS names a file (the service names
    ``$TUNEDECK_HOME/precision.json`` for its workers and helpers). The estimate's helper and every run
    of a model on this machine then compute in the same precision: two probes under a changing load
    could disagree (seen here: an estimate timed bf16 steps and the run trained in float32, 0.22x).
    Only a conclusive probe is kept (bf16 measured); "too busy to tell" is asked again next time."""
    path = os.environ.get(DECISIONS_ENV)
    if not path or requested != "auto" or device.type != "cpu":
        return choose_precision(device, requested, hidden_size=hidden_size, intermediate_size=intermediate_size)
    shape = f"{hidden_size or DEFAULT_HIDDEN}x{intermediate_size or DEFAULT_INTERMEDIATE}"
    key = f"{_cpu_name()} | MLP {shape} | {torch.get_num_threads()} threads | torch {torch.__version__}"
    decisions = _read_decisions(Path(path))
    kept = decisions.get(key)
    if isinstance(kept, dict) and isinstance(kept.get("reason"), str):
        dtype = torch.bfloat16 if kept.get("autocast") == "bfloat16" else None
        return PrecisionChoice(dtype, f"{kept['reason']} (decided once for this CPU and model shape: {path})",
                               kept.get("speedup"))
    choice = choose_precision(device, requested, hidden_size=hidden_size, intermediate_size=intermediate_size)
    if choice.speedup is not None:
        decisions[key] = {"autocast": "bfloat16" if choice.autocast_dtype is not None else None,
                          "reason": choice.reason, "speedup": choice.speedup}
        _write_decisions(Path(path), decisions)
    return choice


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read_decisions(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_decisions(path: Path, decisions: dict[str, Any]) -> None:
    """Atomically (a process reading it meanwhile sees the old file or the new one, never half)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(decisions, indent=2))
        os.replace(tmp, path)
    except OSError as error:  # a decision not kept is made again next time: never a reason to fail a run
        log.warning("precision decision not kept in %s: %s", path, error)


def decide_cpu(timings: Timings, threshold: float = BF16_MIN_SPEEDUP) -> PrecisionChoice:
    """bf16 autocast when the probe measured bf16 usable and at least ``threshold`` times float32's speed."""
    tokens, hidden, columns = timings.shape
    what = "this model's MLP" if timings.model_shape else "SmolLM2-135M's MLP (the model's shape is unknown)"
    shape = f"{tokens}x{hidden}x{columns}"
    speedup = None if timings.speedup is None else round(timings.speedup, 3)
    if timings.fp32_gflops < MIN_FP32_GFLOPS:
        return PrecisionChoice(
            None,
            f"float32: a float32 matmul shaped like {what} ({shape}) ran at only {timings.fp32_gflops:.1f} GFLOP/s "
            f"on this CPU (busy or slow), too slow to trust a bf16 probe",
            speedup,
        )
    if speedup is None:
        return PrecisionChoice(None, "float32: bf16 was not measured on this CPU")
    if not timings.usable:
        return PrecisionChoice(
            None, "float32: a bf16 matmul gave non-finite or inaccurate results on this CPU", speedup
        )
    if timings.scout:
        return PrecisionChoice(
            None,
            f"float32: bf16 matmuls ran {speedup:.2f}x as fast as float32 on this CPU "
            f"({SCOUT_TOKENS} rows of {shape}; no bf16 units)",
            speedup,
        )
    measured = f"a bf16 matmul shaped like {what} ({shape}) ran {speedup:.2f}x as fast as float32 on this CPU"
    if speedup < threshold:
        return PrecisionChoice(None, f"float32: {measured} (bf16 needs {threshold:g}x)", speedup)
    return PrecisionChoice(torch.bfloat16, f"bf16 autocast: {measured}", speedup)


def measure_cpu(hidden_size: int | None = None, intermediate_size: int | None = None) -> Timings:
    """Time a matmul shaped like the model's MLP on the CPU in float32 and under bf16 autocast."""
    model_shape = bool(hidden_size and intermediate_size)
    hidden = int(hidden_size or DEFAULT_HIDDEN)
    tokens, columns = _probe_shape(hidden, int(intermediate_size or DEFAULT_INTERMEDIATE))
    shape = (tokens, hidden, columns)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, hidden, generator=generator)
    w = torch.randn(columns, hidden, generator=generator) / math.sqrt(hidden)

    def fp32() -> torch.Tensor:
        return F.linear(x, w)

    def bf16() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):  # as training runs it, weight cast included
            return F.linear(x, w)

    with torch.no_grad():
        reference = fp32()  # float32's warm-up
        fp32_times = _time(fp32, BUDGET_SECONDS)
        fp32_median = statistics.median(fp32_times)
        timings = Timings(shape, fp32_times, model_shape=model_shape)
        if timings.fp32_gflops < MIN_FP32_GFLOPS:
            return timings
        if fp32_median > SCOUT_ABOVE_SECONDS:
            scout = _scout(x, w, reference, fp32_median)
            if scout is not None:
                usable, seconds = scout
                return Timings(shape, fp32_times, (seconds,), True, usable, model_shape)
        usable = _close(bf16(), reference)  # bf16's warm-up
        bf16_times = _time(bf16, BUDGET_SECONDS, give_up_above=fp32_median / GIVE_UP_SPEEDUP)
    return Timings(shape, fp32_times, bf16_times, False, usable, model_shape)


def _scout(x: torch.Tensor, w: torch.Tensor, reference: torch.Tensor, fp32_seconds: float) -> tuple[bool, float] | None:
    """(usable, seconds per call scaled up to all of ``x``'s rows) when a raw bf16 matmul of SCOUT_TOKENS
    rows shows bf16 unusable or hopelessly slow; None when the full probe should go on.

    Raw bf16 tensors, so the weight's cast (paid once per call at any row count) isn't scaled up.
    """
    rows, wb = x[:SCOUT_TOKENS].bfloat16(), w.bfloat16()
    usable = _close(F.linear(rows, wb), reference[:SCOUT_TOKENS])  # also the warm-up
    seconds = statistics.median(_time(lambda: F.linear(rows, wb), 0.0)) * x.shape[0] / SCOUT_TOKENS  # MIN_REPEATS
    if usable and fp32_seconds / seconds >= SCOUT_MIN_SPEEDUP:
        return None
    return usable, seconds


def _probe_shape(hidden: int, intermediate: int) -> tuple[int, int]:
    """(tokens, columns): PROBE_TOKENS x intermediate, with fewer rows and then columns past MAX_PROBE_FLOPS."""
    per_row = 2 * hidden * intermediate
    tokens = PROBE_TOKENS if PROBE_TOKENS * per_row <= MAX_PROBE_FLOPS else int(MAX_PROBE_FLOPS // per_row) // 16 * 16
    tokens = max(MIN_PROBE_TOKENS, tokens)
    columns = min(intermediate, max(128, int(MAX_PROBE_FLOPS // (2 * tokens * hidden)) // 64 * 64))
    return tokens, columns


def _time(fn: Callable[[], object], budget: float, give_up_above: float = math.inf) -> tuple[float, ...]:
    """Seconds per call of an already warmed-up ``fn``, in up to REPEATS timed repeats.

    A repeat is enough back-to-back calls to last REPEAT_SECONDS. Repeats stop once ``budget``
    seconds have passed and MIN_REPEATS are done, or right after a repeat slower than ``give_up_above``.
    """
    started = time.perf_counter()
    once = _seconds(fn, 1)
    times = [once] if once >= REPEAT_SECONDS else []  # a call that long is a repeat of its own
    calls = max(1, min(MAX_CALLS_PER_REPEAT, math.ceil(REPEAT_SECONDS / max(once, 1e-9))))
    while len(times) < REPEATS and not (times and times[-1] > give_up_above):
        if len(times) >= MIN_REPEATS and time.perf_counter() - started > budget:
            break
        times.append(_seconds(fn, calls))
    return tuple(times)


def _seconds(fn: Callable[[], object], calls: int) -> float:
    """Seconds per call of ``fn``, over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def _close(result: torch.Tensor, reference: torch.Tensor) -> bool:
    """``result`` is finite and within MAX_RELATIVE_ERROR of ``reference``."""
    result = result.float()
    if not bool(torch.isfinite(result).all()):
        return False
    error = torch.linalg.vector_norm(result - reference) / torch.linalg.vector_norm(reference).clamp_min(1e-12)
    return float(error) <= MAX_RELATIVE_ERROR


def _cuda_has_bf16() -> bool:
    """Native bf16 on the current CUDA device (``pick_device``'s); emulated bf16 (before Ampere) is slower."""
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))
