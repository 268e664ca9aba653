// The comparison view (anywidget): several runs' loss curves overlaid, one colour per run (train solid,
// eval dashed with dots), a legend naming each run's sweep cell, and a table of settings and results.
// State comes as two traitlets set by the kernel (ui/compare.py): `rows` (one per run, with its colour)
// and `series` ({name: {train: [[step, loss]], eval: [...]}}). Scales and ticks are loss_chart.js's.
import { h, setChildren, statusBadge, fmtDuration, fmtNumber, markStale } from "./common.js";
import { yScale, xScale, svgNode } from "./loss_chart.js";

const HEIGHT = 280;

/** Everything the overlay draws, as numbers (pure: tested without a DOM). Hidden runs are left out of
 *  the scales too, so hiding an outlier re-scales the rest. log: a log y axis. */
export function overlayLayout(rows, series, { width = 640, height = HEIGHT, log = false, hidden = new Set() } = {}) {
  const lines = [];
  for (const r of rows) {
    if (hidden.has(r.name)) continue;
    const s = series[r.name] || {};
    for (const kind of ["train", "eval"]) {
      let pts = (s[kind] || []).filter((p) => isFinite(p[1]));
      if (log) pts = pts.filter((p) => p[1] > 0);
      if (pts.length) lines.push({ name: r.name, color: r.color, kind, pts });
    }
  }
  const all = lines.flatMap((l) => l.pts);
  if (!all.length) return { width, height, empty: true, lines };
  const y = yScale(all.map((p) => p[1]), { log, count: Math.max(3, Math.floor(height / 48)) });
  const x = xScale(all.map((p) => p[0]), Math.max(2, Math.floor(width / 90)));
  const labelWidth = Math.max(...y.ticks.map((t) => t.label.length), 1) * 6;
  const m = { left: 22 + labelWidth + 6, right: 14, top: 10, bottom: 36 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const sx = (v) => m.left + x.norm(v) * plotW;
  const sy = (v) => m.top + (1 - y.norm(v)) * plotH;
  return {
    width, height, empty: false, lines, margin: m, plotW, plotH, sx, sy, log: y.log,
    yTicks: y.ticks.map((t) => ({ ...t, pos: sy(t.value) })),
    xTicks: x.ticks.map((t) => ({ ...t, pos: sx(t.value) })),
  };
}

/** The overlay as SVG nodes {tag, attrs, text}. */
export function overlayScene(layout) {
  const { width, height } = layout;
  if (layout.empty)
    return [{ tag: "text", attrs: { x: width / 2, y: height / 2, "text-anchor": "middle", class: "td-chart-empty" }, text: "no loss points yet" }];
  const { margin: m, sx, sy, plotH } = layout;
  const right = width - m.right;
  const bottom = m.top + plotH;
  const nodes = [];
  for (const t of layout.yTicks) {
    nodes.push({ tag: "line", attrs: { x1: m.left, x2: right, y1: t.pos, y2: t.pos, class: "td-chart-grid" } });
    nodes.push({ tag: "text", attrs: { x: m.left - 6, y: t.pos, dy: "0.32em", "text-anchor": "end", class: "td-tick", "data-testid": "y-tick", "data-value": t.value }, text: t.label });
  }
  for (const t of layout.xTicks)
    nodes.push({ tag: "text", attrs: { x: t.pos, y: bottom + 15, "text-anchor": "middle", class: "td-tick", "data-testid": "x-tick", "data-value": t.value }, text: t.label });
  nodes.push({ tag: "line", attrs: { x1: m.left, x2: right, y1: bottom, y2: bottom, class: "td-chart-axis" } });
  nodes.push({ tag: "text", attrs: { x: m.left + layout.plotW / 2, y: height - 4, "text-anchor": "middle", class: "td-axis-title" }, text: "step" });
  const ty = m.top + plotH / 2;
  nodes.push({ tag: "text", attrs: { x: 11, y: ty, transform: `rotate(-90 11 ${ty})`, "text-anchor": "middle", class: "td-axis-title" }, text: layout.log ? "loss (log scale)" : "loss" });
  for (const l of layout.lines) {
    const d = l.pts.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
    const attrs = { d, stroke: l.color, class: `td-cmp-line td-cmp-${l.kind}`, "data-testid": `${l.kind}-line`, "data-run": l.name, "data-points": l.pts.length };
    nodes.push({ tag: "path", attrs });
    if (l.kind === "eval" || l.pts.length === 1)
      for (const [x, y] of l.pts) nodes.push({ tag: "circle", attrs: { cx: sx(x), cy: sy(y), r: 2.5, fill: l.color, "data-testid": `${l.kind}-dot`, "data-run": l.name } });
  }
  return nodes;
}

const COLUMNS = [
  ["", "td-cmp-swatch"], ["run", "td-cmp-name"], ["learning rate", ""], ["duration", ""], ["LoRA rank", ""], ["status", ""],
  ["final loss", "td-num"], ["final eval loss", "td-num"], ["time", "td-num"], ["registered", "td-cmp-registered"],
];

/** One table row's cell texts (the kernel's text snapshot says the same: ui/compare.py table_row). */
export function rowCells(r) {
  const num = (v) => (v === null || v === undefined ? "" : fmtNumber(v));
  return {
    name: r.name,
    learning_rate: r.learning_rate === null || r.learning_rate === undefined ? "default" : String(r.learning_rate),
    training_duration: r.training_duration || "default",
    lora_rank: r.lora_rank === null || r.lora_rank === undefined ? "" : String(r.lora_rank),
    loss: num(r.loss),
    eval_loss: num(r.eval_loss),
    time: fmtDuration(r.seconds),
    registered: r.registered_model_version ? `${r.registered_model_name} v${r.registered_model_version}` : "",
  };
}

function render({ model, el }) {
  const hidden = new Set();
  let log = false;
  const root = h("div", { class: "td-root td-compare", testid: "compare" });
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "td-chart td-cmp-chart");
  svg.dataset.testid = "compare-chart";
  const logBox = h("input", { type: "checkbox", testid: "log-scale" });
  logBox.addEventListener("change", () => { log = logBox.checked; draw(); });
  const title = h("div", { class: "td-cmp-title" });
  const legend = h("div", { class: "td-cmp-legend", testid: "legend" });
  const table = h("table", { class: "td-cmp-table", testid: "compare-table" });
  const error = h("div", { class: "td-error", testid: "error" });
  root.append(
    h("div", { class: "td-head" }, title, h("label", { class: "td-cmp-log" }, logBox, " log scale")),
    svg, legend, h("div", { class: "td-cmp-table-box" }, table), error,
  );
  el.appendChild(root);
  const cleanup = markStale(model, el);

  function draw() {
    const rows = model.get("rows") || [];
    const layout = overlayLayout(rows, model.get("series") || {}, { width: Math.max(280, svg.clientWidth || 640), log, hidden });
    svg.replaceChildren(...overlayScene(layout).map(svgNode));
    svg.setAttribute("viewBox", `0 0 ${layout.width} ${layout.height}`);
  }

  function drawRows() {
    const rows = model.get("rows") || [];
    const done = rows.filter((r) => ["COMPLETED", "STOPPED", "FAILED", "DELETED"].includes(r.status)).length;
    title.textContent = `Comparison of ${rows.length} run${rows.length === 1 ? "" : "s"} · ${done} ended`;
    setChildren(legend, rows.map((r) => {
      const item = h("button", { class: `td-cmp-key${hidden.has(r.name) ? " td-cmp-off" : ""}`, testid: "legend-item", "data-run": r.name,
        title: `${r.name}: click to ${hidden.has(r.name) ? "show" : "hide"} its curves` },
        h("span", { class: "td-cmp-dot", style: `background:${r.color}` }), r.label || r.name);
      item.addEventListener("click", () => { hidden.has(r.name) ? hidden.delete(r.name) : hidden.add(r.name); drawRows(); draw(); });
      return item;
    }));
    const head = h("tr", {}, COLUMNS.map(([t, c]) => h("th", { class: c }, t)));
    const body = rows.map((r) => {
      const c = rowCells(r);
      return h("tr", { class: r.best ? "td-cmp-best" : "", testid: "compare-row", "data-run": r.name },
        h("td", {}, h("span", { class: "td-cmp-dot", style: `background:${r.color}` })),
        h("td", { class: "td-cmp-name", testid: "cell-name", title: r.label || "" }, c.name, r.best ? h("span", { class: "td-cmp-best-tag", testid: "best" }, " best") : null),
        h("td", { testid: "cell-lr" }, c.learning_rate), h("td", { testid: "cell-duration" }, c.training_duration),
        h("td", { testid: "cell-rank" }, c.lora_rank), h("td", {}, statusBadge(r.status)),
        h("td", { class: "td-num", testid: "cell-loss" }, c.loss), h("td", { class: "td-num", testid: "cell-eval-loss" }, c.eval_loss),
        h("td", { class: "td-num", testid: "cell-time" }, c.time), h("td", { class: "td-cmp-registered", testid: "cell-registered" }, c.registered));
    });
    setChildren(table, h("thead", {}, head), h("tbody", {}, body));
  }

  const onRows = () => { drawRows(); draw(); };
  const onError = () => { error.textContent = model.get("error") || ""; };
  model.on("change:rows", onRows);
  model.on("change:series", draw);
  model.on("change:error", onError);
  onRows();
  onError();
  const resize = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(() => draw());
  if (resize) resize.observe(svg);
  return () => {
    model.off("change:rows", onRows);
    model.off("change:series", draw);
    model.off("change:error", onError);
    if (resize) resize.disconnect();
    cleanup();
  };
}

export default { render };
