"""The form's data check on the service's side: token counts come from a helper process (the service
never loads transformers), which is kept warm, stopped at the timeout, and replaced when it ends."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.helpers import PAIRS, write_jsonl
from tunedeck.service.datacheck import DataChecker

IFT = "INSTRUCTION_FINETUNE"


def test_token_counts_come_from_the_helper_process_and_the_service_loads_no_transformers(home, tmp_path):
    from tunedeck.training.tiny import build_tiny_model  # builds the model in this (test) process only

    model = build_tiny_model(home / "models" / "tiny", [t for p in PAIRS for t in p])
    data = write_jsonl(tmp_path / "train.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    probe = textwrap.dedent(f"""
        import json, sys
        from tunedeck.service.core import RunService
        from tunedeck.service.store import Store
        service = RunService(Store({str(tmp_path / "t.db")!r}))
        first = service.data_check({str(data)!r}, {IFT!r}, {str(model)!r}, 20)
        again = service.data_check({str(data)!r}, {IFT!r}, "tiny", None)
        helper = service.data_checker._proc.pid
        service.shutdown()
        print(json.dumps({{"first": first, "again": again, "helper": helper,
                          "loaded": sorted(m for m in ("transformers", "torch", "tokenizers") if m in sys.modules)}}))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [], "the service process imported the tokenizer stack"
    first, again = result["first"], result["again"]
    assert first["ok"] and first["rows"] == len(PAIRS) and first["context_length"] == 20
    assert first["tokens"]["min"] > 0 and first["message"].startswith(f"ok: {len(PAIRS)} rows")
    assert again["ok"] and again["context_length"] == 1024 and again["tokens"] == first["tokens"]


def test_without_a_model_the_service_checks_the_format_itself(home, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a", "response": "b"}])
    checker = DataChecker(command=[sys.executable, "-c", "raise SystemExit('never started')"])
    result = checker.check(str(data), IFT, None, None)
    assert result["ok"] and result["note"] == "choose a model to count tokens"
    assert checker._proc is None


def _model(home):
    folder = home / "models" / "m"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama", "max_position_embeddings": 64}')
    (folder / "model.safetensors").write_bytes(b"")
    return str(folder)


def test_a_check_past_the_timeout_is_stopped_with_a_clear_problem(home, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a", "response": "b"}])
    checker = DataChecker(command=[sys.executable, "-c", "import time; time.sleep(60)"], timeout=1)
    result = checker.check(str(data), IFT, _model(home), None)
    assert result["ok"] is False
    assert "did not finish within 1 s (TUNEDECK_DATA_CHECK_TIMEOUT)" in result["problems"][0]["message"]
    assert checker._proc is None  # killed: the next check starts a fresh helper


def test_a_helper_that_crashes_is_a_problem_naming_its_last_words(home, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a", "response": "b"}])
    crash = "import sys; sys.stdin.readline(); sys.stderr.write('ImportError: no transformers here'); sys.exit(3)"
    result = DataChecker(command=[sys.executable, "-c", crash], timeout=30).check(str(data), IFT, _model(home), None)
    assert result["ok"] is False
    assert "exit code 3" in result["message"] and "ImportError: no transformers here" in result["message"]


def test_a_helper_that_ended_for_being_idle_is_replaced(home, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a", "response": "b"}])
    once = 'import sys; sys.stdin.readline(); print(\'{"ok": true, "rows": 1}\', flush=True); sys.stdin.readline()'
    checker, model = DataChecker(command=[sys.executable, "-c", once], timeout=30), _model(home)
    assert checker.check(str(data), IFT, model, None) == {"ok": True, "rows": 1}
    first = checker._proc
    # the helper reads the next request and ends (exit 0) as if idle: a fresh one answers it
    assert checker.check(str(data), IFT, model, None) == {"ok": True, "rows": 1}
    assert checker._proc is not first
    checker.close()
