"""The memory estimate and plan: parameter counts, the plan's choices, the refusal and its wording."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunedeck.inputs import memory
from tunedeck.inputs.memory import GIB, MIB, MemoryShortfall, ModelShape, estimate, plan_memory

LLAMA_7B = dict(model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False, max_position_embeddings=4096)
SMOLLM2 = dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True, max_position_embeddings=8192)


@pytest.fixture(autouse=True)
def no_limit(monkeypatch):
    monkeypatch.delenv("TUNEDECK_MEMORY_LIMIT", raising=False)


# --- parameters ---------------------------------------------------------------------------------


CONFIGS = {
    "llama-gqa-untied": ("LlamaConfig", dict(vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=3,
                                             num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=False)),
    "llama-tied-biases": ("LlamaConfig", dict(vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                                              num_attention_heads=4, tie_word_embeddings=True, attention_bias=True, mlp_bias=True)),
    "mistral-head-dim": ("MistralConfig", dict(vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                                               num_attention_heads=8, num_key_value_heads=2, head_dim=64)),
    "qwen2-qkv-bias": ("Qwen2Config", dict(vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                                           num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen3-qk-norm": ("Qwen3Config", dict(vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                                          num_attention_heads=8, num_key_value_heads=2, head_dim=64)),
    "mixtral-experts": ("MixtralConfig", dict(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                              num_attention_heads=4, num_key_value_heads=2, num_local_experts=4)),
    "smollm2-135m": ("LlamaConfig", {k: v for k, v in SMOLLM2.items() if k != "model_type"}),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_count_from_the_config_matches_the_built_model(name):
    import torch
    import transformers

    class_name, kwargs = CONFIGS[name]
    config = getattr(transformers, class_name)(**kwargs)
    with torch.device("meta"):  # no memory, no init: just the parameters' shapes
        model = transformers.AutoModelForCausalLM.from_config(config)
    shape = ModelShape.from_config(config.to_dict())
    assert shape.exact
    assert shape.parameters == sum(p.numel() for p in model.parameters())
    assert shape.largest_tensor == max(p.numel() for p in model.parameters())


def test_smollm2_has_its_published_parameter_count():
    assert ModelShape.from_config(SMOLLM2).parameters == 134_515_008


def test_lora_parameters_match_peft():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    kwargs = CONFIGS["llama-gqa-untied"][1]
    # tunedeck's target_modules: None = every linear layer but the head, "attention" = q/k/v/o, or names
    for modules, adapter_modules in ((["q_proj", "k_proj", "v_proj", "o_proj"], "attention"), ("all-linear", None),
                                     (["q_proj", "v_proj"], ["q_proj", "v_proj"])):
        with torch.device("meta"):
            model = get_peft_model(LlamaForCausalLM(LlamaConfig(**kwargs)), LoraConfig(r=8, target_modules=modules))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        adapter = {"type": "lora", "rank": 8, "target_modules": adapter_modules}
        assert ModelShape.from_config({"model_type": "llama", **kwargs}).lora_parameters(adapter) == trainable


def test_from_folder_counts_the_safetensors_of_an_unknown_architecture(tmp_path):
    import torch
    from safetensors.torch import save_file

    tensors = {"wte.weight": torch.zeros(100, 16), "h.0.attn.c_attn.weight": torch.zeros(16, 48), "h.0.ln.bias": torch.zeros(16)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mystery", "n_embd": 16, "n_layer": 1, "n_head": 2, "vocab_size": 100}))
    shape = ModelShape.from_folder(tmp_path)
    assert not ModelShape.from_config(json.loads((tmp_path / "config.json").read_text())).exact
    assert shape.exact and shape.parameters == 100 * 16 + 16 * 48 + 16 and shape.largest_tensor == 1600
    assert (shape.hidden_size, shape.layers, shape.heads) == (16, 1, 2)
    assert ModelShape.from_folder(tmp_path / "missing") is None


def test_from_folder_of_a_tiny_model_equals_its_loaded_parameters(tmp_path):
    from transformers import AutoModelForCausalLM

    from tunedeck.training.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny", ["hello there"])
    model = AutoModelForCausalLM.from_pretrained(folder)
    shape = ModelShape.from_folder(folder)
    assert shape.parameters == sum(p.numel() for p in model.parameters())
    assert ModelShape.from_config(json.loads((folder / "config.json").read_text())).parameters == shape.parameters


# --- the estimate -------------------------------------------------------------------------------


def test_estimate_breakdown_of_full_fine_tuning_and_lora():
    shape = ModelShape.from_config(LLAMA_7B)
    full = estimate(shape, micro_batch_tokens=1024, row_tokens=256)
    assert full.parts["weights"] == full.parts["gradients"] == 4 * shape.parameters
    assert full.parts["optimizer"] == 8 * shape.parameters
    assert full.total > 16 * shape.parameters
    lora = estimate(shape, micro_batch_tokens=1024, row_tokens=256, adapter=memory.DEFAULT_LORA, autocast=True, checkpointing=True)
    assert lora.parts["weights"] < 2.1 * shape.parameters  # bf16 base + float32 adapters
    assert lora.parts["optimizer"] == 8 * shape.lora_parameters(memory.DEFAULT_LORA) < 0.01 * full.parts["optimizer"]
    assert lora.total < full.total / 4
    assert "weights 12.7 GiB" in lora.describe()  # every linear layer adapted: 40M float32 adapter weights


def test_estimate_grows_with_tokens_and_shrinks_with_checkpointing():
    shape = ModelShape.from_config(SMOLLM2)
    sizes = [estimate(shape, micro_batch_tokens=m, row_tokens=256).total for m in (256, 512, 1024)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    plain = estimate(shape, micro_batch_tokens=1024, row_tokens=8192)
    checkpointed = estimate(shape, micro_batch_tokens=1024, row_tokens=8192, checkpointing=True)
    assert plain.parts["activations"] > 2 * checkpointed.parts["activations"]
    # a long row counts whole: a micro-batch is never smaller than its longest row
    assert plain.total > estimate(shape, micro_batch_tokens=1024, row_tokens=1024).total


def test_the_chunked_loss_keeps_the_logits_small():
    shape = ModelShape.from_config({**SMOLLM2, "vocab_size": 151936})
    lora = memory.DEFAULT_LORA  # a frozen head: the loss holds no gradient of its weight
    chunked = estimate(shape, micro_batch_tokens=1024, adapter=lora)
    whole = estimate(shape, micro_batch_tokens=1024, adapter=lora, chunked_loss=False)
    assert whole.parts["logits"] > 2 * GIB > 10 * chunked.parts["logits"]


# --- the plan -----------------------------------------------------------------------------------


def test_plan_takes_the_default_micro_batch_without_checkpointing_when_memory_is_plenty():
    plan = plan_memory(ModelShape.from_config(SMOLLM2), context_length=8192, row_tokens=512, available=64 * GIB)
    assert not plan.activation_checkpointing and plan.micro_batch_tokens == 1024
    assert plan.needed < 0.9 * plan.available and plan.breakdown["weights"] == 4 * 134_515_008
    assert "micro-batches of 1,024 tokens" in plan.describe()


def test_plan_switches_checkpointing_on_only_when_nothing_else_fits():
    shape = ModelShape.from_config(SMOLLM2)

    def total(micro: int, row: int, ckpt: bool) -> int:
        return estimate(shape, micro_batch_tokens=micro, row_tokens=row, checkpointing=ckpt).total

    # room for 512-token micro-batches but not 1,024: smaller micro-batches, no checkpointing
    available = int(total(512, 256, False) / memory.SAFETY) + 1
    assert total(1024, 256, False) > memory.SAFETY * available
    plan = plan_memory(shape, context_length=256, available=available)
    assert (plan.activation_checkpointing, plan.micro_batch_tokens) == (False, 512)
    # rows of 4,096 tokens (a long example trains alone): only checkpointing fits, at the default micro-batch
    available = int(total(1024, 4096, True) / memory.SAFETY) + 1
    assert total(256, 4096, False) > memory.SAFETY * available
    plan = plan_memory(shape, context_length=8192, row_tokens=4096, available=available)
    assert (plan.activation_checkpointing, plan.micro_batch_tokens) == (True, 1024)
    assert plan.needed == total(1024, 4096, True)


def test_plan_never_goes_above_the_default_micro_batch():
    plan = plan_memory(ModelShape.from_config(SMOLLM2), context_length=256, available=1 << 50, micro_batch_tokens=512)
    assert plan.micro_batch_tokens == 512
    assert memory.micro_batch_candidates(1024) == [1024, 512, 256]
    assert memory.micro_batch_candidates(16384)[-1] == 256


def test_a_shortfall_says_what_it_needs_what_there_is_and_what_would_fit():
    shape = ModelShape.from_config(LLAMA_7B)
    with pytest.raises(MemoryShortfall) as caught:
        plan_memory(shape, context_length=4096, available=int(21.4 * GIB))
    error = caught.value
    message = str(error)
    assert isinstance(error, ValueError) and error.needed > error.available
    assert message.startswith("this run needs ~") and "weights 25.1 GiB" in message and "21.4 GiB is available" in message
    assert "adapter='lora'" in message
    assert error.suggestions
    assert "of which a run may plan 19.3 GiB (90%" in message  # why a need just under what is free is refused


def test_a_shortfall_suggests_a_shorter_context_when_that_is_what_fits():
    shape = ModelShape.from_config(SMOLLM2)
    lora = memory.DEFAULT_LORA
    long_rows = estimate(shape, micro_batch_tokens=256, row_tokens=8192, checkpointing=True, adapter=lora).total
    short_rows = estimate(shape, micro_batch_tokens=256, row_tokens=2048, checkpointing=True, adapter=lora).total
    available = int((long_rows + short_rows) / 2 / memory.SAFETY)
    with pytest.raises(MemoryShortfall) as caught:
        plan_memory(shape, context_length=8192, adapter=memory.DEFAULT_LORA, available=available)
    assert "context_length=" in str(caught.value)
    number = int(str(caught.value).split("context_length=")[1].split(" ")[0].replace(",", ""))
    assert 2048 <= number < 8192


def test_nothing_fits_when_the_weights_alone_do_not():
    shape = ModelShape.from_config({**LLAMA_7B, "num_hidden_layers": 80, "hidden_size": 8192, "intermediate_size": 28672})
    with pytest.raises(MemoryShortfall, match="No setting fits: the weights alone take .* smaller model"):
        plan_memory(shape, context_length=4096, available=24 * GIB)


def test_resident_memory_counts_against_the_runtime_part():
    shape = ModelShape.from_config(SMOLLM2)
    plain = plan_memory(shape, context_length=256, available=64 * GIB)
    credited = plan_memory(shape, context_length=256, available=64 * GIB, resident=10 * GIB)
    assert credited.available == plain.available + memory.RUNTIME_BYTES["cpu"]


# --- the machine --------------------------------------------------------------------------------


@pytest.fixture
def fake_machine(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24683556 kB\nMemFree:        10000000 kB\nMemAvailable:   20000000 kB\n")
    monkeypatch.setattr(memory, "PROC_MEMINFO", meminfo)
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    monkeypatch.setattr(memory, "CGROUP_ROOT", cgroup)
    return cgroup


def test_available_memory_is_meminfo_without_a_cgroup_limit(fake_machine):
    assert memory.available_memory() == 20000000 * 1024
    (fake_machine / "memory.max").write_text("max\n")  # cgroup v2 without a limit
    (fake_machine / "memory.current").write_text(str(5 * GIB))
    assert memory.available_memory() == 20000000 * 1024


def test_available_memory_honours_a_cgroup_v2_limit(fake_machine):
    (fake_machine / "memory.max").write_text(str(8 * GIB))
    (fake_machine / "memory.current").write_text(str(5 * GIB))
    (fake_machine / "memory.stat").write_text(f"anon 1\ninactive_file {1 * GIB}\n")
    assert memory.available_memory() == 4 * GIB  # 8 - (5 - 1 reclaimable page cache)


def test_available_memory_honours_a_cgroup_v1_limit(fake_machine):
    v1 = fake_machine / "memory"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text(str(6 * GIB))
    (v1 / "memory.usage_in_bytes").write_text(str(3 * GIB))
    assert memory.available_memory() == 3 * GIB
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712")  # v1's "no limit"
    assert memory.available_memory() == 20000000 * 1024


def test_tunedeck_memory_limit_caps_what_is_available(fake_machine, monkeypatch):
    monkeypatch.setenv("TUNEDECK_MEMORY_LIMIT", "2GiB")
    assert memory.available_memory() == 2 * GIB
    with pytest.raises(MemoryShortfall, match=r"2\.0 GiB is available \(TUNEDECK_MEMORY_LIMIT\)"):
        plan_memory(ModelShape.from_config(SMOLLM2), context_length=256, available=64 * GIB)


@pytest.mark.parametrize("text,value", [("16GiB", 16 * GIB), ("16g", 16 * GIB), ("512 MiB", 512 * MIB), ("1.5GB", int(1.5 * GIB)),
                                        ("17179869184", 17179869184)])
def test_parse_bytes(text, value):
    assert memory.parse_bytes(text) == value


@pytest.mark.parametrize("text", ["lots", "-1G", "16 parsecs", "0"])
def test_parse_bytes_rejects_nonsense(text):
    with pytest.raises(ValueError, match="amount of memory"):
        memory.parse_bytes(text)


def test_the_memory_module_does_not_import_torch():
    code = ("import sys, tunedeck, tunedeck.inputs.memory as m, tunedeck.inputs.validate;"
            "m.plan_memory(m.ModelShape.from_config({'hidden_size': 64, 'num_hidden_layers': 2, 'vocab_size': 100}), context_length=64, available=1 << 40);"
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- create() -----------------------------------------------------------------------------------


@pytest.fixture
def seven_b(home, tmp_path):
    """A model folder whose config is Llama-2-7B's (the weights file is a stand-in: nothing loads it)."""
    folder = home / "models" / "llama-7b"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(LLAMA_7B))
    (folder / "model.safetensors").write_bytes(b"")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"question {i}", "response": f"answer {i}"}) + "\n" for i in range(4)))
    return "llama-7b", str(data)


