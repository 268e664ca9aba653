"""FSDP2 sharding (training/sharding.py): 2 ranks under torchrun (gloo on CPU), launched as the service does.

The same tiny run trains with 1 process and with 2 sharded processes and gives the same loss curve; its
checkpoints hold consolidated Hugging Face weights plus the optimizer's shards written with
torch.distributed.checkpoint, so a run saved at 2 processes continues at 1 and one saved at 1 continues
at 2, the continued steps' losses those of the uninterrupted run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tunedeck.training.checkpoint import OPTIMIZER_DCP, TRAINER_STATE, latest_resume_point, resume_info
from tunedeck.training.distributed import TEST_FAIL_RANK
from tunedeck.training.sharding import SHARDING

from .conftest import PAIRS, events, jsonl_source, run_in_process, write_jsonl
from .test_distributed import Launched, _spec
from .test_resume import run_stopped_at, train_losses

pytestmark = pytest.mark.e2e

# 1 process vs 2 FSDP ranks: the same rows and normalization per step; gradients differ by float32
# summation order (FSDP reduce-scatters the ranks' partial gradients). The issue's target is 1e-3.
LOSS_RTOL = 1e-3


def _with_eval(spec: Any, tmp: Path) -> Any:
    """``spec`` with eval data and an eval prompt: under FSDP every rank evaluates, rank 0 reports."""
    spec.eval_data = jsonl_source(write_jsonl(tmp / "data" / "eval.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS]))
    spec.eval_prompts = [PAIRS[0][0]]
    spec.save(Path(spec.run_dir) / "spec.json")
    return spec


def _metric(reports: list[dict[str, Any]], name: str) -> dict[int, float]:
    return {r["step"]: r["values"][name] for r in reports if r["kind"] == "metrics" and name in r["values"]}


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_model) -> dict[str, Any]:
    """The uninterrupted 1-process run (20 steps): the reference every test here compares with."""
    tmp = tmp_path_factory.mktemp("single")
    started = time.monotonic()
    result, reports = run_in_process(_with_eval(_spec(tmp, tiny_model, "one"), tmp))
    assert len(result.losses) == 20
    return {"losses": train_losses(reports), "eval": _metric(reports, "eval/loss"), "reports": reports,
            "seconds": time.monotonic() - started}


def _seconds_per_step(reports: list[dict[str, Any]]) -> float:
    """Median seconds of an optimizer step (tokens / tokens per second of each step)."""
    import statistics

    tps = _metric(reports, "train/tokens_per_second")
    init = next(r["data"] for r in reports if r["kind"] == "event" and r["type"] == "MODEL_INITIALIZED")
    return statistics.median(init["tokens_per_step"] / v for v in tps.values())


def _worst(reference: dict[int, float], other: dict[int, float]) -> float:
    return max(abs(reference[s] - other[s]) / abs(reference[s]) for s in other)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_two_sharded_processes_train_like_one(tmp_path, tiny_model, single, monkeypatch):
    monkeypatch.setenv(SHARDING, "fsdp")
    spec = _with_eval(_spec(tmp_path, tiny_model, "fsdp"), tmp_path)
    started = time.monotonic()
    run = Launched(spec.run_dir, 2)
    ex = run.wait(240)
    seconds = time.monotonic() - started
    assert ex.returncode == 0 and ex.failure is None, run.log()
    init = next(r["data"] for r in run.reports if r["kind"] == "event" and r["type"] == "MODEL_INITIALIZED")
    assert init["sharding"] == "fsdp" and init["processes"] == 2, init
    assert "FSDP (sharded)" in next(r["message"] for r in run.reports if r.get("type") == "MODEL_INITIALIZED")

    losses = run.losses()
    assert sorted(losses) == list(range(1, 21))
    worst = _worst(single["losses"], losses)
    print(f"\nFSDP: max relative loss difference 1 vs 2 processes over 20 steps: {worst:.2e}; "
          f"wall time {single['seconds']:.1f} s vs {seconds:.1f} s; seconds per step (median) "
          f"{_seconds_per_step(single['reports']):.3f} vs {_seconds_per_step(run.reports):.3f}")
    assert worst <= LOSS_RTOL, (single["losses"], losses)
    # eval loss and generations at each checkpoint: every rank computed them (sharded weights), rank 0 reported
    evals = _metric(run.reports, "eval/loss")
    assert sorted(evals) == sorted(single["eval"]) and len(evals) >= 2, (evals, single["eval"])
    assert _worst(single["eval"], evals) <= LOSS_RTOL, (single["eval"], evals)
    generated = [r["data"]["generations"] for r in run.reports if r.get("type") == "EVAL_GENERATIONS"]
    assert len(generated) == len(evals) and all(g[0]["prompt"] == PAIRS[0][0] for g in generated)
    assert losses[20] < losses[1] * 0.75  # it learns
    assert run.events().count("MODEL_REGISTERED") == 1 and "failure" not in [r["kind"] for r in run.reports]

    # The last checkpoint: consolidated HF weights (a custom_weights_path), the optimizer in 2 DCP shards.
    run_dir = Path(spec.run_dir)
    point = latest_resume_point(run_dir)
    assert point is not None and resume_info(point)["step"] == 20
    shards = sorted(p.name for p in (point / OPTIMIZER_DCP).iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"], shards
    assert torch.load(point / TRAINER_STATE, weights_only=True)["optimizer"] == OPTIMIZER_DCP
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(point)
    exported = _weights(run_dir / "model")
    assert not (run_dir / "model" / OPTIMIZER_DCP).exists()  # the export is the weights alone
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, exported[name]), name  # whole tensors, not one rank's shard
    assert sum(t.numel() for t in exported.values()) == sum(p.numel() for p in loaded.parameters())


def test_a_sharded_run_continues_at_one_process_and_back(tmp_path, tiny_model, single, monkeypatch):
    """Saved at 2 FSDP ranks (a resume snapshot), resumed at 1; saved at 1 (a checkpoint), resumed at
    2 FSDP ranks: the continued steps' losses are the uninterrupted run's."""
    monkeypatch.setenv(SHARDING, "fsdp")

    # 2 -> 1: a 2-rank run taking a resume snapshot after every step (sharded too), cancelled once
    # step 8 is reported (so step 7's snapshot is whole), continued in one process from that snapshot
    spec = _spec(tmp_path, tiny_model, "two-then-one")
    spec.resume_every_seconds = 0.01
    spec.save(Path(spec.run_dir) / "spec.json")
    run = Launched(spec.run_dir, 2)
    deadline = time.monotonic() + 240
    while 8 not in run.losses() and run.exit is None and time.monotonic() < deadline:
        time.sleep(0.05)
    run.worker.cancel()
    assert run.wait(30).cancelled, run.log()
    point = latest_resume_point(spec.run_dir)
    assert point is not None and (point / OPTIMIZER_DCP / ".metadata").is_file(), run.log()
    done = resume_info(point)["step"]
    assert 7 <= done < 20 and (point.name == "resume" or done in (12, 15)), point
    spec.resume_from, spec.resume_every_seconds = str(point), None
    spec.save(Path(spec.run_dir) / "spec.json")
    result, reports = run_in_process(spec)
    again = train_losses(reports)
    assert sorted(again) == list(range(done + 1, 21))
    worst = _worst(single["losses"], again)
    print(f"\n2 -> 1 process from step {done}: max relative loss difference {worst:.2e}")
    assert worst <= LOSS_RTOL, (single["losses"], again)
    assert events(reports, "TRAIN_RESUMED")[0]["data"]["step"] == done
    assert len(result.losses) == 20

    # 1 -> 2: a 1-process run stopped at step 7, continued by 2 FSDP ranks
    spec = _spec(tmp_path, tiny_model, "one-then-two")
    run_stopped_at(spec, 7)
    point = latest_resume_point(spec.run_dir)
    assert point is not None and not (point / OPTIMIZER_DCP).exists()  # a whole optimizer state in trainer_state.pt
    done = resume_info(point)["step"]
    spec.resume_from = str(point)
    spec.save(Path(spec.run_dir) / "spec.json")
    run = Launched(spec.run_dir, 2)
    ex = run.wait(240)
    assert ex.returncode == 0 and ex.failure is None, run.log()
    again = run.losses()
    assert sorted(again) == list(range(done + 1, 21))
    worst = _worst(single["losses"], again)
    print(f"1 -> 2 processes from step {done}: max relative loss difference {worst:.2e}")
    assert worst <= LOSS_RTOL, (single["losses"], again)
    assert "TRAIN_RESUMED" in run.events()


def test_fsdp_with_lora_is_refused_and_a_bad_setting_named(tmp_path, tiny_model, monkeypatch):
    from tunedeck.inputs.params import parse_adapter

    monkeypatch.setenv(SHARDING, "fsdp")
    spec = _spec(tmp_path, tiny_model, "lora", duration="2ba")
    spec.adapter = parse_adapter({"rank": 4})
    spec.save(Path(spec.run_dir) / "spec.json")
    run = Launched(spec.run_dir, 2)
    ex = run.wait(120)
    assert ex.returncode != 0
    assert ex.failure is not None and "LoRA runs train with DDP" in ex.failure and SHARDING in ex.failure, (ex, run.log())

    monkeypatch.setenv(SHARDING, "zero3")
    from tunedeck.training.failures import TrainingFailure

    with pytest.raises(TrainingFailure, match="TUNEDECK_SHARDING='zero3': expected one of auto, ddp, fsdp"):
        run_in_process(_spec(tmp_path, tiny_model, "bad", duration="2ba"))


def test_a_failing_rank_fails_the_sharded_run_with_its_reason(tmp_path, tiny_model, monkeypatch):
    """Rank 1 fails at step 2 (distributed.test_hook) while rank 0 waits in FSDP's all-gather."""
    monkeypatch.setenv(SHARDING, "fsdp")
    monkeypatch.setenv(TEST_FAIL_RANK, "1")
    run = Launched(_spec(tmp_path, tiny_model, "fail", duration="5ba").run_dir, 2)
    ex = run.wait(120)
    assert ex.returncode != 0 and not ex.cancelled, run.log()
    assert ex.failure == f"rank 1 of 2: test failure injected on rank 1 ({TEST_FAIL_RANK})", (ex, run.log())
    assert "MODEL_REGISTERED" not in run.events()


