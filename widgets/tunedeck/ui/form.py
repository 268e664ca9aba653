"""The training form: every create() parameter, checked as you type, with the equivalent code.

Built from standard ipywidgets, so its logic lives (and is tested) in Python. What the form shows is
one function of its whole state (``ui/_validation.py``: ``validate(state, models, reports)``): the
problems next to their fields (each once, worded with the form's labels, a file's bad lines grouped,
with a one-click fix where one exists), ``params()`` (exactly what Start passes to ``fm.create()``:
only valid values), ``code()`` (that call as text, saying what is missing or invalid instead of
showing it) and the data-check summaries. Answers of the service (create()'s InvalidInputError,
Check data) are kept with the state they answered and shown only while it still holds, so switching
Task, Model or a path never leaves an old error behind. Start opens the new run's monitor below.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import anywidget
import ipywidgets as w
import traitlets

from tunedeck import foundation_model as fm
from tunedeck.errors import InvalidInputError, Problem
from tunedeck.inputs import params as checks
from tunedeck.sweeps import Sweep, sweep
from tunedeck.types import LoRA, ModelInfo, TrainingRun
from tunedeck.ui import _snapshot, _static
from tunedeck.ui._datacheck import render_data_check
from tunedeck.ui._validation import (
    OTHER_MODEL,
    PARAMETERS,
    TASKS,
    DeviceInfo,
    Fix,
    FormState,
    Issue,
    Report,
    Validation,
    preview_code,
    validate,
)
from tunedeck.ui.compare import RunComparison
from tunedeck.ui.monitor import RunMonitor

__all__ = ["PARAMETERS", "CodeBlock", "TrainingForm", "form", "render_data_check"]

UNITS = (("epochs", "ep"), ("batches", "ba"), ("tokens", "tok"))
METHODS = (("Full fine-tuning", "full"), ("LoRA", "lora"), ("QLoRA (4-bit, CUDA)", "qlora"))
TARGETS = (("all linear layers", "all-linear"), ("attention projections", "attention"), ("these layers:", "custom"))
ADAPTER_FIELDS = ("adapter_rank", "adapter_alpha", "adapter_target_modules")
ADVANCED = (
    "adapter",
    *ADAPTER_FIELDS,
    "context_length",
    "num_devices",
    "custom_weights_path",
    "experiment_path",
    "data_prep_cluster_id",
    "validate_inputs",
    "sweep",
)
EVALUATION = ("eval_data_path", "eval_prompts")
DATA_FIELDS = ("train_data_path", "eval_data_path")
DOUBLE_CLICK_SECONDS = 1.0
ESTIMATE_RETRY_SECONDS = 10.0  # a pending estimate (the service converting or timing the model) is asked again
ESTIMATE_PATIENCE_SECONDS = 30 * 60.0
OTHER_LABEL = "another model: a local folder or Hugging Face id…"
#: widget attribute of each FormState field
WIDGETS = {
    "model": "model_w", "task_type": "task_w", "train_data_path": "train_w", "register_to": "register_w",
    "duration": "duration_w", "duration_unit": "unit_w", "learning_rate": "lr_w", "eval_data_path": "eval_data_w",
    "eval_prompts": "prompts_w", "context_length": "context_w", "custom_weights_path": "weights_w",
    "experiment_path": "experiment_w", "data_prep_cluster_id": "cluster_w", "validate_inputs": "validate_w",
    "adapter": "method_w", "adapter_rank": "rank_w", "adapter_alpha": "alpha_w", "adapter_targets": "targets_w",
    "adapter_modules": "modules_w", "num_devices": "devices_w", "sweep": "sweep_w",
}


class CodeBlock(anywidget.AnyWidget):
    """Read-only code with a Copy button."""

    _esm = _static.esm("code_block.js")
    _css = _static.css("common.css", "form.css")
    code = traitlets.Unicode("").tag(sync=True)
    title = traitlets.Unicode("Python").tag(sync=True)


def _text(value: str = "", placeholder: str = "", kind: str = "td-input", **kw: Any) -> w.Text:
    widget = w.Text(value=value, placeholder=placeholder, layout=w.Layout(width="auto"), **kw)
    widget.add_class(kind)
    return widget


class TrainingForm(_snapshot.SnapshotDisplay, w.VBox):
    """A form for ``fm.create()``; the monitors of the runs it starts appear below it."""

    def __init__(self, **defaults: Any):
        unknown = sorted(set(defaults) - set(PARAMETERS))
        if unknown:
            raise TypeError(f"form() got unknown parameter(s) {', '.join(unknown)}; it takes create()'s: {', '.join(PARAMETERS)}")
        self.run: TrainingRun | None = None
        self.runs: Sweep | None = None  # the last sweep Start created
        self.comparison: RunComparison | None = None  # its comparison view, under the form
        self.monitor: RunMonitor | None = None
        self._strict = False  # "is required" shows only once Start was pressed
        self._started_at = -DOUBLE_CLICK_SECONDS
        self._reports: list[Report] = []  # the service's answers, each with the state it answered
        self._prefill: list[str] = []  # what form(...) was given and could not show (not part of the state)
        self._note = ""  # the last action's note (starting…, started X, could not start: ...)
        self._errors: dict[str, w.HTML] = {}
        self._fix_boxes: dict[str, w.HBox] = {}
        self._fixes_shown: dict[str, tuple[Fix, ...]] = {}
        self._models: dict[str, ModelInfo] = {}
        self._models_error: str | None = None
        self._devices: DeviceInfo | None = None  # the service's, from its health: Devices is checked against them
        self._validation: Validation | None = None
        self._estimate: tuple[FormState, dict[str, Any]] | None = None  # the service's estimate and the state it is of
        self._pending_estimate: FormState | None = None  # the state of an estimate the service is still measuring
        self._build(defaults)
        super().__init__(children=self._layout())
        self.add_class("td-form")
        for name in WIDGETS.values():
            getattr(self, name).observe(self._on_change, names="value")
        self.model_text_w.observe(self._on_change, names="value")
        if self._notes:  # what form(...) was given and cannot show: said until the field it is about changes
            self._reports.append(Report(self.state(), "prefill", problems=tuple(self._notes)))
        self._refresh()

    # -- building ---------------------------------------------------------------------------------
    def _build(self, d: dict[str, Any]) -> None:
        notes: list[Problem] = []  # what form(...) was given and cannot show: said once, until that field changes
        try:
            self._models = {m.name: m for m in fm.get_models()}
        except Exception as exc:  # noqa: BLE001 - shown next to the model field
            notes.append(Problem("model", f"could not list models: {_snapshot.describe(exc)}"))
        if not notes:  # the service answered: how many devices it has (GPUs, or CPU cores)
            from tunedeck.client import get_client

            try:
                self._devices = DeviceInfo.from_health(get_client().health())
            except Exception:  # noqa: BLE001 - Devices is then checked by create() alone, and its help says so
                self._devices = None
        options = [(f"{m.name}  (max context {m.max_context_length:,})", m.name) for m in self._models.values()]
        options.append((OTHER_LABEL, OTHER_MODEL))
        model = str(d.get("model") or "").strip()
        known = next((name for name in self._models if name.lower() == model.lower()), None) if model else None
        choice = known or (OTHER_MODEL if model else options[0][1])
        self.model_w = w.Dropdown(options=options, value=choice, layout=w.Layout(width="auto"))
        self.model_w.add_class("td-input")
        self.model_text_w = _text("" if known else model, "/path/to/model-folder  or  org/model-id",
                                  continuous_update=False)
        self.model_text_line = _indented(self.model_text_w)
        self.model_help = w.HTML()
        task = str(d.get("task_type") or checks.DEFAULT_TASK_TYPE).strip().upper()
        if task not in dict(TASKS).values():
            notes.append(Problem("task_type", f"{d['task_type']!r} is not a task type; showing the default"))
            task = checks.DEFAULT_TASK_TYPE
        self.task_w = w.ToggleButtons(options=TASKS, value=task)
        self.train_w = _text(d.get("train_data_path") or "", "train.jsonl, /Volumes/…, or org/dataset/split")
        self.check_w = w.Button(description="Check data", tooltip="rows, token counts and bad lines of the train and eval data")
        self.check_w.add_class("td-check-data")
        self.check_w.on_click(lambda _: self.check_data())
        self.check_out = w.HTML()
        self.check_out.add_class("td-data-check")
        self.check_eval_out = w.HTML()
        self.check_eval_out.add_class("td-data-check-eval")
        self.register_w = _text(d.get("register_to") or "", "catalog.schema  or  catalog.schema.model")
        number, unit = _split_duration(d.get("training_duration"))
        self.duration_w = _text(number, "e.g. 3", kind="td-input-short")
        self.unit_w = w.Dropdown(options=UNITS, value=unit, layout=w.Layout(width="110px"))
        self.lr_w = _text("" if d.get("learning_rate") is None else str(d["learning_rate"]), kind="td-input-short")
        self.lr_help = w.HTML()
        self.eval_data_w = _text(d.get("eval_data_path") or "", "optional: held-out rows, same format")
        prompts = d.get("eval_prompts") or []
        self.prompts_w = w.Textarea(
            value="\n".join([prompts] if isinstance(prompts, str) else prompts),
            placeholder="one prompt per line; answered at every checkpoint",
            rows=3, layout=w.Layout(width="auto"),
        )
        self.prompts_w.add_class("td-input")
        self.context_w = _text("" if d.get("context_length") in (None, "") else str(d["context_length"]), kind="td-input-short")
        self.context_help = w.HTML()
        self.devices_w = _text("" if d.get("num_devices") in (None, "") else str(d["num_devices"]), kind="td-input-short")
        self.devices_help = w.HTML()
        self.weights_w = _text(d.get("custom_weights_path") or "", "a checkpoint folder ep#-ba#, or its .symlink")
        self.experiment_w = _text(d.get("experiment_path") or "", "default: /Users/<you>/<run name>")
        self.cluster_w = _text(d.get("data_prep_cluster_id") or "", "recorded; used for table inputs")
        try:
            method, lora, modules = _adapter_fields(d.get("adapter"))
        except ValueError as exc:
            notes.append(Problem("adapter", f"{exc}; showing full fine-tuning"))
            method, lora, modules = "full", LoRA(), None
        self._dropout = lora.dropout  # not a field of its own: kept from form(adapter=...), shown in the preview
        self.method_w = w.ToggleButtons(options=METHODS, value=method)
        self.method_help = w.HTML()
        self.rank_w = _text(str(lora.rank), "16", kind="td-input-short")
        self.alpha_w = _text("" if lora.alpha is None else _number_text(lora.alpha), kind="td-input-short")
        self.alpha_help = w.HTML()
        target = "all-linear" if modules is None else ("attention" if modules == "attention" else "custom")
        self.targets_w = w.Dropdown(options=TARGETS, value=target, layout=w.Layout(width="200px"))
        custom = ", ".join(modules) if target == "custom" and isinstance(modules, list) else ""
        self.modules_w = _text(custom, "q_proj, v_proj", kind="td-input-short")
        self.validate_w = w.Checkbox(
            value=bool(d.get("validate_inputs", True)), description="check paths, data and names first", indent=False
        )
        self.sweep_w = w.Checkbox(value=False, indent=False, description="a run per combination of values")
        self.sweep_help = w.HTML(
            "<span class='td-muted' style='font-size:12px'>Learning rate, Duration (and LoRA rank) take "
            "comma-separated values; Start creates one run per combination and compares them</span>"
        )
        self.preview = CodeBlock(title="Python — the same run from code")
        self.start_w = w.Button(description="Start training", button_style="primary", icon="play")
        self.start_w.add_class("td-start")
        self.start_w.on_click(self._on_start_click)
        self.estimate_w = w.Button(description="Estimate", icon="clock-o",
                                   tooltip="tokens per epoch, steps, time on this machine and peak memory, before Start")
        self.estimate_w.add_class("td-estimate")
        self.estimate_w.on_click(lambda _: self.estimate())
        self.estimate_out = w.HTML()
        self.estimate_out.add_class("td-estimate-line")
        self.status_w = w.HTML()
        self.status_w.add_class("td-form-status")
        self.monitors = w.VBox()
        self.monitors.add_class("td-form-monitors")
        self._notes = notes

    def _row(self, field: str, label: str, *widgets: w.Widget, below: tuple[w.Widget, ...] = ()) -> w.VBox:
        error = w.HTML()
        error.add_class("td-field-error")
        self._errors[field] = error
        fixes = w.HBox()
        fixes.add_class("td-field-fixes")
        self._fix_boxes[field] = fixes
        name = w.Label(label)
        name.add_class("td-label")
        line = w.HBox([name, *widgets])
        line.add_class("td-field-line")
        parts: list[w.Widget] = [line]
        for widget in below:
            parts.append(self._folding(widget) if isinstance(widget, w.HTML) else widget)
        parts.append(self._folding(error, w.VBox([error, fixes])))
        box = w.VBox(parts)
        box.add_class("td-field")
        box.add_class(f"td-field-{field}")
        return box

    def _folding(self, widget: w.HTML, shown: w.Widget | None = None) -> w.HBox:
        """An indented line under a field that takes no room while it has nothing to say."""
        line = _indented(shown or widget)
        sync = lambda *_: setattr(line.layout, "display", "flex" if widget.value else "none")  # noqa: E731
        widget.observe(sync, names="value")
        sync()
        return line

    def _layout(self) -> list[w.Widget]:
        evaluation = w.VBox([
            self._row("eval_data_path", "Eval data", self.eval_data_w, below=(self.check_eval_out,)),
            self._row("eval_prompts", "Eval prompts", self.prompts_w),
        ])
        self.lora_w = w.VBox([
            self._row("adapter_rank", "LoRA rank", self.rank_w),
            self._row("adapter_alpha", "LoRA alpha", self.alpha_w, below=(self.alpha_help,)),
            self._row("adapter_target_modules", "Target modules", self.targets_w, self.modules_w),
        ])
        advanced = w.VBox([
            self._row("adapter", "Fine-tuning", self.method_w, below=(self.method_help,)),
            self.lora_w,
            self._row("context_length", "Context length", self.context_w, below=(self.context_help,)),
            self._row("num_devices", "Devices", self.devices_w, below=(self.devices_help,)),
            self._row("custom_weights_path", "Custom weights", self.weights_w),
            self._row("experiment_path", "Experiment", self.experiment_w),
            self._row("data_prep_cluster_id", "Data prep cluster", self.cluster_w),
            self._row("validate_inputs", "Validate inputs", self.validate_w),
            self._row("sweep", "Sweep", self.sweep_w, below=(self.sweep_help,)),
        ])
        self.evaluation_w = w.Accordion(
            children=[evaluation], titles=("Evaluation — eval data, eval prompts",), selected_index=None,
        )
        self.advanced_w = w.Accordion(
            children=[advanced], titles=("Advanced — LoRA, context length, devices, weights, experiment, sweep",),
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
            self._row("model", "Model", self.model_w, below=(self.model_text_line, self.model_help)),
            self._row("task_type", "Task", self.task_w),
            self._row("train_data_path", "Train data", self.train_w, self.check_w, below=(self.check_out,)),
            self._row("register_to", "Register to", self.register_w),
            self._row("training_duration", "Duration", self.duration_w, self.unit_w),
            self._row("learning_rate", "Learning rate", self.lr_w, below=(self.lr_help,)),
            self.evaluation_w,
            self.advanced_w,
            self.preview,
            self._general,
            w.HBox([self.start_w, self.estimate_w, self.status_w],
                   layout=w.Layout(align_items="center", flex_flow="row wrap")),
            self.estimate_out,
            self.monitors,
        ]

    # -- what the form says -----------------------------------------------------------------------
    def state(self) -> FormState:
        """Every field as typed, and whether Start was pressed."""
        model = self.model_text_w.value if self.model_w.value == OTHER_MODEL else (self.model_w.value or "")
        return FormState(
            model=model.strip(), task_type=self.task_w.value, train_data_path=self.train_w.value,
            register_to=self.register_w.value, duration=self.duration_w.value, duration_unit=self.unit_w.value,
            learning_rate=self.lr_w.value, eval_data_path=self.eval_data_w.value, eval_prompts=self.prompts_w.value,
            context_length=self.context_w.value, custom_weights_path=self.weights_w.value,
            experiment_path=self.experiment_w.value, data_prep_cluster_id=self.cluster_w.value,
            num_devices=self.devices_w.value,
            validate_inputs=bool(self.validate_w.value), adapter=self.method_w.value, adapter_rank=self.rank_w.value,
            adapter_alpha=self.alpha_w.value, adapter_targets=self.targets_w.value, adapter_modules=self.modules_w.value,
            adapter_dropout=self._dropout, sweep=bool(self.sweep_w.value), strict=self._strict,
        )

    def validation(self) -> Validation:
        """``validate()`` of the form as it is now (the one source of everything the form shows)."""
        return validate(self.state(), self._models, self._reports, self._devices)

    def params(self) -> dict[str, Any]:
        """The keyword arguments Start passes to ``fm.create()``: the valid ones, and only those that
        differ from create()'s defaults (with Sweep on: those every cell shares; ``validation().sweep``
        holds the lists)."""
        return self.validation().params

    def problems(self) -> list[Issue]:
        """What is wrong with the form now, each problem once (its own checks and the service's answers
        that still hold)."""
        return self.validation().issues

    def code(self, validation: Validation | None = None) -> str:
        """The equivalent Python, ready to paste; what is missing or invalid is named in a comment, never shown."""
        return preview_code(validation or self.validation())

    # -- actions ----------------------------------------------------------------------------------
    def check_data(self) -> dict[str, dict[str, Any]]:
        """Check data: rows, token counts against the context length, a sample and the bad lines, of the
        train data and (when given) the eval data. Paths go out absolute, as create() sends them."""
        from tunedeck.client import get_client

        state = self.state()
        v = validate(state, self._models, [r for r in self._reports if r.kind != "check"], self._devices)
        model = fm._model_path(state.model) if state.model else None
        context = v.params.get("context_length") or v.default_context
        results: dict[str, dict[str, Any]] = {}
        self._reports = [r for r in self._reports if r.kind != "check"]
        self.check_out.value = "<span class='td-muted'>checking the data…</span>"
        for name in DATA_FIELDS:
            path = getattr(state, name).strip()
            if not path:
                if name == "train_data_path":
                    results[name] = {"ok": False, "problems": [{"field": name, "message": "is required"}]}
                continue
            request = {"train_data_path": fm._data_path(path), "task_type": state.task_type, "model": model,
                       "context_length": context}
            try:
                results[name] = get_client().data_check(request) or {}
            except Exception as exc:  # noqa: BLE001 - shown under the field
                results[name] = {"ok": False, "problems": [{"field": name, "message": _snapshot.describe(exc)}]}
        self._reports += [Report(state, "check", field=name, result=result) for name, result in results.items()]
        v = self._refresh()
        if all(r.get("ok") for r in results.values()) and not v.issues and not v.left_out:
            self.estimate()  # the data are fine: say what the run will cost
        return results

    def estimate(self) -> dict[str, Any] | None:
        """Estimate: tokens per epoch, steps, time on this machine (measured throughput) and peak memory of
        the run Start would create, from the service (POST /api/estimate); shown under Start until a field
        changes. None when the form has problems or the service could not estimate."""

        v = self._refresh()
        if v.issues or v.left_out:
            self.estimate_out.value = _note("fix the fields marked in red to get an estimate", error=True)
            return None
        if v.sweep is not None:
            self.estimate_out.value = _note("an estimate is of one run: turn Sweep off to estimate a cell", error=True)
            return None
        state = self.state()
        self.estimate_out.value = _note("estimating (the first time for a model: a few training steps to time)…")
        return self._ask_estimate(v.params, _unforced(state), time.monotonic())

    def _ask_estimate(self, params: dict[str, Any], asked: FormState, since: float) -> dict[str, Any] | None:
        """The service's estimate of ``params``. A first estimate of a model may take minutes (converting
        it, timing a few training steps); the service then answers ``pending`` and goes on: the form says
        so, not as an error, and asks again every ESTIMATE_RETRY_SECONDS in the background while the
        fields stay as they were, up to ESTIMATE_PATIENCE_SECONDS."""
        from tunedeck.client import get_client

        try:
            result = get_client().estimate(_wire(params)) or {}
        except Exception as exc:  # noqa: BLE001 - shown under Start
            result = {"ok": False, "message": _snapshot.describe(exc)}
        if _unforced(self.state()) != asked:  # the fields changed meanwhile: this answer is of another run
            return None
        self._pending_estimate = None
        if result.get("pending") and time.monotonic() - since < ESTIMATE_PATIENCE_SECONDS:
            self._estimate, self._pending_estimate = None, asked
            waited = time.monotonic() - since
            self.estimate_out.value = _note(f"{result.get('message') or 'the service is still measuring'} "
                                            f"({waited:.0f} s so far; the estimate follows here)")
            timer = threading.Timer(ESTIMATE_RETRY_SECONDS, self._ask_estimate, (params, asked, since))
            timer.daemon = True
            timer.start()
            return None
        if not result.get("ok"):
            self._estimate = None
            self.estimate_out.value = _note(f"no estimate: {result.get('message') or 'the service gave none'}", error=True)
            return None
        self._estimate = (asked, result)
        self._refresh()
        return result

    def current_estimate(self) -> dict[str, Any] | None:
        """The last estimate, if the form has not changed since."""
        if self._estimate is None or self._estimate[0] != _unforced(self.state()):
            return None
        return self._estimate[1]

    def apply_fix(self, fix: Fix) -> None:
        """A one-click fix: set the field it names (the form re-checks everything from there)."""
        getattr(self, WIDGETS[fix.field]).value = fix.value

    def submit(self) -> TrainingRun | None:
        """What Start does: check, call ``fm.create()``, open the monitor. None if it did not start."""
        self._strict = True
        self._note = ""
        self._reports = [r for r in self._reports if r.kind != "create"]
        v = self._refresh()
        if v.issues or v.left_out:
            return None
        if v.sweep is not None:
            self._submit_sweep(v)
            return None
        self.start_w.disabled = True
        self._set_note("starting…")
        state = self.state()
        try:
            run = fm.create(**v.params)
        except InvalidInputError as exc:
            self._reports.append(Report(state, "create", problems=tuple(exc.problems)))
            self._note = ""
            self._refresh()
            return None
        except Exception as exc:  # noqa: BLE001 - a message, never a traceback
            self._set_note(f"could not start: {_snapshot.describe(exc)}", error=True)
            return None
        finally:
            self.start_w.disabled = False
        self.run = run
        self._started_at = time.monotonic()
        estimate = self.current_estimate()
        if estimate is not None:  # kept with the run: its results card shows estimate vs actual
            from tunedeck.client import get_client

            try:
                get_client().record_estimate(run.name, estimate)
            except Exception:  # noqa: BLE001 - the run started; only its estimate-vs-actual line is lost
                pass
        self.monitor = RunMonitor(run, closable=True, on_close_request=self._close_monitor)
        # The form's own snapshot is not refreshed when the run ends: that would re-render the form under
        # the user's cursor. Displaying the run (or its monitor) gives the final snapshot.
        self.monitors.children = (self.monitor, *self.monitors.children)
        self._set_note(f"started {run.name}")
        return run

    def _submit_sweep(self, v: Validation) -> Sweep | None:
        """Start with Sweep on: ``tunedeck.sweep`` of the form's lists (every cell checked by the service
        before any run is created), and their comparison view under the form."""
        self.start_w.disabled = True
        self._set_note(f"checking {v.runs} runs…")
        state = self.state()
        try:
            grid = v.sweep or {}
            runs = sweep(grid["learning_rates"], grid["training_durations"], grid.get("lora_ranks"), **v.params)
        except InvalidInputError as exc:  # each problem by its field, naming its cell
            self._reports.append(Report(state, "create", problems=tuple(exc.problems)))
            self._note = ""
            self._refresh()
            return None
        except Exception as exc:  # noqa: BLE001 - a message, never a traceback
            made: Sweep = getattr(exc, "created_runs", None) or Sweep()
            if made:
                self._show_sweep(made)
            self._set_note(f"could not start: {_snapshot.describe(exc)}"
                           + (f" ({len(made)} run(s) were created first: shown below)" if made else ""), error=True)
            return None
        finally:
            self.start_w.disabled = False
        self._started_at = time.monotonic()
        self._show_sweep(runs)
        self._set_note(f"started {len(runs)} runs: " + ", ".join(r.name for r in runs))
        return runs

    def _show_sweep(self, runs: Sweep) -> None:
        self.runs = runs
        self.comparison = RunComparison(runs)
        self.monitors.children = (self.comparison, *self.monitors.children)

    def _set_note(self, text: str, error: bool = False) -> None:
        self._note = _note(text, error=error)
        self._refresh()

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
        checked = any(r.kind == "check" for r in self._reports)
        if checked and change["owner"] in (self.task_w, self.model_w, self.model_text_w):
            self.check_data()  # the data were checked for the old task or model: check them again for the new one
        else:
            self._refresh()

    def _refresh(self) -> Validation:
        """Redraw help texts, field errors, fixes, data-check summaries, the banner and the code preview
        from ``validate()`` of the current state."""
        state = self.state()
        v = validate(state, self._models, self._reports, self._devices)
        self._validation = v
        info = v.model
        esc = _snapshot.esc
        self.model_text_line.layout.display = "flex" if self.model_w.value == OTHER_MODEL else "none"
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
        if state.adapter != "full":  # adapters start at zero and take larger steps
            lr_default = f"{checks.default_learning_rate(info.parameters if info else None, {'type': 'lora'}):g} for LoRA"
        if state.sweep:
            self.lr_w.placeholder = "e.g. 1e-4, 3e-4"
            self.duration_w.placeholder = "e.g. 1, 2"
            self.rank_w.placeholder = "e.g. 8, 16"
            self.lr_help.value = (
                "<span class='td-muted' style='font-size:12px'>Sweep: comma-separated values, one run per "
                f"combination ({v.runs} run(s)) · {esc(lr_default)} is a good centre</span>"
            )
            self.start_w.description = f"Start sweep ({v.runs} runs)"
        else:
            self.lr_w.placeholder = f"default {lr_default}"
            self.duration_w.placeholder = "e.g. 3"
            self.rank_w.placeholder = "16"
            self.lr_help.value = (
                f"<span class='td-muted' style='font-size:12px'>blank = {esc(lr_default)} · AdamW, 2% warmup, linear decay</span>"
            )
            self.start_w.description = "Start training"
        if info and v.default_context:
            self.context_w.placeholder = f"default {v.default_context:,}"
            context_note = f"blank = {v.default_context:,} · at most {info.max_context_length:,} for {info.name}"
        else:
            self.context_w.placeholder = "the model's default"
            context_note = "blank = the model's default (at most 8,192) · choose a model to see its maximum"
        self.context_help.value = f"<span class='td-muted' style='font-size:12px'>{esc(context_note)}</span>"
        self.devices_w.placeholder, devices_note = _devices_help(self._devices)
        self.devices_help.value = f"<span class='td-muted' style='font-size:12px'>{esc(devices_note)}</span>"
        self.lora_w.layout.display = "none" if state.adapter == "full" else None
        self.modules_w.layout.display = None if state.adapter_targets == "custom" else "none"
        self.method_help.value = f"<span class='td-muted' style='font-size:12px'>{esc(METHOD_HELP[state.adapter])}</span>"
        try:
            rank = state.adapter_rank.split(",")[0] if state.sweep else state.adapter_rank
            parsed = checks.parse_adapter(LoRA(rank=_rank(rank)))
            alpha_default = f"{parsed['alpha']:g}" if parsed else ""
        except ValueError:
            alpha_default = ""
        self.alpha_w.placeholder = alpha_default or "2 × rank"
        alpha_note = f"blank = 2 × rank ({alpha_default})" if alpha_default else "blank = 2 × rank"
        self.alpha_help.value = (
            f"<span class='td-muted' style='font-size:12px'>{alpha_note} · scales the update by alpha / rank</span>"
        )
        context = v.params.get("context_length") or v.default_context
        for name, out in (("train_data_path", self.check_out), ("eval_data_path", self.check_eval_out)):
            out.value = render_data_check(v.checks[name], context, problems=False) if name in v.checks else ""

        by_field = v.by_field()
        for field, box in self._errors.items():
            issues = by_field.get(field, [])
            box.value = "".join(
                f"<div class='td-issue' style='color:var(--jp-error-color1,#b91c1c);font-size:12px'>{esc(i.text())}</div>"
                for i in issues
            )
            self._show_fixes(field, tuple(dict.fromkeys(i.fix for i in issues if i.fix)))
        general = [i for f, issues in by_field.items() if f not in self._errors for i in issues]
        self._general.value = "".join(
            f"<div class='td-issue' style='color:var(--jp-error-color1,#b91c1c)'>{esc(i.text())}</div>" for i in general
        )
        for section, fields in ((self.evaluation_w, EVALUATION), (self.advanced_w, ADVANCED)):
            if any(by_field.get(f) for f in fields):
                section.selected_index = 0  # unfold a section that holds an error
        if self._strict and v.issues:
            self.status_w.value = _note(f"{len(v.issues)} problem(s): fix the fields marked in red first", error=True)
        else:
            self.status_w.value = self._note
        self.preview.code = self.code(v)
        if self._estimate is not None:
            estimate = self.current_estimate()
            self.estimate_out.value = (
                _note(str(estimate.get("message", ""))) if estimate is not None
                else _note("the form changed since the estimate: Estimate again")
            )
        elif self._pending_estimate is not None and self._pending_estimate != _unforced(self.state()):
            self._pending_estimate = None
            self.estimate_out.value = _note("the form changed while the service measured: Estimate again")
        return v

    def _show_fixes(self, field: str, fixes: tuple[Fix, ...]) -> None:
        if self._fixes_shown.get(field, ()) == fixes:
            return
        box = self._fix_boxes[field]
        for old in box.children:
            old.close()
        buttons = []
        for fix in fixes:
            button = w.Button(description=fix.label, tooltip=fix.label, layout=w.Layout(width="auto"))
            button.add_class("td-fix")
            button.on_click(lambda _b, fix=fix: self.apply_fix(fix))
            buttons.append(button)
        box.children = tuple(buttons)
        self._fixes_shown[field] = fixes

    # -- snapshots --------------------------------------------------------------------------------
    def _snapshot_text(self) -> str:
        monitors = [m._snapshot_text() for m in self.monitors.children if isinstance(m, (RunMonitor, RunComparison))]
        return "\n\n".join(["tunedeck training form\n" + self.code(), *monitors])

    def _snapshot_html(self) -> str:
        esc = _snapshot.esc
        monitors = "".join(m._snapshot_html() for m in self.monitors.children
                           if isinstance(m, (RunMonitor, RunComparison)))
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


def _devices_help(devices: DeviceInfo | None) -> tuple[str, str]:
    """Devices' placeholder and help line: what blank means, what a device is, and how many there are."""
    how = "processes of the run, one {} each: DDP, or FSDP sharding with TUNEDECK_SHARDING"
    if devices is None:
        return "default", ("blank = the service's default (TUNEDECK_NUM_DEVICES, else 1) · "
                           + how.format("device (GPU, or CPU core)"))
    default = (f"blank = {devices.default} (the service's default: TUNEDECK_NUM_DEVICES, else 1)" if devices.default
               else "blank = the service's TUNEDECK_NUM_DEVICES, which is invalid: give a number")
    return (f"default {devices.default}" if devices.default else "e.g. 1"), (
        f"{default} · {how.format(devices.noun)} · this service has {devices.described}")