def request(model: str, data: str, **kw):
    from tunedeck.inputs.validate import RunRequest

    return RunRequest(model=model, train_data_path=data, register_to="main.tests", task_type="INSTRUCTION_FINETUNE", **kw)


def test_create_refuses_a_run_that_cannot_fit_and_says_what_would(seven_b, monkeypatch):
    from tunedeck.inputs.validate import build_spec

    monkeypatch.setattr(memory, "available_memory", lambda: 64 << 30)  # whatever this machine has free now
    monkeypatch.setenv("TUNEDECK_MEMORY_LIMIT", "24GiB")
    spec, problems = build_spec(request(*seven_b), "run-1")
    assert spec is None and [p.field for p in problems] == ["model"]
    message = problems[0].message
    assert "needs ~" in message and "24.0 GiB is available (TUNEDECK_MEMORY_LIMIT)" in message
    assert "adapter='lora'" in message
    # LoRA fits (bf16 base: TUNEDECK_PRECISION=auto may pick bf16; the worker checks again)
    spec, problems = build_spec(request(*seven_b, adapter="lora", context_length=2048), "run-2")
    assert problems == [] and spec is not None
    # ... and computing in float32 too: the frozen base is then held in bf16 (frozen_base.py)
    monkeypatch.setenv("TUNEDECK_PRECISION", "fp32")
    spec, problems = build_spec(request(*seven_b, adapter="lora", context_length=2048), "run-3")
    assert problems == [] and spec is not None
    # ... but not on a 12 GiB machine
    monkeypatch.setenv("TUNEDECK_MEMORY_LIMIT", "12GiB")
    spec, problems = build_spec(request(*seven_b, adapter="lora", context_length=2048), "run-4")
    assert spec is None and "needs ~" in problems[0].message


