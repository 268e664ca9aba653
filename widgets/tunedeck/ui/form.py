"""The training form: every create() parameter, checked as you type, with the equivalent code.

Built from standard ipywidgets, so its logic lives (and is tested) in Python: ``params()`` is exactly
what Start passes to ``fm.create()``, ``code()`` is that call as text, ``problems()`` are the checks
that need no service. Problems the service finds (``InvalidInputError.problems``) are shown next to
the field they name, never as a traceback. Start opens the new run's monitor below the form.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any

import anywidget
import ipywidgets as w
import traitlets

from tunedeck import foundation_model as fm
from tunedeck.errors import InvalidInputError, Problem
from tunedeck.inputs import params as checks
from tunedeck.types import LoRA, ModelInfo, TrainingRun
from tunedeck.ui import _snapshot, _static
from tunedeck.ui._datacheck import render_data_check
from tunedeck.ui.monitor import RunMonitor

#: create()'s parameters in the order the preview lists them.
PARAMETERS = (
    "model", "train_data_path", "register_to", "task_type", "eval_data_path", "eval_prompts",
    "custom_weights_path", "training_duration", "learning_rate", "context_length",
    "experiment_path", "data_prep_cluster_id", "validate_inputs", "adapter",
)
TASKS = (
    ("Chat completion", "CHAT_COMPLETION"),
    ("Instruction", "INSTRUCTION_FINETUNE"),
    ("Continued pretraining", "CONTINUED_PRETRAIN"),
)
UNITS = (("epochs", "ep"), ("batches", "ba"), ("tokens", "tok"))
METHODS = (("Full fine-tuning", "full"), ("LoRA", "lora"), ("QLoRA (4-bit, CUDA only)", "qlora"))
TARGETS = (("all linear layers", "all-linear"), ("attention projections", "attention"), ("these layers:", "custom"))
ADAPTER_FIELDS = ("adapter_rank", "adapter_alpha", "adapter_target_modules")
ADVANCED = (
    "adapter",
    *ADAPTER_FIELDS,
    "context_length",
    "custom_weights_path",
    "experiment_path",
    "data_prep_cluster_id",
    "validate_inputs",
)
EVALUATION = ("eval_data_path", "eval_prompts")
DOUBLE_CLICK_SECONDS = 1.0
LABEL_WIDTH = "120px"
INPUT_WIDTH = "440px"


class CodeBlock(anywidget.AnyWidget):
    """Read-only code with a Copy button."""

    _esm = _static.esm("code_block.js")
    _css = _static.css("common.css", "form.css")
    code = traitlets.Unicode("").tag(sync=True)
    title = traitlets.Unicode("Python").tag(sync=True)


class TrainingForm(_snapshot.SnapshotDisplay, w.VBox):
    """A form for ``fm.create()``; the monitors of the runs it starts appear below it."""

    def __init__(self, **defaults: Any):
        unknown = sorted(set(defaults) - set(PARAMETERS))
        if unknown:
            raise TypeError(f"form() got unknown parameter(s) {', '.join(unknown)}; it takes create()'s: {', '.join(PARAMETERS)}")
        self.run: TrainingRun | None = None
        self.monitor: RunMonitor | None = None
        self._strict = False  # "is required" shows only once Start was pressed
        self._started_at = -DOUBLE_CLICK_SECONDS
        self._server: dict[str, list[str]] = {}
        self._errors: dict[str, w.HTML] = {}
        self._models: dict[str, ModelInfo] = {}
        self._build(defaults)
        super().__init__(children=self._layout())
        self.add_class("td-form")
        for widget in self._inputs().values():
            widget.observe(self._on_change, names="value")
        self._refresh()

    # -- building ---------------------------------------------------------------------------------
    def _build(self, d: dict[str, Any]) -> None:
        models_error = None
        try:
            self._models = {m.name: m for m in fm.get_models()}
        except Exception as exc:  # noqa: BLE001 - shown next to the model field
            models_error = _snapshot.describe(exc)
        options = [(f"{m.name}  (max context {m.max_context_length:,})", m.name) for m in self._models.values()]
        model = d.get("model")
        if model and model not in self._models:
            options.append((f"{model}  (not in get_models())", model))
        text = dict(layout=w.Layout(width=INPUT_WIDTH))
        self.model_w = w.Dropdown(
            options=options, value=model or (options[0][1] if options else None), layout=w.Layout(width=INPUT_WIDTH)
        )
        self.model_help = w.HTML()
        task = str(d.get("task_type") or checks.DEFAULT_TASK_TYPE).upper()
        if task not in dict(TASKS).values():
            self._server["task_type"] = [f"{d['task_type']!r} is not a task type; showing the default"]
            task = checks.DEFAULT_TASK_TYPE
        self.task_w = w.ToggleButtons(options=TASKS, value=task, style={"button_width": "170px"})
        self.train_w = w.Text(
            value=d.get("train_data_path") or "",
            placeholder="train.jsonl, /Volumes/<catalog>/<schema>/<volume>/..., or org/dataset/split",
            **text,
        )
        self.check_w = w.Button(description="Check data", tooltip="rows, token counts and bad lines of the training data")
        self.check_w.on_click(lambda _: self.check_data())
        self.check_out = w.HTML()
        self.check_out.add_class("td-data-check")
        self.register_w = w.Text(
            value=d.get("register_to") or "", placeholder="catalog.schema  or  catalog.schema.model_name", **text
        )
        duration = _split_duration(d.get("training_duration"))
        self.duration_w = w.BoundedIntText(value=duration[0], min=1, max=10**15, layout=w.Layout(width="120px"))
        self.unit_w = w.Dropdown(options=UNITS, value=duration[1], layout=w.Layout(width="110px"))
        self.lr_w = w.Text(
            value="" if d.get("learning_rate") is None else str(d["learning_rate"]), layout=w.Layout(width="160px")
        )
        self.lr_help = w.HTML()
        self.eval_data_w = w.Text(
            value=d.get("eval_data_path") or "", placeholder="optional: held-out data in the same format", **text
        )
        prompts = d.get("eval_prompts") or []
        self.prompts_w = w.Textarea(
            value="\n".join([prompts] if isinstance(prompts, str) else prompts),
            placeholder="one prompt per line; generated at every checkpoint",
            rows=3,
            **text,
        )
        info = self._model_info()
        maximum = info.max_context_length if info else 1_000_000
        default_ctx = checks.default_context_length(maximum)
        try:
            ctx = checks.parse_context_length(d.get("context_length")) or default_ctx
        except ValueError as exc:
            self._server["context_length"] = [f"{exc}; showing the default"]
            ctx = default_ctx
        self._default_context = default_ctx
        self.context_w = w.BoundedIntText(value=ctx, min=8, max=maximum, layout=w.Layout(width="120px"))
        self.context_help = w.HTML()
        self.weights_w = w.Text(
            value=d.get("custom_weights_path") or "",
            placeholder="a checkpoint folder ep#-ba# or latest-sharded-rank0.symlink",
            **text,
        )
        self.experiment_w = w.Text(value=d.get("experiment_path") or "", placeholder="default: /Users/<you>/<run name>", **text)
        self.cluster_w = w.Text(value=d.get("data_prep_cluster_id") or "", placeholder="recorded; used for table inputs", **text)
        try:
            method, lora, modules = _adapter_fields(d.get("adapter"))
        except ValueError as exc:
            self._server["adapter"] = [f"{exc}; showing full fine-tuning"]
            method, lora, modules = "full", LoRA(), None
        self._dropout = lora.dropout  # not a field of its own: kept from form(adapter=...), shown in the preview
        self.method_w = w.ToggleButtons(options=METHODS, value=method, style={"button_width": "190px"})
        self.method_help = w.HTML()
        self.rank_w = w.Text(value=str(lora.rank), placeholder="16", layout=w.Layout(width="120px"))
        self.alpha_w = w.Text(value="" if lora.alpha is None else _number_text(lora.alpha), layout=w.Layout(width="120px"))
        self.alpha_help = w.HTML()
        target = "all-linear" if modules is None else ("attention" if modules == "attention" else "custom")
        self.targets_w = w.Dropdown(options=TARGETS, value=target, layout=w.Layout(width="200px"))
        custom = ", ".join(modules) if target == "custom" and isinstance(modules, list) else ""
        self.modules_w = w.Text(value=custom, placeholder="q_proj, v_proj",
                                layout=w.Layout(width="236px"))
        self.validate_w = w.Checkbox(
            value=bool(d.get("validate_inputs", True)), description="check paths, data and names before starting", indent=False
        )
        self.preview = CodeBlock(title="Python — the same run from code")
        self.start_w = w.Button(description="Start training", button_style="primary", icon="play")
        self.start_w.add_class("td-start")
        self.start_w.on_click(self._on_start_click)
        self.status_w = w.HTML()
        self.status_w.add_class("td-form-status")
        self.monitors = w.VBox()
        self.monitors.add_class("td-form-monitors")
        if models_error:
            self._server["model"] = [f"could not list models: {models_error}"]

    def _inputs(self) -> dict[str, w.Widget]:
        return {
            "model": self.model_w, "task_type": self.task_w, "train_data_path": self.train_w,
            "register_to": self.register_w, "training_duration": self.duration_w, "training_duration_unit": self.unit_w,
            "learning_rate": self.lr_w, "eval_data_path": self.eval_data_w, "eval_prompts": self.prompts_w,
            "context_length": self.context_w, "custom_weights_path": self.weights_w,
            "experiment_path": self.experiment_w, "data_prep_cluster_id": self.cluster_w, "validate_inputs": self.validate_w,
            "adapter": self.method_w, "adapter_rank": self.rank_w, "adapter_alpha": self.alpha_w,
            "adapter_target_modules": self.targets_w, "adapter_target_modules_list": self.modules_w,
        }

    def _row(self, field: str, label: str, *widgets: w.Widget, below: w.Widget | None = None) -> w.VBox:
        error = w.HTML()
        error.add_class("td-field-error")
        self._errors[field] = error
        parts: list[w.Widget] = [
            w.HBox([w.Label(label, layout=w.Layout(width=LABEL_WIDTH)), *widgets], layout=w.Layout(align_items="center"))
        ]
        if below is not None:
            parts.append(self._folding(below))
        parts.append(self._folding(error))
        box = w.VBox(parts)
        box.add_class("td-field")
        box.add_class(f"td-field-{field}")
        return box

    def _folding(self, widget: w.HTML) -> w.HBox:
        """An indented line under a field that takes no room while it has nothing to say."""
        line = _indented(widget)
        sync = lambda *_: setattr(line.layout, "display", "flex" if widget.value else "none")  # noqa: E731
        widget.observe(sync, names="value")
        sync()
        return line

    def _layout(self) -> list[w.Widget]:
        evaluation = w.VBox([
            self._row("eval_data_path", "Eval data", self.eval_data_w),
            self._row("eval_prompts", "Eval prompts", self.prompts_w),
        ])
        self.lora_w = w.VBox([
            self._row("adapter_rank", "LoRA rank", self.rank_w),
            self._row("adapter_alpha", "LoRA alpha", self.alpha_w, self.alpha_help),
            self._row("adapter_target_modules", "Target modules", self.targets_w, self.modules_w),
        ])
        advanced = w.VBox([
            self._row("adapter", "Fine-tuning", self.method_w, below=self.method_help),
            self.lora_w,
            self._row("context_length", "Context length", self.context_w, self.context_help),
            self._row("custom_weights_path", "Custom weights", self.weights_w),
            self._row("experiment_path", "Experiment", self.experiment_w),
            self._row("data_prep_cluster_id", "Data prep cluster", self.cluster_w),
            self._row("validate_inputs", "Validate inputs", self.validate_w),
        ])
        self.evaluation_w = w.Accordion(
            children=[evaluation], titles=("Evaluation — eval data, eval prompts",), selected_index=None
        )
        self.advanced_w = w.Accordion(
            children=[advanced],
            titles=("Advanced — fine-tuning method (LoRA), context length, custom weights, experiment path, validation",),
            selected_index=None,
        )
        self.evaluation_w.add_class("td-section-evaluation")
        self.advanced_w.add_class("td-section-advanced")
        self._general = w.HTML()
        self._general.add_class("td-form-error")
        self._general.observe(
            lambda _: setattr(self._general.layout, "display", "block" if self._general.value else "none"), names="value"
        )
        self._general.layout.display = "none"
        return [
            w.HTML("<b style='font-size:14px'>tunedeck · new training run</b>"),
            self._row("model", "Model", self.model_w, below=self.model_help),
            self._row("task_type", "Task", self.task_w),
            self._row("train_data_path", "Train data", self.train_w, self.check_w, below=self.check_out),
            self._row("register_to", "Register to", self.register_w),
            self._row("training_duration", "Duration", self.duration_w, self.unit_w),
            self._row("learning_rate", "Learning rate", self.lr_w, self.lr_help),
            self.evaluation_w,
            self.advanced_w,
            self.preview,
            self._general,
            w.HBox([self.start_w, self.status_w], layout=w.Layout(align_items="center")),
            self.monitors,
        ]

    # -- what the form says -----------------------------------------------------------------------
    def _model_info(self) -> ModelInfo | None:
        return self._models.get(self.model_w.value) if self.model_w.value else None

    def params(self) -> dict[str, Any]:
        """The keyword arguments Start passes to ``fm.create()``: required ones always, others when
        they differ from create()'s defaults."""
        out: dict[str, Any] = {
            "model": self.model_w.value or "",
            "train_data_path": self.train_w.value.strip(),
            "register_to": self.register_w.value.strip(),
        }
        if self.task_w.value != checks.DEFAULT_TASK_TYPE:
            out["task_type"] = self.task_w.value
        if self.eval_data_w.value.strip():
            out["eval_data_path"] = self.eval_data_w.value.strip()
        prompts = [line.strip() for line in self.prompts_w.value.splitlines() if line.strip()]
        if prompts:
            out["eval_prompts"] = prompts
        if self.weights_w.value.strip():
            out["custom_weights_path"] = self.weights_w.value.strip()
        duration = f"{self.duration_w.value}{self.unit_w.value}"
        if duration != checks.DEFAULT_DURATION:
            out["training_duration"] = duration
        lr = self.lr_w.value.strip()
        if lr:
            try:
                out["learning_rate"] = float(lr)
            except ValueError:
                out["learning_rate"] = lr  # create() reports it; problems() already does
        if self.context_w.value != self._default_context:
            out["context_length"] = int(self.context_w.value)
        if self.experiment_w.value.strip():
            out["experiment_path"] = self.experiment_w.value.strip()
        if self.cluster_w.value.strip():
            out["data_prep_cluster_id"] = self.cluster_w.value.strip()
        if not self.validate_w.value:
            out["validate_inputs"] = False
        adapter = self._adapter()
        if adapter is not None:
            out["adapter"] = adapter
        return out

    def _lora(self) -> LoRA:
        """The LoRA settings as typed (possibly invalid: problems() says what is wrong, next to the field)."""
        alpha = self.alpha_w.value.strip()
        if self.targets_w.value == "all-linear":
            modules: tuple[str, ...] | str | None = None
        elif self.targets_w.value == "attention":
            modules = "attention"
        else:
            modules = tuple(part.strip() for part in self.modules_w.value.split(",") if part.strip())
        return LoRA(
            rank=_number(self.rank_w.value, default=LoRA.rank), alpha=_number(alpha) if alpha else None,
            dropout=self._dropout, target_modules=modules,
            quantize_base=checks.ADAPTER_NAMES["qlora"]["quantize_base"] if self.method_w.value == "qlora" else None,
        )

    def _adapter(self) -> str | LoRA | None:
        """create()'s ``adapter``: None (full fine-tuning), "lora" / "qlora" with their defaults, else a LoRA."""
        method = self.method_w.value
        if method == "full":
            return None
        lora = self._lora()
        return method if lora == LoRA(**checks.ADAPTER_NAMES[method]) else lora

    def code(self) -> str:
        """The equivalent Python, ready to paste."""
        lines = [f"    {key}={_literal(value)}," for key, value in self.params().items()]
        return "from tunedeck import foundation_model as fm\n\nrun = fm.create(\n" + "\n".join(lines) + "\n)"

    def problems(self) -> list[Problem]:
        """What is wrong with the fields, checked here without the service (format and bounds)."""
        p = self.params()
        found: list[Problem] = []
        if self._strict:
            for field in ("model", "train_data_path", "register_to"):
                if not p[field]:
                    found.append(Problem(field, "is required"))
        for field, check in (
            ("training_duration", lambda: checks.parse_duration(f"{self.duration_w.value}{self.unit_w.value}")),
            ("learning_rate", lambda: checks.parse_learning_rate(self.lr_w.value.strip() or None)),
            ("register_to", lambda: p["register_to"] and checks.registered_model_name(p["register_to"], "run")),
        ):
            try:
                check()
            except ValueError as exc:
                found.append(Problem(field, str(exc)))
        if self.method_w.value != "full":
            # parse_adapter, as the service runs it, one setting at a time so each error sits by its field
            lora = self._lora()
            adapter_found = []
            for field, setting in (("adapter_rank", LoRA(rank=lora.rank)), ("adapter_alpha", LoRA(alpha=lora.alpha)),
                                   ("adapter_target_modules", LoRA(target_modules=lora.target_modules))):
                try:
                    checks.parse_adapter(setting)
                except ValueError as exc:
                    adapter_found.append(Problem(field, str(exc)))
            if not adapter_found:
                try:
                    checks.parse_adapter(p["adapter"])
                except ValueError as exc:
                    adapter_found.append(Problem("adapter", str(exc)))
            found += adapter_found
        info = self._model_info()
        if info and self.context_w.value > info.max_context_length:
            found.append(Problem("context_length", f"above {info.name}'s maximum of {info.max_context_length:,}"))
        return found

    # -- actions ----------------------------------------------------------------------------------
    def check_data(self) -> dict[str, Any]:
        """Rows, token counts against the context length, a sample and the first bad lines."""
        from tunedeck.client import get_client

        self.check_out.value = "<span class='td-muted'>checking the data…</span>"
        request = {
            "train_data_path": self.train_w.value.strip(),
            "task_type": self.task_w.value,
            "model": self.model_w.value or None,
            "context_length": int(self.context_w.value),
        }
        if not request["train_data_path"]:
            result: dict[str, Any] = {"ok": False, "problems": [{"field": "train_data_path", "message": "is required"}]}
        else:
            try:
                result = get_client().data_check(request) or {}
            except Exception as exc:  # noqa: BLE001 - shown under the field
                result = {"ok": False, "problems": [{"field": "train_data_path", "message": _snapshot.describe(exc)}]}
        self.check_out.value = render_data_check(result, int(self.context_w.value))
        return result

    def submit(self) -> TrainingRun | None:
        """What Start does: check, call ``fm.create()``, open the monitor. None if it did not start."""
        self._strict = True
        self._server = {}
        self._general.value = ""
        self._refresh()
        if self.problems():
            self.status_w.value = _note("fix the fields marked in red first", error=True)
            return None
        self.start_w.disabled = True
        self.status_w.value = _note("starting…")
        try:
            run = fm.create(**self.params())
        except InvalidInputError as exc:
            for problem in exc.problems:
                self._server.setdefault(problem.field or "", []).append(_where(problem))
            self._refresh()
            self.status_w.value = _note(f"{len(exc.problems)} problem(s): see the fields marked in red", error=True)
            return None
        except Exception as exc:  # noqa: BLE001 - a message, never a traceback
            self.status_w.value = _note(f"could not start: {_snapshot.describe(exc)}", error=True)
            return None
        finally:
            self.start_w.disabled = False
        self.run = run
        self._started_at = time.monotonic()
        self.monitor = RunMonitor(run, closable=True, on_close_request=self._close_monitor)
        # The form's own snapshot is not refreshed when the run ends: that would re-render the form under
        # the user's cursor. Displaying the run (or its monitor) gives the final snapshot.
        self.monitors.children = (self.monitor, *self.monitors.children)
        self.status_w.value = _note(f"started {run.name}")
        return run

    def _on_start_click(self, _button: w.Button) -> None:
        # A double click queues a second click behind the first create(): one run per press.
        if time.monotonic() - self._started_at > DOUBLE_CLICK_SECONDS:
            self.submit()

    def close(self) -> None:
        """Close the form and stop the monitors it opened."""
        monitors = getattr(self, "monitors", None)  # absent if __init__ failed
        for child in monitors.children if monitors is not None else ():
            child.close()
        super().close()

    def _close_monitor(self, monitor: RunMonitor) -> None:
        self.monitors.children = tuple(c for c in self.monitors.children if c is not monitor)
        monitor.close()

    # -- reacting ---------------------------------------------------------------------------------
    def _on_change(self, change: dict[str, Any]) -> None:
        owner = change["owner"]
        for field, widget in self._inputs().items():
            if widget is owner:
                shown_at = {
                    "training_duration_unit": "training_duration",
                    "adapter_target_modules_list": "adapter_target_modules",
                }.get(field, field)
                self._server.pop(shown_at, None)
                if shown_at.startswith("adapter_"):
                    self._server.pop("adapter", None)  # what the service said about the adapter as a whole
                if field == "model":
                    self._on_model_change()
                if field in ("train_data_path", "task_type", "model"):
                    self.check_out.value = ""
        self._refresh()

    def _on_model_change(self) -> None:
        info = self._model_info()
        if info is None:
            return
        was_default = self.context_w.value == self._default_context
        self._default_context = checks.default_context_length(info.max_context_length)
        self.context_w.max = info.max_context_length
        if was_default:
            self.context_w.value = self._default_context

    def _refresh(self) -> None:
        """Redraw help texts, field errors and the code preview from the current values."""
        info = self._model_info()
        esc = _snapshot.esc
        if info:
            facts = [f"max context {info.max_context_length:,} tokens"]
            if info.parameters:
                facts.append(f"{_count(info.parameters)} parameters")
            if info.default_learning_rate:
                facts.append(f"default learning rate {info.default_learning_rate:g}")
            facts.append(f"source: {info.source}")
            self.model_help.value = f"<span class='td-muted' style='font-size:12px'>{esc(' · '.join(facts))}</span>"
            lr_default = f"{info.default_learning_rate:g}" if info.default_learning_rate else "the model's default"
        else:
            self.model_help.value = ""
            lr_default = "the model's default"
        if self.method_w.value != "full":  # adapters start at zero and take larger steps
            lr_default = f"{checks.default_learning_rate(info.parameters if info else None, {'type': 'lora'}):g} for LoRA"
        self.lr_w.placeholder = f"default {lr_default}"
        self.lr_help.value = (
            f"<span class='td-muted' style='font-size:12px'>blank = {esc(lr_default)} · AdamW, 2% warmup, linear decay</span>"
        )
        maximum = f"{info.max_context_length:,}" if info else "?"
        method = self.method_w.value
        self.lora_w.layout.display = "none" if method == "full" else None
        self.modules_w.layout.display = None if self.targets_w.value == "custom" else "none"
        self.method_help.value = f"<span class='td-muted' style='font-size:12px'>{esc(METHOD_HELP[method])}</span>"
        try:
            parsed = checks.parse_adapter(LoRA(rank=self._lora().rank))
            alpha_default = f"{parsed['alpha']:g}" if parsed else ""
        except ValueError:
            alpha_default = ""
        self.alpha_w.placeholder = alpha_default or "2 × rank"
        alpha_note = f"blank = 2 × rank ({alpha_default})" if alpha_default else "blank = 2 × rank"
        self.alpha_help.value = (
            f"<span class='td-muted' style='font-size:12px'>{alpha_note} · scales the update by alpha / rank</span>"
        )
        self.context_help.value = (
            f"<span class='td-muted' style='font-size:12px'>default {self._default_context:,} · at most {maximum}</span>"
        )
        messages: dict[str, list[str]] = {}
        for problem in self.problems():
            messages.setdefault(problem.field, []).append(problem.message)
        for field, texts in self._server.items():
            messages.setdefault(field, []).extend(texts)
        for field, box in self._errors.items():
            box.value = "".join(
                f"<div style='color:var(--jp-error-color1,#b91c1c);font-size:12px'>{esc(t)}</div>"
                for t in messages.get(field, [])
            )
        general = messages.get("", []) + [f"{f}: {t}" for f, ts in messages.items() if f not in self._errors and f for t in ts]
        self._general.value = "".join(f"<div style='color:var(--jp-error-color1,#b91c1c)'>{esc(t)}</div>" for t in general)
        for section, fields in ((self.evaluation_w, EVALUATION), (self.advanced_w, ADVANCED)):
            if any(messages.get(f) for f in fields):
                section.selected_index = 0  # unfold a section that holds an error
        self.preview.code = self.code()

    # -- snapshots --------------------------------------------------------------------------------
    def _snapshot_text(self) -> str:
        monitors = [m._snapshot_text() for m in self.monitors.children if isinstance(m, RunMonitor)]
        return "\n\n".join(["tunedeck training form\n" + self.code(), *monitors])

    def _snapshot_html(self) -> str:
        esc = _snapshot.esc
        monitors = "".join(m._snapshot_html() for m in self.monitors.children if isinstance(m, RunMonitor))
        return (
            "<div class='tunedeck-snapshot' style='font-size:13px'><b>tunedeck · new training run</b>"
            f"<pre style='font-size:12px'>{esc(self.code())}</pre>{monitors}</div>"
        )


