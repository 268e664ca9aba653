// The run monitor view (anywidget). Small state arrives as traitlets (summary, history, error);
// events and loss points arrive as deltas in custom messages and are merged by key, so a view can
// join at any time: it asks the kernel once for what it lacks ("sync") and merges the answer.
import { h, setChildren, statusBadge, fmtDuration, secondsBetween, fmtNumber, fmtClock, viewId, copyText, markStale, TERMINAL } from "./common.js";
import { KeyedLog } from "./keyed_log.js";
import { drawLossChart, readoutAt, latestPoint, metricSeries, sparkPath, svgNode } from "./loss_chart.js";
import { EventsTable } from "./events_table.js";

const WAITING = new Set(["PENDING", "QUEUED"]);

/** The numbers the monitor shows (header, legend, panels), from one source: the latest metric point of
 *  each kind (what the service reported last, by id), the summary only where there is no point yet. The
 *  kernel's summary follows the same rule (ui/_tracker.py), so both agree once they have the same points. */
export function currentNumbers(s, metrics) {
  const out = {
    step: s.step, total_steps: s.total_steps, epoch: s.epoch, progress: s.progress,
    loss: s.loss, eval_loss: s.eval_loss, lr: s.lr, tokens_per_second: s.tokens_per_second,
  };
  const train = latestPoint(metrics, "train/loss");
  if (train) {
    if (out.epoch !== undefined && out.epoch !== null && out.step > 0) out.epoch = (Number(out.epoch) * train.step) / out.step;
    out.step = train.step;
    out.loss = train.value;
    if (out.total_steps > 0 && s.status !== "COMPLETED") out.progress = Math.min(100, (100 * train.step) / out.total_steps);
  }
  const ev = latestPoint(metrics, "eval/loss");
  if (ev) out.eval_loss = ev.value;
  const lr = latestPoint(metrics, "train/lr");
  if (lr) out.lr = lr.value;
  const tps = latestPoint(metrics, "train/tokens_per_second");
  if (tps) out.tokens_per_second = tps.value;
  return out;
}

/** Where a waiting run stands: "2 runs ahead in the queue", "next in the queue" ("" when unknown). */
export function queueText(s) {
  if (!WAITING.has(s.status) || typeof s.queue_ahead !== "number") return "";
  if (s.queue_ahead <= 0) return "next in the queue";
  return `${s.queue_ahead} run${s.queue_ahead === 1 ? "" : "s"} ahead in the queue`;
}

/** One line describing where training is: "epoch 2 · step 140/210 · 67% · loss 1.234". */
export function progressText(s) {
  const queued = queueText(s);
  if (queued) return queued;
  const parts = [];
  if (s.epoch !== undefined && s.epoch !== null) parts.push(`epoch ${Number(Number(s.epoch).toFixed(2))}`);
  const n = (x) => Number(x).toLocaleString("en-US");
  if (s.step !== undefined && s.step !== null) parts.push(s.total_steps ? `step ${n(s.step)}/${n(s.total_steps)}` : `step ${n(s.step)}`);
  if (s.progress !== undefined && s.progress !== null) parts.push(`${Math.floor(Number(s.progress))}%`);
  if (s.loss !== undefined && s.loss !== null) parts.push(`loss ${fmtNumber(s.loss)}`);
  if (s.eval_loss !== undefined && s.eval_loss !== null) parts.push(`eval loss ${fmtNumber(s.eval_loss)}`);
  return parts.join(" · ");
}

/** The Python that loads a registered model version (tunedeck/registry.py). */
export function loadLine(name, version) {
  const v = /^\d+$/.test(String(version)) ? String(version) : JSON.stringify(String(version));
  return `import tunedeck.registry\nmodel, tokenizer = tunedeck.registry.load_model(${JSON.stringify(String(name))}, ${v})`;
}

/** The hover read-out's text: "step 140 · train 1.234 (smoothed 1.25) · eval 1.3 (step 120)". */
export function readoutText(r) {
  if (!r) return "";
  const parts = [`step ${Number(r.step).toLocaleString("en-US")}`];
  if (r.train !== null) parts.push(`train ${fmtNumber(r.train)}` + (r.smoothed !== null ? ` (smoothed ${fmtNumber(r.smoothed)})` : ""));
  if (r.eval !== null) parts.push(`eval ${fmtNumber(r.eval)}` + (r.evalStep !== r.step ? ` (step ${Number(r.evalStep).toLocaleString("en-US")})` : ""));
  return parts.join(" · ");
}

