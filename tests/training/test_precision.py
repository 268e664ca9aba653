"""TUNEDECK_PRECISION and the probe that decides ``auto``: requests honoured, the decision follows the
measured speedup (injected timings), the probe's timing loop (a fake clock), one real probe, and CUDA."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from tunedeck.training import precision
from tunedeck.training.models import Device, pick_device
from tunedeck.training.precision import BF16_MIN_SPEEDUP, PrecisionChoice, Timings, choose_precision, decide_cpu

CPU = torch.device("cpu")
SMOL = (256, 576, 1536)  # SmolLM2-135M's probe shape: 453 MFLOP a call
TINY = (256, 64, 128)  # the tiny test model's (training/tiny.py: hidden 64, intermediate 2 x hidden): 4.2 MFLOP a call
ms = 1e-3
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="pick_device picks the GPU on this machine")


@pytest.fixture(autouse=True)
def no_decisions_kept(monkeypatch):
    """Each probe decides afresh unless a test sets TUNEDECK_PRECISION_DECISIONS itself."""
    monkeypatch.delenv(precision.DECISIONS_ENV, raising=False)


@pytest.fixture
def no_probe(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the CPU probe ran")

    monkeypatch.setattr(precision, "measure_cpu", refuse)


@pytest.fixture
def probed(monkeypatch):
    """measure_cpu replaced: returns the timings set on it and records the shapes it was asked for."""
    calls: list[tuple[int | None, int | None]] = []
    state = SimpleNamespace(calls=calls, timings=Timings(SMOL, (4 * ms,) * 5, (1 * ms,) * 5))

    def fake(hidden_size=None, intermediate_size=None):
        calls.append((hidden_size, intermediate_size))
        return state.timings

    monkeypatch.setattr(precision, "measure_cpu", fake)
    return state


# --- fp32 / bf16 requests ------------------------------------------------------------------------


def test_fp32_and_bf16_requests_are_honoured_on_cpu_without_probing(no_probe):
    fp32 = choose_precision(CPU, "fp32", hidden_size=576, intermediate_size=1536)
    assert fp32 == PrecisionChoice(None, "float32: TUNEDECK_PRECISION=fp32", None)
    bf16 = choose_precision(CPU, "bf16", hidden_size=576, intermediate_size=1536)
    assert bf16 == PrecisionChoice(torch.bfloat16, "bf16 autocast: TUNEDECK_PRECISION=bf16", None)


def test_an_unknown_request_is_an_error():
    with pytest.raises(ValueError, match=r"precision 'fp16' is not one of auto, fp32, bf16"):
        choose_precision(CPU, "fp16")


# --- auto on CPU: the decision follows the measured speedup --------------------------------------


@pytest.mark.parametrize(
    ("fp32", "bf16", "dtype", "speedup"),
    [
        ((4 * ms,) * 5, (1 * ms,) * 5, torch.bfloat16, 4.0),  # bf16 units: 4x
        ((1.3 * ms,) * 3, (1 * ms,) * 3, torch.bfloat16, 1.3),  # exactly the threshold
        ((1.29 * ms,) * 3, (1 * ms,) * 3, None, 1.29),  # just below it
        ((1 * ms,) * 5, (1.1 * ms,) * 5, None, 0.909),  # no gain
        ((4 * ms,) * 5, (13 * ms,), None, 0.308),  # gave up after one repeat (no bf16 units)
        ((4 * ms,) * 4 + (400 * ms,), (1 * ms,) * 5, torch.bfloat16, 4.0),  # medians: a float32 outlier changes nothing
        ((1 * ms,) * 5, (1 * ms,) * 4 + (0.01 * ms,), None, 1.0),  # nor does one lucky bf16 repeat
    ],
)
def test_auto_chooses_bf16_only_when_the_measured_speedup_reaches_the_threshold(fp32, bf16, dtype, speedup):
    choice = decide_cpu(Timings(SMOL, fp32, bf16))  # float32 at 110-450 GFLOP/s: a trustworthy measurement
    assert choice.autocast_dtype == dtype
    assert choice.speedup == pytest.approx(speedup, abs=1e-3)
    assert choice.reason.startswith("bf16 autocast: " if dtype else "float32: ")
    assert f"ran {speedup:.2f}x as fast as float32" in choice.reason
    assert "this model's MLP (256x576x1536)" in choice.reason
    assert "\n" not in choice.reason


def test_the_threshold_is_a_parameter():
    timings = Timings(SMOL, (2 * ms,) * 3, (1 * ms,) * 3)
    assert decide_cpu(timings).autocast_dtype == torch.bfloat16
    assert decide_cpu(timings, threshold=2.5).autocast_dtype is None


def test_a_tiny_model_where_bf16_is_not_faster_trains_in_float32():
    choice = decide_cpu(Timings(TINY, (0.07 * ms,) * 7, (0.08 * ms,) * 7))
    assert choice.autocast_dtype is None
    assert "(256x64x128) ran 0.88x as fast as float32" in choice.reason and "bf16 needs 1.3x" in choice.reason


def test_a_busy_cpu_never_gets_bf16_from_a_flattering_measurement():
    # Measured on this machine under load: every float32 call stalled ~32 ms (0.1 GFLOP/s), bf16 "2x faster".
    busy = Timings(TINY, (32 * ms,) * 5, (16 * ms,) * 5)
    assert busy.speedup == pytest.approx(2.0)
    choice = decide_cpu(busy)
    assert choice.autocast_dtype is None
    assert "only 0.1 GFLOP/s" in choice.reason and "too slow to trust" in choice.reason
    unmeasured = decide_cpu(Timings(TINY, (32 * ms,) * 5))  # the probe stops before bf16 then
    assert (unmeasured.autocast_dtype, unmeasured.speedup) == (None, None)


def test_the_scout_and_unusable_bf16_give_float32():
    scout = decide_cpu(Timings(SMOL, (4 * ms,) * 5, (400 * ms,), scout=True))
    assert (scout.autocast_dtype, scout.speedup) == (None, 0.01)
    assert "0.01x as fast as float32" in scout.reason and "(16 rows of 256x576x1536; no bf16 units)" in scout.reason
    broken = decide_cpu(Timings(SMOL, (4 * ms,) * 5, (1 * ms,) * 5, usable=False))  # fast, but wrong
    assert broken.autocast_dtype is None and "non-finite or inaccurate" in broken.reason


def test_auto_probes_the_models_shape_or_smollm2s(probed):
    choice = choose_precision(CPU, "auto", hidden_size=64, intermediate_size=172)
    assert probed.calls == [(64, 172)]
    assert (choice.autocast_dtype, choice.speedup) == (torch.bfloat16, 4.0)
    probed.timings = Timings(SMOL, (4 * ms,) * 5, (1 * ms,) * 5, model_shape=False)
    assert "SmolLM2-135M's MLP (the model's shape is unknown)" in choose_precision(CPU).reason
    assert probed.calls[-1] == (None, None)


def test_a_probe_that_fails_gives_float32_instead_of_failing_the_run(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("bf16 autocast is not supported here\nmore detail")

    monkeypatch.setattr(precision, "measure_cpu", broken)
    choice = choose_precision(CPU, "auto", hidden_size=64, intermediate_size=128)
    reason = "float32: the bf16 probe failed (RuntimeError: bf16 autocast is not supported here)"
    assert choice == PrecisionChoice(None, reason)


# --- the probe's timing loop, on a fake clock ----------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float):
        def fn():
            self.now += seconds

        return fn


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(precision, "time", SimpleNamespace(perf_counter=fake))
    return fake


def test_timing_repeats_batch_fast_calls_and_stop_at_the_budget_or_on_giving_up(clock):
    assert precision._time(clock.work(2 * ms), budget=1.0) == pytest.approx((2 * ms,) * 7)  # all REPEATS
    # Budget spent: stops once MIN_REPEATS are done (the first, 2 ms call counts as one).
    assert precision._time(clock.work(2 * ms), budget=5 * ms) == pytest.approx((2 * ms,) * 3)
    # One repeat slower than give_up_above is enough to stop.
    assert precision._time(clock.work(2 * ms), budget=1.0, give_up_above=1 * ms) == pytest.approx((2 * ms,))
    # 0.3 ms calls are batched 4 to a repeat (>= REPEAT_SECONDS); the calibrating call is not a repeat.
    calls = []
    fast = clock.work(0.3 * ms)
    times = precision._time(lambda: (calls.append(1), fast()), budget=1.0)
    assert times == pytest.approx((0.3 * ms,) * 7) and len(calls) == 1 + 7 * 4


def test_the_probe_stops_early_on_a_busy_cpu_or_a_hopeless_scout(monkeypatch):
    """measure_cpu's steps with scripted timings: which ran, and what they returned."""
    timed: list[float] = []  # give_up_above of each _time call: inf for float32, fp32/GIVE_UP_SPEEDUP for bf16
    script: list[tuple[float, ...]] = []

    def scripted_time(fn, budget, give_up_above=float("inf")):
        timed.append(give_up_above)
        return script.pop(0)

    monkeypatch.setattr(precision, "_time", scripted_time)
    script[:] = [(32 * ms,) * 5]  # busy: float32 of the tiny shape at 0.1 GFLOP/s, nothing more is timed
    busy = precision.measure_cpu(64, 128)
    assert (busy.shape, busy.bf16, timed) == (TINY, (), [float("inf")])

    monkeypatch.setattr(precision, "_scout", lambda x, w, reference, fp32_seconds: (True, 400 * ms))
    timed.clear()
    script[:] = [(4 * ms,) * 5]  # float32 over SCOUT_ABOVE_SECONDS: the scout runs and stops the probe
    hopeless = precision.measure_cpu(576, 1536)
    assert (hopeless.scout, hopeless.bf16, timed) == (True, (400 * ms,), [float("inf")])

    monkeypatch.setattr(precision, "_scout", lambda x, w, reference, fp32_seconds: None)
    timed.clear()
    script[:] = [(4 * ms,) * 5, (1 * ms,) * 5]  # the scout lets it go on: bf16 at the full shape
    full = precision.measure_cpu(576, 1536)
    assert (full.scout, full.usable, full.speedup) == (False, True, 4.0)
    assert timed == [float("inf"), pytest.approx(8 * ms)]  # bf16 gives up past 2x float32's median


