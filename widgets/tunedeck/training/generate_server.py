"""Try it, on the helper's side: answer a prompt with a checkpoint or a registered model version, streamed.

The service never imports this module (it would load torch and transformers into the service): it runs
``python -m tunedeck.training.generate_server --serve`` as a helper process (service/generate.py), one
at a time, and writes one JSON request a line to its stdin::

    {"model_path": "/.../checkpoints/ep1-ba10"        # a checkpoint folder (full weights or a LoRA adapter)
     "registered": {"name": "main.demo.run", "version": 1, "tracking_uri": "sqlite:///..."},   # or this
     "task_type": "CHAT_COMPLETION", "prompt": "...", "max_new_tokens": 128, "temperature": 0.0}

and reads its answer as JSON lines on stdout, each with an ``event``::

    {"event": "loading", "source": ...}                          only when the model is not loaded yet
    {"event": "loaded", "seconds": 1.2, "source": ..., "device": "cpu"}
    {"event": "text", "text": "Quillhaven "}                      as the tokens come (word by word)
    {"event": "done", "text": ..., "tokens": 7, "seconds": 0.1, "stopped": false}
    {"event": "error", "message": ...}                           instead of "done"

Any line written to stdin while an answer is being generated stops it at the next token (the answer
so far is reported with ``"stopped": true``). The model last used stays loaded, so the next prompt to
it answers at once; another source replaces it. The helper exits when its stdin closes (the service
is gone) or after ``--idle-exit`` seconds without a request.

The prompt is shaped as eval_prompts are at checkpoints (``tokenize.prompt_ids_for_generation``: a
user turn through the chat template for CHAT_COMPLETION, the raw text otherwise), so Try it and the
eval generations of a run agree. ``temperature`` 0 is greedy decoding (the model's most likely answer,
the same every time); above 0 it samples with top-k 50, top-p 0.95, as eval generations do.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from pathlib import Path
from typing import IO, Any

IDLE_EXIT_SECONDS = 300.0  # a helper with no request for this long exits, freeing the model's memory


class Lines:
    """JSON lines from a file descriptor, read without blocking past what select says is there."""

    def __init__(self, fd: int):
        self.fd = fd
        self.pending = b""
        self.closed = False

    def next(self, timeout: float | None) -> dict[str, Any] | None:
        """The next request (None when stdin closed or nothing came within ``timeout``)."""
        while b"\n" not in self.pending:
            if self.closed:
                return None
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                return None
            self._read()
        line, self.pending = self.pending.split(b"\n", 1)
        try:
            request = json.loads(line)
        except ValueError:
            request = None
        return request if isinstance(request, dict) else {"invalid": line[:200].decode(errors="replace")}

    def interrupted(self) -> bool:
        """True when something arrived (a stop line, or the end of stdin) since the last request."""
        if self.pending or self.closed:
            return True
        ready, _, _ = select.select([self.fd], [], [], 0)
        if ready:
            self._read()
        return bool(self.pending) or self.closed

    def _read(self) -> None:
        chunk = os.read(self.fd, 1 << 16)
        if chunk:
            self.pending += chunk
        else:
            self.closed = True


class Loaded:
    """The model last used, kept for the next prompt."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.device: Any = None

    def get(self, folder: Path, emit) -> tuple[Any, Any, Any]:
        key = (str(folder), _stamp(folder))
        if key != self.key:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            emit({"event": "loading", "source": str(folder)})
            self.key = self.model = self.tokenizer = None  # free the old one before loading the next
            started = time.monotonic()
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            tokenizer = AutoTokenizer.from_pretrained(folder)
            # A LoRA checkpoint (adapter_config.json) loads as base + adapter through PEFT in the same call.
            model = AutoModelForCausalLM.from_pretrained(folder).to(device)
            model.eval()
            self.key, self.model, self.tokenizer, self.device = key, model, tokenizer, device
            emit({"event": "loaded", "source": str(folder), "seconds": round(time.monotonic() - started, 3),
                  "device": device.type})
        return self.model, self.tokenizer, self.device