def test_auto_shards_when_replicas_do_not_fit_and_only_then(tmp_path, monkeypatch):
    """The worker's memory plan (training/memory_plan.py) decides TUNEDECK_SHARDING=auto: 2 replicas of
    a 58M-parameter Llama (full fine-tuning, 16 bytes a parameter each) do not fit where 2 halves do."""
    import json

    from tunedeck.inputs.params import parse_adapter
    from tunedeck.training.failures import TrainingFailure
    from tunedeck.training.memory_plan import fit_run

    folder = tmp_path / "llama-58m-config-only"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8,
        "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
    }))
    common: dict[str, Any] = dict(adapter=None, autocast=False, context_length=256, row_tokens=256,
                                  device=torch.device("cpu"), micro_batch_tokens=256, dense_mask=True, processes=2)
    monkeypatch.setenv("TUNEDECK_MEMORY_LIMIT", "6GiB")  # replicas need ~4 GiB with the runtime (the machine must have it free)
    roomy = fit_run(folder, sharding="auto", **common)
    assert not roomy.sharded  # replicas fit: DDP, as before
    replicas, halves = fit_run(folder, sharding="ddp", **common), fit_run(folder, sharding="fsdp", **common)
    assert halves.sharded and replicas.plan is not None and halves.plan is not None
    assert halves.plan.breakdown["weights"] * 2 == pytest.approx(replicas.plan.breakdown["weights"], rel=1e-6)

    between = (replicas.plan.needed + halves.plan.needed) / 2 / 0.9  # the plan uses 90% of the budget
    monkeypatch.setenv("TUNEDECK_MEMORY_LIMIT", str(int(between)))
    tight = fit_run(folder, sharding="auto", **common)
    assert tight.sharded and "sharded over 2 processes (FSDP)" in tight.describe()
    with pytest.raises(TrainingFailure, match="this run's 2 processes need"):
        fit_run(folder, sharding="ddp", **common)  # DDP asked for: refused, as before
    lora = fit_run(folder, **{**common, "adapter": parse_adapter("lora")}, sharding="auto")
    assert not lora.sharded  # LoRA never shards
    assert not fit_run(folder, sharding="auto", **{**common, "processes": 1}).sharded  # one process: nothing to shard