def test_probe_shape_is_the_models_until_it_gets_big():
    assert precision._probe_shape(576, 1536) == (256, 1536)
    assert precision._probe_shape(64, 172) == (256, 172)
    tokens, columns = precision._probe_shape(4096, 11008)  # a 7B model: fewer rows, then fewer columns
    assert (tokens, columns) == (64, 896) and 2 * tokens * 4096 * columns <= precision.MAX_PROBE_FLOPS


# --- one real probe ------------------------------------------------------------------------------


def test_a_real_probe_returns_a_valid_choice_quickly_and_leaves_torch_as_it_was():
    rng, threads = torch.random.get_rng_state(), torch.get_num_threads()
    started = time.perf_counter()
    choice = choose_precision(CPU, "auto", hidden_size=64, intermediate_size=128)  # the tiny test model
    seconds = time.perf_counter() - started
    assert seconds < 10, f"the probe took {seconds:.1f} s"  # ~0.03-0.5 s on 2 busy cores: a bound, not a benchmark
    assert choice.autocast_dtype in (None, torch.bfloat16)
    assert choice.reason.startswith("bf16 autocast: " if choice.autocast_dtype else "float32: ")
    assert "(256x64x128)" in choice.reason and "\n" not in choice.reason
    if choice.autocast_dtype is not None:
        assert choice.speedup is not None and choice.speedup >= BF16_MIN_SPEEDUP
    assert choice.speedup is None or choice.speedup > 0
    assert torch.equal(torch.random.get_rng_state(), rng) and torch.get_num_threads() == threads