def test_create_accepts_what_fits_and_the_launch_does_not_recheck(seven_b, monkeypatch):
    from tunedeck.inputs.validate import build_spec

    monkeypatch.setenv("TUNEDECK_MEMORY_LIMIT", "1TiB")
    monkeypatch.setattr(memory, "available_memory", lambda: 1 << 40)
    spec, problems = build_spec(request(*seven_b), "run-1")
    assert problems == [] and spec is not None
    monkeypatch.setenv("TUNEDECK_MEMORY_LIMIT", "1GiB")
    assert build_spec(request(*seven_b), "run-1", check_data=False)[1] == []


def test_the_service_stores_nothing_for_a_refused_run(seven_b, home, monkeypatch):
    from tunedeck import InvalidInputError
    from tunedeck.service.core import RunService
    from tunedeck.service.store import Store

    monkeypatch.setenv("TUNEDECK_MEMORY_LIMIT", "16GiB")
    home.mkdir(parents=True, exist_ok=True)
    service = RunService(Store(home / "t.db"), max_concurrent=0)
    with pytest.raises(InvalidInputError) as err:
        service.create(request(*seven_b))
    assert [p.field for p in err.value.problems] == ["model"] and "needs ~" in str(err.value)
    assert service.list() == []


def test_a_lora_checkpoint_as_custom_weights_is_planned_as_lora(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16, "lora_dropout": 0.1,
                                                               "target_modules": ["v_proj", "q_proj"]}))
    adapter = memory.checkpoint_adapter(tmp_path)
    assert adapter["rank"] == 8 and sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    assert memory.checkpoint_adapter(tmp_path / "nothing") is None