/** Eval generations grouped by checkpoint, oldest first: [{checkpoint, step, generations}]. */
export function generationsByCheckpoint(events) {
  const out = [];
  for (const e of events) {
    if (e.type !== "EVAL_GENERATIONS") continue;
    const d = e.data || {};
    out.push({ checkpoint: String(d.checkpoint ?? `step ${d.step ?? e.seq}`), step: d.step, generations: Array.isArray(d.generations) ? d.generations : [] });
  }
  return out;
}

/** The Try it box's status line for the kernel's ``tryit`` state. */
export function tryNote(t) {
  if (!t || !t.state) return "";
  const where = t.source || (t.checkpoint === "registered" ? "the registered version" : t.checkpoint ? `checkpoint ${t.checkpoint}` : "");
  if (t.state === "running") return t.note || "generating…";
  if (t.state === "error") return t.note || "the service could not answer";
  return [t.note, where && `from ${where}`].filter(Boolean).join(" · ");
}

const CHART_HEIGHT = 264;

function render({ model, el }) {
  const me = viewId();
  const events = new KeyedLog("seq");
  const metrics = new KeyedLog("id");
  const table = new EventsTable();
  let chosenCheckpoint = null; // null: follow the newest
  let confirming = false;
  let cancelling = false;
  let dirty = { events: true, metrics: true };
  let frame = null;
  const chartOptions = { smooth: 0.6, smoothing: false, log: false }; // this view's own choice, not synced
  let layout = null;
  let hoverX = null; // the pointer's x in the chart (px), while it is over it

  // -- skeleton ---------------------------------------------------------------------------------
  const name = h("span", { class: "td-run-name", testid: "run-name" });
  const badge = h("span");
  const progressLine = h("span", { class: "td-progress-text", testid: "progress-text" });
  const clock = h("span", { class: "td-clock", testid: "clock" });
  const actions = h("span", { class: "td-actions" });
  const bar = h("div", { class: "td-bar-fill", testid: "progress-bar" });
  const details = h("div", { class: "td-details", testid: "details" });
  const errorLine = h("div", { class: "td-error", testid: "error" });
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "td-chart");
  svg.dataset.testid = "loss-chart";
  const hoverLayer = svgNode({ tag: "g", attrs: { class: "td-hover" } });
  const readout = h("div", { class: "td-readout", testid: "chart-readout" });
  const legend = h("div", { class: "td-legend", testid: "legend" });
  const smoothBox = h("input", { type: "checkbox", testid: "smooth-toggle", onchange: () => { chartOptions.smoothing = smoothBox.checked; smoothWeight.disabled = !smoothBox.checked; schedule({ metrics: true }); } });
  const smoothWeight = h("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: String(chartOptions.smooth), disabled: "", class: "td-smooth-weight", testid: "smooth-weight", title: "smoothing weight (EMA, as TensorBoard's)", oninput: () => { chartOptions.smooth = Number(smoothWeight.value); schedule({ metrics: true }); } });
  const logBox = h("input", { type: "checkbox", testid: "log-toggle", onchange: () => { chartOptions.log = logBox.checked; schedule({ metrics: true }); } });
  const controls = h("div", { class: "td-chart-controls" },
    h("label", { title: "exponential moving average, as TensorBoard's; the raw curve stays faint behind it" }, smoothBox, " smooth"), smoothWeight,
    h("label", {}, logBox, " log scale"));
  const spark = (label, testid) => {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    line.setAttribute("class", "td-spark-svg");
    line.setAttribute("viewBox", "0 0 120 26");
    line.setAttribute("preserveAspectRatio", "none");
    const value = h("span", { class: "td-spark-value", testid: `${testid}-value` });
    const panel = h("div", { class: "td-spark", testid }, h("div", { class: "td-spark-head" }, h("span", { class: "td-spark-label", text: label }), value), line);
    return { panel, line, value };
  };
  const lrPanel = spark("learning rate", "lr-panel");
  const tpsPanel = spark("tok/s", "tps-panel");
  const chartBox = h("div", { class: "td-chart-box" }, svg, readout);
  const gensBody = h("div", { class: "td-gens-body" });
  const gensPicker = h("select", { class: "td-gens-picker", testid: "gens-picker", onchange: () => { chosenCheckpoint = gensPicker.value; drawGenerations(); } });
  const gens = h("div", { class: "td-gens", testid: "generations" }, h("div", { class: "td-card-title" }, "Eval generations at ", gensPicker), gensBody);
  const footer = h("div", { class: "td-footer", testid: "footer" });
  // -- the results card (a completed run) and its Try it box -----------------------------------------
  const resultsModel = h("div", { class: "td-results-model", testid: "results-model" });
  const resultsMlflow = h("div", { class: "td-results-mlflow", testid: "results-mlflow" });
  const resultsCheckpoints = h("div", { class: "td-results-checkpoints", testid: "results-checkpoints" });
  const resultsGens = h("div", { class: "td-results-gens", testid: "results-generations" });
  const resultsEstimate = h("div", { class: "td-results-estimate td-muted", testid: "results-estimate" });
  const tryPrompt = h("textarea", { class: "td-try-prompt", testid: "try-prompt", rows: "2", placeholder: "Ask the trained model something (Ctrl+Enter sends)",
    onkeydown: (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); sendTry(); } } });
  const tryTarget = h("select", { class: "td-try-target", testid: "try-checkpoint", title: "which model answers: the registered version or a checkpoint" });
  const tryMax = h("input", { type: "number", min: "1", max: "2048", step: "1", value: "128", class: "td-try-max", testid: "try-max-tokens", title: "the longest answer, in tokens" });
  const tryButton = h("button", { class: "td-btn", testid: "try-send", text: "Generate", onclick: () => sendTry() });
  const tryStop = h("button", { class: "td-btn", testid: "try-stop", text: "Stop", onclick: () => model.send({ kind: "try-stop" }) });
  const tryAnswer = h("div", { class: "td-try-answer", testid: "try-answer" });
  const tryStatus = h("div", { class: "td-try-status", testid: "try-status" });
  const tryBox = h("div", { class: "td-try", testid: "try-it" },
    h("div", { class: "td-card-title" }, "Try it ", h("span", { class: "td-muted td-try-where", text: "(generated by the service, not in this kernel)" })),
    tryPrompt,
    h("div", { class: "td-try-controls" },
      h("label", {}, "model ", tryTarget), h("label", {}, "max tokens ", tryMax), tryButton, tryStop),
    tryAnswer, tryStatus);
  const results = h("div", { class: "td-card td-results", testid: "results" },
    h("div", { class: "td-card-title" }, "Results"),
    resultsModel, resultsMlflow, resultsEstimate, resultsCheckpoints, resultsGens, tryBox);
  results.style.display = "none";
  const root = h("div", { class: "td-root td-monitor" },
    h("div", { class: "td-head" }, name, badge, progressLine, clock, actions),
    h("div", { class: "td-bar" }, bar),
    details, errorLine,
    h("div", { class: "td-grid" },
      h("div", { class: "td-card td-chart-card" }, h("div", { class: "td-card-title" }, "Loss by step ", legend), controls, chartBox,
        h("div", { class: "td-sparks" }, lrPanel.panel, tpsPanel.panel)),
      h("div", { class: "td-card td-events-card" }, table.el)),
    results, gens, footer);
  el.appendChild(root);

  // -- drawing ----------------------------------------------------------------------------------
  function summary() {
    return model.get("summary") || {};
  }

  function drawHead() {
    const s = summary();
    name.textContent = model.get("run_name");
    setChildren(badge, statusBadge(s.status));
    const numbers = { ...s, ...currentNumbers(s, metrics.items) };
    progressLine.textContent = progressText(numbers);
    const pct = Math.max(0, Math.min(100, Number(numbers.progress) || 0));
    bar.style.width = `${pct}%`;
    bar.className = `td-bar-fill td-status-${s.status || "UNKNOWN"}`;
    details.textContent = s.failure ? `Failed: ${s.failure}` : s.details || "";
    errorLine.textContent = model.get("error") || "";
    drawClock();
    drawActions();
    drawFooter(s);
  }

  function drawClock() {
    const s = summary();
    const parts = [];
    const elapsed = secondsBetween(s.started_at, s.completed_at);
    if (elapsed !== null) parts.push(`elapsed ${fmtDuration(elapsed)}`);
    if (s.eta_at && !s.terminal) {
      const left = secondsBetween(new Date().toISOString(), s.eta_at);
      if (left !== null) parts.push(left > 0 ? `ETA ${fmtDuration(left)}` : "ETA any moment");
    }
    clock.textContent = parts.join(" · ");
  }

  function drawActions() {
    const s = summary();
    const items = [];
    if (s.status && !TERMINAL.has(s.status)) {
      if (cancelling || s.status === "TERMINATING") items.push(h("button", { class: "td-btn", disabled: "", text: "Cancelling…" }));
      else if (confirming)
        items.push(h("span", { class: "td-confirm", testid: "confirm" }, "Stop this run? ",
          h("button", { class: "td-btn td-btn-danger", testid: "confirm-cancel", text: "Yes, cancel", onclick: () => { confirming = false; cancelling = true; model.send({ kind: "cancel" }); drawActions(); } }),
          h("button", { class: "td-btn", testid: "keep-running", text: "No", onclick: () => { confirming = false; drawActions(); } })));
      else items.push(h("button", { class: "td-btn", testid: "cancel", text: "Cancel", onclick: () => { confirming = true; drawActions(); } }));
    }
    if (model.get("closable")) items.push(h("button", { class: "td-btn td-btn-quiet", testid: "close", title: "close this monitor", text: "×", onclick: () => model.send({ kind: "close" }) }));
    setChildren(actions, items);
  }

  let copyTimer = null;
  function drawFooter(s) {
    const parts = [];
    if (s.model) parts.push(h("span", {}, "model ", h("code", { text: s.model })));
    if (s.experiment_path && !cardShown()) { // the results card names the MLflow run and version
      const ids = [s.mlflow_experiment_id && ["experiment id ", h("code", { text: s.mlflow_experiment_id })], s.mlflow_run_id && ["run id ", h("code", { text: s.mlflow_run_id })]].filter(Boolean);
      parts.push(h("span", { testid: "experiment" }, "MLflow experiment ", h("code", { text: s.experiment_path }),
        ids.length ? [" (", ids.map((x, i) => (i ? [", ", x] : x)), ")"] : ""));
    }
    if (s.registered_model_version && !cardShown()) {
      const code = loadLine(s.registered_model_name || "", s.registered_model_version);
      parts.push(h("span", { testid: "registered-model" }, "registered ", h("code", { text: s.registered_model_name || "" }), ` version ${s.registered_model_version}`));
      setChildren(footer, parts.map((p, i) => (i ? [" · ", p] : p)),
        h("div", { class: "td-load" }, h("pre", { class: "td-load-line", testid: "load-line", text: code }), ...copyButton(code, "copy-load")));
      return;
    }
    if (s.registered_model_name && !s.registered_model_version) parts.push(h("span", {}, "registers to ", h("code", { text: s.registered_model_name })));
    setChildren(footer, parts.map((p, i) => (i ? [" · ", p] : p)));
  }

  function drawChart() {
    // Draw at the element's real size (1 SVG unit = 1 px), so text is never stretched.
    layout = drawLossChart(svg, metrics.items, {
      width: Math.max(240, svg.clientWidth || 560), height: CHART_HEIGHT,
      smooth: chartOptions.smoothing ? chartOptions.smooth : 0, log: chartOptions.log,
    });
    svg.appendChild(hoverLayer);
    drawHover();
    const s = summary();
    const numbers = currentNumbers(s, metrics.items);
    const items = [];
    if (!layout.empty) {
      if (numbers.loss !== undefined && numbers.loss !== null) items.push(h("span", { class: "td-key td-key-train", testid: "legend-train" }, `train ${fmtNumber(numbers.loss)}`));
      if (numbers.eval_loss !== undefined && numbers.eval_loss !== null) items.push(h("span", { class: "td-key td-key-eval", testid: "legend-eval" }, `eval ${fmtNumber(numbers.eval_loss)}`));
    }
    setChildren(legend, items);
    drawSpark(lrPanel, metricSeries(metrics.items, "train/lr"), numbers.lr, fmtNumber);
    drawSpark(tpsPanel, metricSeries(metrics.items, "train/tokens_per_second"), numbers.tokens_per_second, (v) => Math.round(v).toLocaleString("en-US"));
    progressLine.textContent = progressText({ ...s, ...numbers });
  }

  function drawSpark(panel, points, current, fmt) {
    panel.panel.style.display = points.length || (current !== undefined && current !== null) ? "" : "none";
    panel.value.textContent = current !== undefined && current !== null ? fmt(current) : "";
    const d = sparkPath(points, 120, 26);
    panel.line.replaceChildren(...(d ? [svgNode({ tag: "path", attrs: { d, class: "td-spark-line", "vector-effect": "non-scaling-stroke" } })] : []));
  }

  function drawHover() {
    const r = layout && hoverX !== null ? readoutAt(layout, hoverX) : null;
    readout.textContent = readoutText(r);
    readout.style.display = r ? "" : "none";
    if (!r) { hoverLayer.replaceChildren(); return; }
    const { margin: m, sx, sy, plotH } = layout;
    const x = sx(r.step);
    const nodes = [{ tag: "line", attrs: { x1: x, x2: x, y1: m.top, y2: m.top + plotH, class: "td-hover-line", "data-testid": "hover-line" } }];
    if (r.train !== null) nodes.push({ tag: "circle", attrs: { cx: x, cy: sy(r.smoothed ?? r.train), r: 4, class: "td-hover-dot td-hover-train" } });
    if (r.eval !== null) nodes.push({ tag: "circle", attrs: { cx: sx(r.evalStep), cy: sy(r.eval), r: 4, class: "td-hover-dot td-hover-eval" } });
    hoverLayer.replaceChildren(...nodes.map(svgNode));
    // beside the cursor line, on the side with room, never past the chart's edges
    const box = chartBox.clientWidth || layout.width;
    const w = readout.offsetWidth;
    const left = x + 10 + w <= box ? x + 10 : x - 10 - w;
    readout.style.left = `${Math.round(Math.max(m.left, Math.min(left, box - w)))}px`;
  }

  const onPointer = (e) => {
    const rect = svg.getBoundingClientRect();
    hoverX = e.clientX - rect.left;
    drawHover();
  };
  const onLeave = () => { hoverX = null; drawHover(); };
  svg.addEventListener("mousemove", onPointer);
  svg.addEventListener("mouseleave", onLeave);

  function cardShown() {
    const r = model.get("results") || {};
    return Object.keys(r).length > 0;
  }

  function copyButton(code, testid) {
    const status = h("span", { class: "td-copy-status", testid: `${testid}-status` });
    const copy = h("button", { class: "td-btn td-copy", testid, text: "Copy", title: "copy the Python that loads this version",
      onclick: async () => {
        const ok = await copyText(code);
        status.textContent = ok ? "copied" : "select the text and copy it by hand";
        if (copyTimer) clearTimeout(copyTimer);
        copyTimer = setTimeout(() => { status.textContent = ""; }, 2000);
      } });
    return [copy, status];
  }

  function drawResults() {
    const r = model.get("results") || {};
    const shown = Object.keys(r).length > 0;
    results.style.display = shown ? "" : "none";
    if (!shown) return;
    const reg = r.registered;
    if (reg) {
      setChildren(resultsModel,
        h("div", {}, "Registered model ", h("code", { testid: "results-model-name", text: reg.name }), " version ", h("b", { testid: "results-model-version", text: String(reg.version) })),
        h("div", { class: "td-load" }, h("pre", { class: "td-load-line", testid: "load-line", text: reg.load_line }), ...copyButton(reg.load_line, "copy-load")));
    } else setChildren(resultsModel, h("span", { class: "td-muted", text: "No registered model version." }));
    const m = r.mlflow || {};
    const bits = [];
    if (m.experiment_path) bits.push(["experiment ", h("code", { text: m.experiment_path }), m.experiment_id ? ` (id ${m.experiment_id})` : ""]);
    if (m.run_id) bits.push(["run ", h("code", { testid: "results-mlflow-run", text: m.run_id })]);
    if (m.model_version) bits.push(["model version ", h("code", { testid: "results-mlflow-version", text: m.model_version })]);
    const open = m.run_id ? [" · ", h("button", { class: "td-btn", testid: "open-mlflow", title: "MLflow's UI, served by the tunedeck service", onclick: openMlflow, text: "Open in MLflow" })] : "";
    setChildren(resultsMlflow, bits.length ? ["MLflow: ", bits.map((b, i) => (i ? [" · ", b] : b)), open] : "");
    // the estimate made before Start against what the run took (ui/_results.py estimate_vs_actual)
    setChildren(resultsEstimate, r.estimate ? r.estimate.line : "");
    const points = r.checkpoints || [];
    setChildren(resultsCheckpoints, points.length
      ? [h("span", { class: "td-results-label", text: `Checkpoints (${points.length}): ` }),
         points.map((c, i) => [i ? ", " : "", h("code", { class: "td-ckpt", testid: "checkpoint", title: `${c.path}\nepoch ${c.epoch}, step ${c.batch}${c.created_at ? `, saved ${fmtClock(c.created_at)}` : ""}`, text: c.name }),
           c.is_latest ? h("span", { class: "td-muted", text: " (latest)" }) : ""])]
      : h("span", { class: "td-muted", text: "No checkpoints." }));
    const g = r.generations || { checkpoints: [], rows: [] };
    if (g.rows && g.rows.length) {
      setChildren(resultsGens,
        h("div", { class: "td-results-label", text: "Eval generations by checkpoint" }),
        h("div", { class: "td-gens-scroll" }, h("table", { class: "td-gens-table", testid: "gens-table" },
          h("thead", {}, h("tr", {}, h("th", { text: "prompt" }), g.checkpoints.map((c) => h("th", { text: c })))),
          h("tbody", {}, g.rows.map((row) => h("tr", { testid: "gens-row" },
            h("td", { class: "td-gen-prompt", text: row.prompt }),
            row.outputs.map((o) => h("td", { class: "td-gen-output", text: o ?? "—" }))))))));
    } else setChildren(resultsGens);
    // Try it: keep the user's choice when the list is drawn again.
    const targets = r.try_targets || [];
    const chosen = tryTarget.value;
    setChildren(tryTarget, targets.map((t) => h("option", { value: t.value, text: t.label })));
    if (targets.some((t) => t.value === chosen)) tryTarget.value = chosen;
    tryBox.style.display = targets.length ? "" : "none";
    gens.style.display = "none"; // the table above shows every checkpoint's generations
    drawTry();
  }

  function drawTry() {
    const t = model.get("tryit") || {};
    const running = t.state === "running";
    tryButton.disabled = running;
    tryStop.style.display = running ? "" : "none";
    tryAnswer.textContent = t.text || "";
    tryAnswer.style.display = t.text ? "" : "none";
    tryAnswer.className = `td-try-answer td-try-${t.state || "idle"}`;
    tryStatus.textContent = tryNote(t);
    tryStatus.className = `td-try-status${t.state === "error" ? " td-error" : ""}`;
  }

  function sendTry() {
    const prompt = tryPrompt.value;
    if (!prompt.trim()) { tryStatus.textContent = "Type a prompt first."; tryPrompt.focus(); return; }
    const max = Math.max(1, Math.min(2048, Math.round(Number(tryMax.value) || 128)));
    tryButton.disabled = true;
    tryStatus.textContent = "asking…";
    model.send({ kind: "try", prompt, checkpoint: tryTarget.value || null, max_new_tokens: max });
  }

  function drawGenerations() {
    if (cardShown()) { gens.style.display = "none"; return; }
    const all = generationsByCheckpoint(events.items);
    gens.style.display = all.length ? "" : "none";
    if (!all.length) return;
    const names = all.map((g) => g.checkpoint);
    if (chosenCheckpoint !== null && !names.includes(chosenCheckpoint)) chosenCheckpoint = null;
    const current = chosenCheckpoint ?? names[names.length - 1];
    setChildren(gensPicker, names.map((n) => h("option", { value: n, text: n, selected: n === current ? "" : null })));
    gensPicker.value = current;
    const group = all.filter((g) => g.checkpoint === current).pop();
    setChildren(gensBody, group.generations.map((g) =>
      h("div", { class: "td-gen", testid: "generation" },
        h("div", { class: "td-gen-prompt", testid: "gen-prompt", text: g.prompt ?? "" }),
        h("div", { class: "td-gen-output", testid: "gen-output", text: g.generation ?? "" }))));
  }

  function schedule(what) {
    Object.assign(dirty, what);
    if (frame !== null) return;
    frame = setTimeout(() => {
      frame = null;
      if (dirty.events) { table.setEvents(events.items); drawGenerations(); }
      if (dirty.metrics || dirty.events) drawChart(); // also the header's numbers (one source)
      dirty = { events: false, metrics: false };
    }, 50);
  }

  function merge(evs, pts) {
    const e = events.add(evs);
    const m = metrics.add(pts);
    if (e || m) schedule({ events: e > 0, metrics: m > 0 });
  }

  // -- wiring -----------------------------------------------------------------------------------
  // "Open in MLflow": a window opened on the click (no popup blocker), sent to the URL the kernel answers
  let mlflowWindow = null;
  function openMlflow() {
    mlflowWindow = window.open("", "_blank");
    model.send({ kind: "open-mlflow", view: me });
  }
  const onMessage = (msg) => {
    if (!msg || typeof msg !== "object") return;
    if (msg.kind === "open" && msg.view === me && typeof msg.url === "string" && /^https?:\/\//.test(msg.url)) {
      if (mlflowWindow && !mlflowWindow.closed) { mlflowWindow.opener = null; mlflowWindow.location.href = msg.url; }
      else window.open(msg.url, "_blank", "noopener");
      mlflowWindow = null;
      return;
    }
    if (msg.kind === "delta" || (msg.kind === "missing" && msg.view === me)) merge(msg.events, msg.metrics);
  };
  const onSummary = () => { cancelling = cancelling && !TERMINAL.has(summary().status); drawHead(); };
  const onHistory = () => { const hist = model.get("history") || {}; merge(hist.events, hist.metrics); };
  model.on("msg:custom", onMessage);
  model.on("change:summary", onSummary);
  model.on("change:error", drawHead);
  model.on("change:closable", drawActions);
  model.on("change:history", onHistory);
  const onResults = () => { drawResults(); drawHead(); };
  model.on("change:results", onResults);
  model.on("change:tryit", drawTry);
  let ticker = setInterval(drawClock, 1000);
  // A view of a dead kernel: common.css's line above it and buttons that take no clicks (td-is-stale);
  // its clock stops (elapsed time would run on for a run nobody follows any more).
  const unmark = markStale(model, el, (stale) => {
    if (stale && ticker !== null) { clearInterval(ticker); ticker = null; }
    else if (!stale && ticker === null) ticker = setInterval(drawClock, 1000);
  });
  let lastWidth = 0;
  const resize = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(() => {
    if (Math.abs(svg.clientWidth - lastWidth) > 2) { lastWidth = svg.clientWidth; schedule({ metrics: true }); }
  });
  if (resize) resize.observe(svg);

  drawResults();
  drawHead();
  onHistory();
  schedule({ events: true, metrics: true });
  // Ask once for whatever the history traitlet did not carry (older events, anything newer).
  model.send({ kind: "sync", view: me, first_seq: events.firstKey, last_seq: events.lastKey, first_metric_id: metrics.firstKey, last_metric_id: metrics.lastKey });

  return () => {
    if (ticker !== null) clearInterval(ticker);
    unmark();
    if (copyTimer) clearTimeout(copyTimer);
    svg.removeEventListener("mousemove", onPointer);
    svg.removeEventListener("mouseleave", onLeave);
    if (resize) resize.disconnect();
    if (frame !== null) clearTimeout(frame);
    model.off("msg:custom", onMessage);
    model.off("change:summary", onSummary);
    model.off("change:error", drawHead);
    model.off("change:closable", drawActions);
    model.off("change:history", onHistory);
    model.off("change:results", onResults);
    model.off("change:tryit", drawTry);
  };
}

export default { render };