# --- pick_device ---------------------------------------------------------------------------------


@no_cuda
def test_pick_device_probes_the_configs_shape_and_carries_the_reason(probed):
    from transformers import LlamaConfig

    device = pick_device("auto", LlamaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4))
    assert probed.calls == [(64, 128)]
    assert device == Device(CPU, torch.bfloat16, device.precision_reason, 4.0)
    assert device.precision_reason.startswith("bf16 autocast: a bf16 matmul")
    assert device.dtype_label == "bfloat16 autocast, float32 weights"
    pick_device("auto")
    pick_device("auto", SimpleNamespace(hidden_size=0))
    assert probed.calls[1:] == [(None, None), (None, None)]


@no_cuda
def test_pick_device_honours_fp32_and_bf16(no_probe):
    assert pick_device("fp32") == Device(CPU, None, "float32: TUNEDECK_PRECISION=fp32", None)
    bf16 = pick_device("bf16", SimpleNamespace(hidden_size=64, intermediate_size=172))
    assert (bf16.autocast_dtype, bf16.precision_reason) == (torch.bfloat16, "bf16 autocast: TUNEDECK_PRECISION=bf16")


# --- CUDA ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("native", [True, False])
def test_cuda_decides_from_native_bf16_support_without_probing(monkeypatch, no_probe, native):
    """The CUDA branch with the support query stubbed, so it runs here too (no GPU needed)."""
    asked = []
    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return native

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    cuda = torch.device("cuda", 0)
    auto = choose_precision(cuda, "auto")
    assert auto == (
        PrecisionChoice(torch.bfloat16, "bf16 autocast: CUDA device with bf16 support")
        if native
        else PrecisionChoice(None, "float32: this CUDA device has no native bf16 support")
    )
    bf16 = choose_precision(cuda, "bf16")
    assert bf16.autocast_dtype == (torch.bfloat16 if native else None)
    assert "TUNEDECK_PRECISION=bf16" in bf16.reason
    assert choose_precision(cuda, "fp32").autocast_dtype is None
    assert asked and not any(asked)  # emulated bf16 (before Ampere) does not count


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU on this machine; the stubbed test above covers the branch"
)
def test_on_a_real_cuda_gpu_auto_follows_its_bf16_support():
    device = pick_device("auto")
    assert device.device.type == "cuda"
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    assert device.autocast_dtype == (torch.bfloat16 if native else None)
    assert "CUDA device" in device.precision_reason and device.bf16_speedup is None