# --- several processes (num_devices) ---------------------------------------------------------------


def test_processes_on_cpu_share_the_memory_and_on_gpus_each_has_its_own():
    shape = ModelShape.from_config(SMOLLM2)
    one = plan_memory(shape, context_length=1024, available=1 << 40)
    two = plan_memory(shape, context_length=1024, available=1 << 40, processes=2)
    alone = estimate(shape, micro_batch_tokens=one.micro_batch_tokens, row_tokens=1024)
    replica = estimate(shape, micro_batch_tokens=two.micro_batch_tokens, row_tokens=1024, processes=2)
    assert "ddp buckets" not in alone.parts and replica.parts["ddp buckets"] == replica.parts["gradients"]
    assert replica.total > alone.total
    assert one.needed == alone.total and two.needed == 2 * replica.total + memory.LAUNCHER_BYTES
    # a budget one process fits in and two do not
    budget = int((one.needed + two.needed) / 2 / memory.SAFETY)
    plan_memory(shape, context_length=1024, available=budget, micro_batch_tokens=one.micro_batch_tokens)
    with pytest.raises(MemoryShortfall) as err:
        plan_memory(shape, context_length=1024, available=budget, micro_batch_tokens=256, processes=2)
    assert err.value.needed > memory.SAFETY * budget and "this run's 2 processes need ~" in str(err.value)
    assert "they share this machine's memory" in str(err.value)
    # on GPUs: one process against one GPU's free memory, whatever the number of processes
    gpu = plan_memory(shape, context_length=1024, device="cuda", available=40 * GIB, processes=4)
    gpu_replica = estimate(shape, micro_batch_tokens=gpu.micro_batch_tokens, row_tokens=1024, device="cuda", processes=4)
    assert gpu.needed == gpu_replica.total