def _rank(text: str) -> Any:
    text = text.strip()
    try:
        return int(text) if text else LoRA.rank
    except ValueError:
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


def _split_duration(text: Any) -> tuple[str, str]:
    """form(training_duration=...) -> (the number as typed, the unit): '0ep' stays 0, for the check to refuse."""
    if text is None or text == "":
        return "1", "ep"
    s = str(text).strip()
    for unit in ("ep", "tok", "ba"):
        if s.endswith(unit):
            return s[: -len(unit)].strip().replace("_", ""), unit
    return s, "ep"


def _unforced(state: FormState) -> FormState:
    """The state an estimate is of (pressing Start changes no field)."""
    return dataclasses.replace(state, strict=False)


def _wire(params: dict[str, Any]) -> dict[str, Any]:
    """create()'s keyword arguments as create() sends them (absolute paths, the adapter as a dict)."""
    out = dict(params)
    out["model"] = fm._model_path(out["model"])
    for name in ("train_data_path", "eval_data_path"):
        if out.get(name):
            out[name] = fm._data_path(out[name])
    if out.get("custom_weights_path"):
        out["custom_weights_path"] = fm._weights_path(out["custom_weights_path"])
    if "adapter" in out:
        out["adapter"] = fm._adapter(out["adapter"])
    return {k: v for k, v in out.items() if v is not None}


def _note(text: str, error: bool = False) -> str:
    color = "var(--jp-error-color1,#b91c1c)" if error else "var(--jp-ui-font-color2,#4b5563)"
    return f"<span style='color:{color};font-size:12px'>{_snapshot.esc(text)}</span>"


def _indented(widget: w.Widget) -> w.HBox:
    spacer = w.Label("")
    spacer.add_class("td-label")
    line = w.HBox([spacer, widget])
    line.add_class("td-field-line")
    return line