def registered_path(name: str, version: int | str, tracking_uri: str) -> Path:
    """The local folder of a registered model version (as tunedeck.registry.model_version_path, for a given store)."""
    import mlflow
    from mlflow import MlflowClient

    from tunedeck.training.tracking import quiet_mlflow_logs

    quiet_mlflow_logs()
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    source = client.get_model_version(name, str(version)).source
    mlflow.set_tracking_uri(tracking_uri)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=source))


def answer(request: dict[str, Any], loaded: Loaded, lines: Lines, emit) -> None:
    """Stream one answer (or an error) to ``emit``."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

    from tunedeck.training.tokenize import prompt_ids_for_generation

    registered = request.get("registered")
    if registered:
        key = (registered["name"], str(registered["version"]), registered["tracking_uri"])
        if key not in _REGISTERED:
            emit({"event": "loading", "source": f"registered {key[0]} version {key[1]}"})
            _REGISTERED[key] = registered_path(*key)
        folder = _REGISTERED[key]
    else:
        folder = Path(request["model_path"])
    model, tokenizer, device = loaded.get(folder, emit)
    started = time.monotonic()
    pieces: list[str] = []
    counted = [0]

    class Stream(TextStreamer):
        def put(self, value: Any) -> None:
            if self.skip_prompt and self.next_tokens_are_prompt:
                super().put(value)
                return
            counted[0] += int(value.numel())
            super().put(value)

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                pieces.append(text)
                emit({"event": "text", "text": text})

    class Interrupted(StoppingCriteria):
        hit = False

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            Interrupted.hit = Interrupted.hit or lines.interrupted()
            return torch.full((input_ids.shape[0],), Interrupted.hit, dtype=torch.bool, device=input_ids.device)

    ids = torch.tensor([prompt_ids_for_generation(tokenizer, request["prompt"], request.get("task_type", ""))], device=device)
    temperature = float(request.get("temperature") or 0.0)
    sampling: dict[str, Any] = (
        {"do_sample": True, "temperature": temperature, "top_k": 50, "top_p": 0.95}
        if temperature > 0 else {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
            max_new_tokens=int(request.get("max_new_tokens") or 128), use_cache=True,
            streamer=Stream(tokenizer, skip_prompt=True, skip_special_tokens=True),
            stopping_criteria=StoppingCriteriaList([Interrupted()]), **sampling,
        )
    emit({"event": "done", "text": "".join(pieces), "tokens": counted[0], "seconds": round(time.monotonic() - started, 3),
          "stopped": Interrupted.hit})


def serve(stdin: IO[bytes], stdout: IO[str], idle_exit: float = IDLE_EXIT_SECONDS) -> None:
    """Answer one request a line until stdin closes or no request comes for ``idle_exit`` seconds."""
    lines, loaded = Lines(stdin.fileno()), Loaded()

    def emit(event: dict[str, Any]) -> None:
        stdout.write(json.dumps(event) + "\n")
        stdout.flush()

    while True:
        request = lines.next(idle_exit)
        if request is None:
            return
        if "invalid" in request or "prompt" not in request:
            if "stop" not in request:  # a stop that came after its answer ended is no request
                emit({"event": "error", "message": "not a generation request"})
            continue
        try:
            answer(request, loaded, lines, emit)
        except Exception as error:  # noqa: BLE001 - the helper answers every request, and says why it could not
            detail = (str(error).strip().splitlines() or [""])[0][:500]
            emit({"event": "error", "message": f"{type(error).__name__}: {detail}"})


_REGISTERED: dict[tuple[str, str, str], Path] = {}  # a registered version's folder, once looked up


def _stamp(folder: Path) -> tuple:
    """Names, sizes and times of a folder's files: a checkpoint written again is loaded again."""
    try:
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))
    except OSError:
        return ()


def main(argv: list[str] | None = None) -> int:
    """``python -m tunedeck.training.generate_server --serve [--idle-exit SECONDS]``."""
    args = sys.argv[1:] if argv is None else argv
    idle = float(args[args.index("--idle-exit") + 1]) if "--idle-exit" in args else IDLE_EXIT_SECONDS
    # Answers go to the real stdout; anything a library prints goes to stderr instead of into the protocol.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, out, idle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