def test_create_refuses_processes_that_do_not_fit_together_naming_num_devices(seven_b, home, monkeypatch):
    from tunedeck.inputs import params
    from tunedeck.inputs.validate import Devices, build_spec

    monkeypatch.setattr(memory, "available_memory", lambda: 1 << 40)
    monkeypatch.setattr(memory, "gpu_free_memory", lambda include_pids=None: None)  # this machine's CPU, GPU or not

    def one_process_fits(limit_gib: int) -> bool:
        monkeypatch.setenv("TUNEDECK_MEMORY_LIMIT", f"{limit_gib}GiB")
        return memory.check_run(home / "models" / "llama-7b", context_length=2048, adapter=params.parse_adapter("lora")) is None

    limit = next(g for g in range(1, 200) if one_process_fits(g))  # the least a LoRA 7B process needs, in GiB
    devices = Devices(2, "2 CPU cores (0-1; test)")
    spec, problems = build_spec(request(*seven_b, adapter="lora", context_length=2048, num_devices=1), "one", devices=devices)
    assert problems == [] and spec is not None and spec.num_devices == 1
    spec, problems = build_spec(request(*seven_b, adapter="lora", context_length=2048, num_devices=2), "two", devices=devices)
    assert spec is None and [p.field for p in problems] == ["num_devices"]
    message = problems[0].message
    assert message.startswith("this run's 2 processes need ~") and f"{limit}.0 GiB is available (TUNEDECK_MEMORY_LIMIT)" in message
    assert message.endswith("One process (num_devices=1) would fit.")


