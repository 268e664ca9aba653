// The run monitor view (anywidget). Small state arrives as traitlets (summary, history, error);
// events and loss points arrive as deltas in custom messages and are merged by key, so a view can
// join at any time: it asks the kernel once for what it lacks ("sync") and merges the answer.
import { h, setChildren, statusBadge, fmtDuration, secondsBetween, fmtNumber, fmtTime, viewId, TERMINAL } from "./common.js";
import { KeyedLog } from "./keyed_log.js";
import { drawLossChart } from "./loss_chart.js";
import { EventsTable } from "./events_table.js";

/** One line describing where training is: "epoch 2 · step 140/210 · 67% · loss 1.234". */
export function progressText(s) {
  const parts = [];
  if (s.epoch !== undefined && s.epoch !== null) parts.push(`epoch ${s.epoch}`);
  const n = (x) => Number(x).toLocaleString("en-US");
  if (s.step !== undefined && s.step !== null) parts.push(s.total_steps ? `step ${n(s.step)}/${n(s.total_steps)}` : `step ${n(s.step)}`);
  if (s.progress !== undefined && s.progress !== null) parts.push(`${Math.floor(Number(s.progress))}%`);
  if (s.loss !== undefined && s.loss !== null) parts.push(`loss ${fmtNumber(s.loss)}`);
  if (s.eval_loss !== undefined && s.eval_loss !== null) parts.push(`eval loss ${fmtNumber(s.eval_loss)}`);
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
  const legend = h("div", { class: "td-legend", testid: "legend" });
  const gensBody = h("div", { class: "td-gens-body" });
  const gensPicker = h("select", { class: "td-gens-picker", testid: "gens-picker", onchange: () => { chosenCheckpoint = gensPicker.value; drawGenerations(); } });
  const gens = h("div", { class: "td-gens", testid: "generations" }, h("div", { class: "td-card-title" }, "Eval generations at ", gensPicker), gensBody);
  const footer = h("div", { class: "td-footer", testid: "footer" });
  const root = h("div", { class: "td-root td-monitor" },
    h("div", { class: "td-head" }, name, badge, progressLine, clock, actions),
    h("div", { class: "td-bar" }, bar),
    details, errorLine,
    h("div", { class: "td-grid" },
      h("div", { class: "td-card td-chart-card" }, h("div", { class: "td-card-title" }, "Loss by step ", legend), svg),
      h("div", { class: "td-card td-events-card" }, table.el)),
    gens, footer);
  el.appendChild(root);

  // -- drawing ----------------------------------------------------------------------------------
  function summary() {
    return model.get("summary") || {};
  }

  function drawHead() {
    const s = summary();
    name.textContent = model.get("run_name");
    setChildren(badge, statusBadge(s.status));
    progressLine.textContent = progressText(s);
    const pct = Math.max(0, Math.min(100, Number(s.progress) || 0));
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

  function drawFooter(s) {
    const parts = [];
    if (s.model) parts.push(h("span", {}, "model ", h("code", { text: s.model })));
    if (s.experiment_path) {
      const ids = [s.mlflow_experiment_id && `experiment id ${s.mlflow_experiment_id}`, s.mlflow_run_id && `run id ${s.mlflow_run_id}`].filter(Boolean).join(", ");
      parts.push(h("span", { testid: "experiment" }, "MLflow experiment ", h("code", { text: s.experiment_path }), ids ? ` (${ids})` : ""));
    }
    if (s.registered_model_version)
      parts.push(h("span", { testid: "registered-model" }, "registered ", h("code", { text: s.registered_model_name || "" }), ` version ${s.registered_model_version}`));
    else if (s.registered_model_name) parts.push(h("span", {}, "registers to ", h("code", { text: s.registered_model_name })));
    setChildren(footer, parts.map((p, i) => (i ? [" · ", p] : p)));
  }

  function drawChart() {
    // Draw at the element's real size (1 SVG unit = 1 px), so text is never stretched.
    const n = drawLossChart(svg, metrics.items, { width: Math.max(240, svg.clientWidth || 560), height: CHART_HEIGHT });
    const s = summary();
    const items = [];
    if (n) {
      items.push(h("span", { class: "td-key td-key-train" }, `train ${fmtNumber(lastValue("train/loss") ?? s.loss)}`));
      const ev = lastValue("eval/loss") ?? s.eval_loss;
      if (ev !== undefined && ev !== null) items.push(h("span", { class: "td-key td-key-eval" }, `eval ${fmtNumber(ev)}`));
    }
    setChildren(legend, items);
  }

  function lastValue(metricName) {
    for (let i = metrics.items.length - 1; i >= 0; i--) if (metrics.items[i].name === metricName) return metrics.items[i].value;
    return undefined;
  }

  function drawGenerations() {
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
      if (dirty.metrics || dirty.events) drawChart();
      dirty = { events: false, metrics: false };
    }, 50);
  }

  function merge(evs, pts) {
    const e = events.add(evs);
    const m = metrics.add(pts);
    if (e || m) schedule({ events: e > 0, metrics: m > 0 });
  }

  // -- wiring -----------------------------------------------------------------------------------
  const onMessage = (msg) => {
    if (!msg || typeof msg !== "object") return;
    if (msg.kind === "delta" || (msg.kind === "missing" && msg.view === me)) merge(msg.events, msg.metrics);
  };
  const onSummary = () => { cancelling = cancelling && !TERMINAL.has(summary().status); drawHead(); };
  const onHistory = () => { const hist = model.get("history") || {}; merge(hist.events, hist.metrics); };
  model.on("msg:custom", onMessage);
  model.on("change:summary", onSummary);
  model.on("change:error", drawHead);
  model.on("change:closable", drawActions);
  model.on("change:history", onHistory);
  const ticker = setInterval(drawClock, 1000);
  let lastWidth = 0;
  const resize = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(() => {
    if (Math.abs(svg.clientWidth - lastWidth) > 2) { lastWidth = svg.clientWidth; schedule({ metrics: true }); }
  });
  if (resize) resize.observe(svg);

  drawHead();
  onHistory();
  schedule({ events: true, metrics: true });
  // Ask once for whatever the history traitlet did not carry (older events, anything newer).
  model.send({ kind: "sync", view: me, first_seq: events.firstKey, last_seq: events.lastKey, first_metric_id: metrics.firstKey, last_metric_id: metrics.lastKey });

  return () => {
    clearInterval(ticker);
    if (resize) resize.disconnect();
    if (frame !== null) clearTimeout(frame);
    model.off("msg:custom", onMessage);
    model.off("change:summary", onSummary);
    model.off("change:error", drawHead);
    model.off("change:closable", drawActions);
    model.off("change:history", onHistory);
  };
}

export default { render };