ACTIVATION_CHECKPOINTING = '''
import sys, torch
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer
from tunedeck.training import distributed, sharding
from tunedeck.training.failures import StopSignal
from tunedeck.training.models import Device
from tunedeck.training.tokenize import Tokenized

world = distributed.world_from_env()
distributed.init(world)
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
ids = tokenizer("What is the capital of France? Paris. Say hello. Hello there!")["input_ids"]
results = []
for checkpointing in (False, True):
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
    model.config.use_cache = False
    if checkpointing:  # what the recipe does when the memory plan asks for it, before sharding
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    root = sharding.shard(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    rows = [[Tokenized(ids, ids)] for _ in range(3)]
    results.append([sharding.step(root, optimizer, rows, 512, 0, Device(torch.device("cpu"), None), StopSignal(),
                                  "dense", world, 1.0) for _ in range(3)])
if world.main:
    print("RESULTS", results)
distributed.close(world)
'''


def test_activation_checkpointing_under_fsdp_changes_nothing(tmp_path, tiny_model):
    """The memory plan may turn activation checkpointing on (transformers' own, non-reentrant): under
    FSDP it recomputes each layer in backward (all-gathering its weights again) to the same result."""
    import ast
    import subprocess
    import sys

    script = tmp_path / "checkpointing.py"
    script.write_text(ACTIVATION_CHECKPOINTING)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script), str(tiny_model)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULTS"))
    plain, recomputed = ast.literal_eval(line.removeprefix("RESULTS "))
    assert plain[-1][0] < plain[0][0]  # it trains
    for (loss_a, tokens_a, norm_a), (loss_b, tokens_b, norm_b) in zip(plain, recomputed, strict=True):
        assert tokens_a == tokens_b and loss_b == pytest.approx(loss_a, rel=1e-6) and norm_b == pytest.approx(norm_a, rel=1e-5)