def form(**defaults: Any) -> TrainingForm:
    """A form for a new training run, pre-filled with any create() parameters given."""
    return TrainingForm(**defaults)


# -- helpers ----------------------------------------------------------------------------------------
_LORA_IS_FOR = ("LoRA trains small adapters on a frozen base — far less memory: the way to fine-tune 1B-70B models; "
                "the registered model has the adapter merged in")
METHOD_HELP = {
    "full": f"every weight is trained (the default). {_LORA_IS_FOR}",
    "lora": _LORA_IS_FOR,
    "qlora": f"{_LORA_IS_FOR}. QLoRA holds the base in 4 bits for even less: CUDA with bitsandbytes only",
}


def _adapter_fields(value: Any) -> tuple[str, LoRA, list[str] | str | None]:
    """form(adapter=...) -> (method, its settings as given, its target modules as parse_adapter resolves
    them); ValueError as create() would raise it."""
    parsed = checks.parse_adapter(value)
    if parsed is None:
        return "full", LoRA(), None
    if isinstance(value, LoRA):
        lora = value
    elif isinstance(value, dict):
        lora = LoRA.from_dict(value)
    else:
        lora = LoRA(**checks.ADAPTER_NAMES[value.strip().lower()])
    return ("qlora" if parsed["quantize_base"] else "lora"), lora, parsed["target_modules"]