# --- one decision per CPU and model shape (TUNEDECK_PRECISION_DECISIONS, set by the service) ---------


@no_cuda
def test_the_service_decides_once_per_cpu_and_model_shape(probed, tmp_path, monkeypatch):
    from tunedeck.training.precision import DECISIONS_ENV

    decisions = tmp_path / "precision.json"
    monkeypatch.setenv(DECISIONS_ENV, str(decisions))
    config = SimpleNamespace(hidden_size=64, intermediate_size=128)
    first = pick_device("auto", config)  # the estimate's helper, say: probes, bf16 4x
    assert probed.calls == [(64, 128)] and first.autocast_dtype is torch.bfloat16 and decisions.exists()
    probed.timings = Timings(SMOL, (4 * ms,) * 5, (40 * ms,) * 5)  # a later probe would now say float32
    again = pick_device("auto", config)  # the run's worker: the same decision, no probe
    assert probed.calls == [(64, 128)] and again.autocast_dtype is torch.bfloat16 and again.bf16_speedup == first.bf16_speedup
    assert again.precision_reason.startswith(first.precision_reason) and str(decisions) in again.precision_reason
    other = pick_device("auto", SimpleNamespace(hidden_size=64, intermediate_size=256))  # another model shape
    assert probed.calls[-1] == (64, 256) and other.autocast_dtype is None
    assert pick_device("fp32", config).autocast_dtype is None  # a request is still done as asked


@no_cuda
def test_an_inconclusive_probe_is_not_kept_and_without_the_setting_nothing_is(probed, tmp_path, monkeypatch):
    from tunedeck.training.precision import DECISIONS_ENV

    probed.timings = Timings(SMOL, (10.0,) * 5, ())  # float32 hopelessly slow (a busy CPU): bf16 not measured
    monkeypatch.setenv(DECISIONS_ENV, str(tmp_path / "precision.json"))
    assert pick_device("auto").autocast_dtype is None and not (tmp_path / "precision.json").exists()
    pick_device("auto")
    assert len(probed.calls) == 2  # asked again
    monkeypatch.delenv(DECISIONS_ENV)
    probed.timings = Timings(SMOL, (4 * ms,) * 5, (1 * ms,) * 5)
    pick_device("auto")
    pick_device("auto")
    assert len(probed.calls) == 4 and not (tmp_path / "precision.json").exists()
