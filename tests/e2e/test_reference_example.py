"""The reference page's own example call, unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tunedeck import InvalidInputError
from tunedeck.inputs.paths import local_path

from tests.helpers import PAIRS, write_jsonl

pytestmark = pytest.mark.e2e


def seed_example():
    # Verbatim from ../shared/seeds/create-training-run.en.txt
    from tunedeck import foundation_model as fm

    run = fm.create(
        model='meta-llama/Llama-2-7b-chat-hf',
        train_data_path='dbfs:/Volumes/main/mydirectory/ift/train.jsonl',  # UC Volume with JSONL formatted data
        # Public HF dataset is also supported
        # train_data_path='mosaicml/dolly_hhrlhf/train'
        register_to='main.mydirectory',  # UC catalog and schema to register the model to
    )
    return run


def test_a_model_this_machine_lacks_is_refused_with_the_available_list(e2e_home):
    write_jsonl(local_path("dbfs:/Volumes/main/mydirectory/ift/train.jsonl"),
                [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]} for p, r in PAIRS])
    with pytest.raises(InvalidInputError) as err:
        seed_example()
    (problem,) = err.value.problems
    assert problem.field == "model" and "not available" in problem.message and "tiny-llama" in problem.message


def test_the_seed_example_runs_unchanged_with_stand_in_llama2_weights_in_the_hf_cache(e2e_home, tmp_path):
    # Llama-2-7b cannot be downloaded here: a tiny Llama stands in for it at its Hugging Face cache path.
    import os

    from tunedeck import foundation_model as fm

    snapshot = Path(os.environ["HF_HUB_CACHE"]) / "models--meta-llama--Llama-2-7b-chat-hf" / "snapshots" / "0123abc"
    shutil.copytree(e2e_home / "models" / "tiny-llama", snapshot)
    write_jsonl(local_path("dbfs:/Volumes/main/mydirectory/ift/train.jsonl"),
                [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]} for p, r in PAIRS])
    run = seed_example()
    assert run.task_type == "CHAT_COMPLETION" and run.training_duration is None
    events = fm.get_events(run, follow=True)
    assert events[-1].type == "COMPLETED", events[-1].message
    run = fm.get(run)
    assert run.registered_model_name == f"main.mydirectory.{run.name}"
    assert run.name.startswith("llama-2-7b-chat-hf-")