def _number(text: str, default: Any = None) -> Any:
    """'32' -> 32, '0.5' -> 0.5, '' -> default; anything else stays text, for parse_adapter to name."""
    text = text.strip()
    if not text:
        return default
    for kind in (int, float):
        try:
            number = kind(text)
        except ValueError:
            continue
        return number if math.isfinite(number) else text  # 'nan' and 'inf' stay text: the preview stays Python
    return text


def _number_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _count(n: int) -> str:
    """147776 -> '148K', 134515008 -> '135M', 7_000_000_000 -> '7.0B'."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            value = n / size
            return f"{value:.1f}{unit}" if value < 10 else f"{value:,.0f}{unit}"
    return str(n)


def _literal(value: Any) -> str:
    """Python source for a parameter value (JSON string escapes are valid Python)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, LoRA):  # only what differs from LoRA()'s defaults
        default = LoRA()
        settings = [f"{f.name}={_literal(getattr(value, f.name))}" for f in dataclasses.fields(LoRA)
                    if getattr(value, f.name) != getattr(default, f.name)]
        return f"fm.LoRA({', '.join(settings)})"
    return repr(value)


def _split_duration(text: Any) -> tuple[int, str]:
    try:
        d = checks.parse_duration(text)
        return d.value, d.unit
    except ValueError:
        return 1, "ep"


def _where(problem: Problem) -> str:
    if problem.file:
        place = f"{problem.file}" + (f", line {problem.line}" if problem.line else "")
        return f"{problem.message} ({place})"
    return problem.message


def _note(text: str, error: bool = False) -> str:
    color = "var(--jp-error-color1,#b91c1c)" if error else "var(--jp-ui-font-color2,#4b5563)"
    return f"<span style='color:{color};font-size:12px'>{_snapshot.esc(text)}</span>"


def _indented(widget: w.Widget) -> w.Widget:
    return w.HBox([w.Label("", layout=w.Layout(width=LABEL_WIDTH)), widget])