def test_create_counts_fsdp_shards_when_replicas_do_not_fit(seven_b, home, monkeypatch):
    """Full fine-tuning over 2 processes: a memory limit 2 replicas (DDP) exceed and 2 shards (FSDP) fit
    is refused under TUNEDECK_SHARDING=ddp and accepted under auto (the default) and fsdp, as the
    worker's plan then shards it (training/memory_plan.py)."""
    from tunedeck.inputs.validate import Devices, build_spec

    monkeypatch.setattr(memory, "available_memory", lambda: 1 << 42)
    monkeypatch.setattr(memory, "gpu_free_memory", lambda include_pids=None: None)
    folder = home / "models" / "llama-7b"

    def fits(limit_gib: int, sharding: str) -> bool:
        monkeypatch.setenv("TUNEDECK_MEMORY_LIMIT", f"{limit_gib}GiB")
        return memory.check_run(folder, context_length=512, processes=2, sharding=sharding) is None

    sharded = next(g for g in range(8, 1000, 4) if fits(g, "fsdp"))
    replicas = next(g for g in range(sharded, 2000, 4) if fits(g, "ddp"))
    assert replicas > 1.5 * sharded  # a replica each costs far more than a shard each
    assert fits(sharded, "auto") and not fits(sharded, "ddp")
    devices = Devices(2, "2 CPU cores (0-1; test)")
    monkeypatch.setenv("TUNEDECK_MEMORY_LIMIT", f"{sharded}GiB")
    req = request(*seven_b, context_length=512, num_devices=2)
    for setting, refused in (("auto", False), ("fsdp", False), ("ddp", True)):
        monkeypatch.setenv("TUNEDECK_SHARDING", setting)
        _, problems = build_spec(req, f"run-{setting}", devices=devices)
        assert bool([p for p in problems if p.field in ("model", "num_devices")]) == refused, (setting, problems)
    monkeypatch.setenv("TUNEDECK_SHARDING", "zero3")
    _, problems = build_spec(req, "run-bad", devices=devices)
    assert [p.message for p in problems if p.field == "num_devices"] == [
        "TUNEDECK_SHARDING='zero3': expected one of auto, ddp, fsdp"]
