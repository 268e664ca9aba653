// The loss chart: train loss as a line (EMA-smoothed on request, the raw curve faint behind it), eval
// loss as a dashed line with dots, axis titles, a hover read-out, a log-scale option; and sparklines for
// the small panels (learning rate, tok/s).
//
// Drawn as SVG by hand rather than with a charting library: anywidget loads one ES module from a string
// (no bundler, no network), the libraries small enough to inline (uPlot, ~45 kB) draw on a canvas whose
// points and tick labels a test cannot find as elements, and what is needed here is small: the maths
// below (a 1-2-5 "nice numbers" tick algorithm, as in Heckbert's Graphics Gems article and d3's
// ticks, and a TensorBoard-style EMA) is pure and unit tested; the DOM part only materialises a scene.

const SVG = "http://www.w3.org/2000/svg";

// -- series ---------------------------------------------------------------------------------------------

/** Points [step, value] of one metric, sorted by step; a step logged twice (a resumed run redoes steps)
 *  keeps its newest point (highest id). Non-finite values are dropped. */
export function metricSeries(metrics, name) {
  const byStep = new Map();
  for (const m of metrics) {
    if (m.name !== name || typeof m.value !== "number" || !isFinite(m.value) || typeof m.step !== "number") continue;
    const seen = byStep.get(m.step);
    if (!seen || (m.id ?? 0) >= (seen.id ?? 0)) byStep.set(m.step, m);
  }
  return [...byStep.values()].sort((a, b) => a.step - b.step).map((m) => [m.step, m.value]);
}

/** Split metric points into the chart's series, each sorted by step: {train: [[step, v]], eval: [...]}. */
export function lossSeries(metrics) {
  return { train: metricSeries(metrics, "train/loss"), eval: metricSeries(metrics, "eval/loss") };
}

/** At most maxPoints points: the mean of equal buckets, keeping the first and last point exactly. */
export function downsample(points, maxPoints) {
  if (points.length <= maxPoints || maxPoints < 3) return points.slice();
  const out = [points[0]];
  const inner = points.slice(1, -1);
  const buckets = maxPoints - 2;
  const size = inner.length / buckets;
  for (let b = 0; b < buckets; b++) {
    const chunk = inner.slice(Math.floor(b * size), Math.floor((b + 1) * size));
    if (!chunk.length) continue;
    const x = chunk.reduce((s, p) => s + p[0], 0) / chunk.length;
    const y = chunk.reduce((s, p) => s + p[1], 0) / chunk.length;
    out.push([x, y]);
  }
  out.push(points[points.length - 1]);
  return out;
}

/** TensorBoard's smoothing: an exponential moving average with its start-up bias removed
 *  (s_t = w·s_{t-1} + (1−w)·v_t, divided by 1 − w^t), so the first points are not pulled toward 0.
 *  weight 0 returns the points unchanged. */
export function ema(points, weight) {
  const w = Math.min(0.999, Math.max(0, Number(weight) || 0));
  if (w === 0) return points.slice();
  let last = 0;
  let n = 0;
  return points.map(([x, v]) => {
    last = last * w + (1 - w) * v;
    n += 1;
    return [x, last / (1 - Math.pow(w, n))];
  });
}

/** The last point of a metric by id (what the service reported last), or undefined. */
export function latestPoint(metrics, name) {
  let best;
  for (const m of metrics) if (m.name === name && typeof m.value === "number" && (!best || (m.id ?? 0) >= (best.id ?? 0))) best = m;
  return best;
}

// -- ticks ----------------------------------------------------------------------------------------------

/** The tick step for about `count` intervals over `span`: 1, 2 or 5 times a power of ten, as
 *  {factor, power} so tick values can be computed exactly (see tickValue). null for an empty span. */
export function tickStep(span, count = 5) {
  if (!(span > 0) || !isFinite(span)) return null;
  const raw = span / Math.max(1, count);
  const power = Math.floor(Math.log10(raw));
  const error = raw / Math.pow(10, power);
  const factor = error >= Math.sqrt(50) ? 10 : error >= Math.sqrt(10) ? 5 : error >= Math.SQRT2 ? 2 : 1;
  return factor === 10 ? { factor: 1, power: power + 1 } : { factor, power };
}

/** i times the step, as the double nearest the decimal tick (3 × 0.1 → 0.3, not 0.30000000000000004):
 *  parsing "<integer>e<power>" rounds once, where multiplying by a power of ten would round twice. */
export function tickValue(i, { factor, power }) {
  return Number(`${i * factor}e${power}`);
}

function stepSize(step) {
  return tickValue(1, step);
}

/** The text of a tick: exactly the tick's value (Number(label) === value) in the fewest digits the step
 *  needs; scientific notation for very small or very large magnitudes. */
export function tickLabel(value, step) {
  if (value === 0) return "0";
  const mag = Math.abs(value);
  if (mag >= 1e6 || mag < 1e-4) {
    const exp = Math.floor(Math.log10(mag));
    return value.toExponential(Math.min(20, Math.max(0, exp - step.power))).replace("e+", "e");
  }
  return value.toFixed(Math.min(20, Math.max(0, -step.power)));
}

/** Whether [min, max] is too narrow for doubles to hold distinct ticks (then it is treated as one value). */
function degenerate(min, max) {
  return min === max || Math.abs(max - min) <= 1e-12 * Math.max(Math.abs(min), Math.abs(max));
}

/** About `count` round tick values inside [min, max] (both ends included when they are round). */
export function niceTicks(min, max, count = 5) {
  return linearTicks(min, max, count).map((t) => t.value);
}

/** Ticks [{value, label}] for a linear axis over [min, max]. minStep: the smallest step allowed (1 for
 *  steps, which are integers). */
export function linearTicks(min, max, count = 5, minStep = 0) {
  if (!isFinite(min) || !isFinite(max)) return [];
  if (min > max) [min, max] = [max, min];
  if (degenerate(min, max)) {
    const pad = Math.abs(min) * 0.1 || 1;
    [min, max] = [min - pad, max + pad];
  }
  let step = tickStep(max - min, count);
  if (step && minStep && stepSize(step) < minStep) step = tickStep(minStep, 1);
  if (!step) return [];
  const size = stepSize(step);
  const first = Math.ceil(min / size - 1e-9);
  const last = Math.floor(max / size + 1e-9);
  if (last - first > 1000 || !(Math.abs(first) < 1e15 && Math.abs(last) < 1e15)) return [];
  const out = [];
  for (let i = first; i <= last; i++) {
    const value = tickValue(i, step) || 0; // no "-0"
    out.push({ value, label: tickLabel(value, step) });
  }
  return out;
}

/** [lo, hi] widened to whole tick steps (d3's nice()), so the end ticks sit on the plot's edges. */
export function niceDomain(min, max, count = 5) {
  if (!isFinite(min) || !isFinite(max)) return [0, 1];
  if (degenerate(min, max)) {
    const pad = Math.abs(min) * 0.1 || 1;
    [min, max] = [min - pad, max + pad];
  }
  let [lo, hi] = [min, max];
  for (let k = 0; k < 10; k++) {
    const step = tickStep(hi - lo, count);
    if (!step) break;
    const size = stepSize(step);
    const nlo = tickValue(Math.floor(lo / size + 1e-9), step);
    const nhi = tickValue(Math.ceil(hi / size - 1e-9), step);
    if (nlo === lo && nhi === hi) break;
    [lo, hi] = [nlo, nhi];
  }
  return [lo, hi];
}

/** Ticks [{value, label}] for a log axis over [min, max] (both > 0): powers of ten when the range spans
 *  several, else 1-2-5 (then 1…9) multiples of powers of ten, else round linear values — the first of
 *  these that gives at least 3 ticks spread over most of the axis. Positions are log-mapped; each label is
 *  still exactly its value. */
export function logTicks(min, max, count = 5) {
  if (!(min > 0) || !(max > 0) || !isFinite(min) || !isFinite(max)) return [];
  if (min > max) [min, max] = [max, min];
  const k0 = Math.floor(Math.log10(min)) - 1;
  const k1 = Math.ceil(Math.log10(max)) + 1;
  if (k1 - k0 > 400) return [];
  const inRange = (v) => v >= min * (1 - 1e-12) && v <= max * (1 + 1e-12);
  const multiples = (factors) => {
    const out = [];
    for (let k = k0; k <= k1; k++)
      for (const f of factors) {
        const step = { factor: f, power: k };
        const value = tickValue(1, step);
        if (inRange(value)) out.push({ value, label: tickLabel(value, step) });
      }
    return out;
  };
  const span = Math.log10(max) - Math.log10(min);
  const covers = (ticks) => ticks.length >= 3 && Math.log10(ticks[ticks.length - 1].value / ticks[0].value) >= 0.6 * span;
  let powers = multiples([1]);
  if (powers.length > count + 1) {
    const every = Math.ceil(powers.length / (count + 1));
    powers = powers.filter((t) => Math.round(Math.log10(t.value)) % every === 0);
  }
  if (covers(powers)) return powers;
  for (const factors of [[1, 2, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9]]) {
    const ticks = multiples(factors);
    if (covers(ticks) && ticks.length <= 2 * count + 1) return ticks;
  }
  return linearTicks(min, max, count).filter((t) => t.value > 0);
}

// -- scales ---------------------------------------------------------------------------------------------

function minMax(values) {
  let [lo, hi] = [Infinity, -Infinity];
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  return [lo, hi];
}

/** A y scale over `values`: {log, domain, ticks, norm(v) → 0 (bottom) … 1 (top), invert(t)}. A log scale
 *  over values with none > 0 falls back to linear. */
export function yScale(values, { log = false, count = 5 } = {}) {
  const finite = values.filter((v) => isFinite(v));
  const positive = finite.filter((v) => v > 0);
  if (log && positive.length) {
    let [lo, hi] = minMax(positive).map(Math.log10);
    const pad = Math.max((hi - lo) * 0.05, 0.02);
    [lo, hi] = [Math.max(-307, lo - pad), Math.min(307, hi + pad)];
    const domain = [Math.pow(10, lo), Math.pow(10, hi)];
    return {
      log: true, domain, ticks: logTicks(domain[0], domain[1], count),
      norm: (v) => (Math.log10(v) - lo) / (hi - lo),
      invert: (t) => Math.pow(10, lo + t * (hi - lo)),
    };
  }
  if (!finite.length) return null;
  let [min, max] = minMax(finite);
  if (degenerate(min, max)) {
    const pad = Math.abs(min) * 0.1 || 1;
    [min, max] = [min - pad, max + pad];
  } else {
    const pad = (max - min) * 0.05;
    [min, max] = [min >= 0 ? Math.max(0, min - pad) : min - pad, max + pad]; // a loss axis need not go below zero
  }
  const [lo, hi] = niceDomain(min, max, count);
  return {
    log: false, domain: [lo, hi], ticks: linearTicks(lo, hi, count),
    norm: (v) => (v - lo) / (hi - lo),
    invert: (t) => lo + t * (hi - lo),
  };
}

/** The x (step) scale: the steps' extent, widened to a unit around a single step. */
export function xScale(steps, count = 5) {
  if (!steps.length) return null;
  let [lo, hi] = minMax(steps);
  if (lo === hi) [lo, hi] = [Math.max(0, lo - 1), lo + 1];
  return {
    domain: [lo, hi],
    ticks: linearTicks(lo, hi, count, 1).map((t) => ({ value: t.value, label: Math.round(t.value).toLocaleString("en-US") })),
    norm: (v) => (v - lo) / (hi - lo),
    invert: (t) => lo + t * (hi - lo),
  };
}

/** The extent of all series: [xmin, xmax, ymin, ymax], or null when there is nothing to draw. */
export function extent(seriesList) {
  const pts = seriesList.flat();
  if (!pts.length) return null;
  const x = xScale(pts.map((p) => p[0]));
  const y = yScale(pts.map((p) => p[1]));
  return [x.domain[0], x.domain[1], y.domain[0], y.domain[1]];
}

// -- layout and scene (pure: tested without a DOM) -----------------------------------------------------

const DOTS_UP_TO = 20; // a short series gets a dot per point (one point has no line to show it)

/** Everything the chart draws, as numbers: series, scales, pixel maps, ticks with their positions. */
export function chartLayout(metrics, { width = 560, height = 264, maxPoints = 600, smooth = 0, log = false } = {}) {
  const series = lossSeries(metrics);
  let train = series.train;
  let evals = series.eval;
  if (log) [train, evals] = [train.filter((p) => p[1] > 0), evals.filter((p) => p[1] > 0)];
  const all = [...train, ...evals];
  const layout = { width, height, train, eval: evals, smoothed: null, empty: !all.length, log: false };
  if (!all.length) return layout;
  const smoothed = smooth > 0 && train.length > 1 ? ema(train, smooth) : null;
  const y = yScale(all.map((p) => p[1]), { log, count: Math.max(3, Math.floor(height / 48)) });
  const x = xScale(all.map((p) => p[0]), Math.max(2, Math.floor(width / 90)));
  const labelWidth = Math.max(...y.ticks.map((t) => t.label.length), 1) * 6;
  const m = { left: 22 + labelWidth + 6, right: 14, top: 10, bottom: 36 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const sx = (v) => m.left + x.norm(v) * plotW;
  const sy = (v) => m.top + (1 - y.norm(v)) * plotH;
  const unx = (px) => x.invert((px - m.left) / plotW);
  const uny = (py) => y.invert(1 - (py - m.top) / plotH);
  return Object.assign(layout, {
    smoothed, x, y, margin: m, plotW, plotH, sx, sy, unx, uny, log: y.log,
    yTicks: y.ticks.map((t) => ({ ...t, pos: sy(t.value) })),
    xTicks: x.ticks.map((t) => ({ ...t, pos: sx(t.value) })),
    drawTrain: downsample(smoothed || train, maxPoints),
    drawRaw: smoothed ? downsample(train, maxPoints) : null,
    drawEval: downsample(evals, maxPoints),
  });
}

function pathOf(pts, sx, sy) {
  return pts.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
}

/** The chart as a list of SVG nodes {tag, attrs, text}. */
export function chartScene(layout) {
  const { width, height } = layout;
  if (layout.empty)
    return [{ tag: "text", attrs: { x: width / 2, y: height / 2, "text-anchor": "middle", class: "td-chart-empty" }, text: "no loss points yet" }];
  const { margin: m, sx, sy, plotH } = layout;
  const nodes = [];
  const right = width - m.right;
  const bottom = m.top + plotH;
  for (const t of layout.yTicks) {
    nodes.push({ tag: "line", attrs: { x1: m.left, x2: right, y1: t.pos, y2: t.pos, class: "td-chart-grid" } });
    nodes.push({ tag: "text", attrs: { x: m.left - 6, y: t.pos, dy: "0.32em", "text-anchor": "end", class: "td-tick td-tick-y", "data-testid": "y-tick", "data-value": t.value }, text: t.label });
  }
  for (const t of layout.xTicks) {
    nodes.push({ tag: "line", attrs: { x1: t.pos, x2: t.pos, y1: bottom, y2: bottom + 4, class: "td-chart-tickmark" } });
    nodes.push({ tag: "text", attrs: { x: t.pos, y: bottom + 15, "text-anchor": "middle", class: "td-tick td-tick-x", "data-testid": "x-tick", "data-value": t.value }, text: t.label });
  }
  nodes.push({ tag: "line", attrs: { x1: m.left, x2: right, y1: bottom, y2: bottom, class: "td-chart-axis" } });
  nodes.push({ tag: "text", attrs: { x: m.left + layout.plotW / 2, y: height - 4, "text-anchor": "middle", class: "td-axis-title", "data-testid": "x-title" }, text: "step" });
  const ty = m.top + plotH / 2;
  nodes.push({ tag: "text", attrs: { x: 11, y: ty, transform: `rotate(-90 11 ${ty})`, "text-anchor": "middle", class: "td-axis-title", "data-testid": "y-title" }, text: layout.log ? "loss (log scale)" : "loss" });
  if (layout.drawRaw && layout.drawRaw.length) nodes.push({ tag: "path", attrs: { d: pathOf(layout.drawRaw, sx, sy), class: "td-line-train-raw", "data-testid": "train-raw-line" } });
  if (layout.drawTrain.length) nodes.push({ tag: "path", attrs: { d: pathOf(layout.drawTrain, sx, sy), class: "td-line-train", "data-testid": "train-line" } });
  if (layout.train.length <= DOTS_UP_TO)
    for (const [x, y] of layout.train) nodes.push({ tag: "circle", attrs: { cx: sx(x), cy: sy(y), r: 2.5, class: layout.smoothed ? "td-dot-train td-dot-raw" : "td-dot-train", "data-testid": "train-dot", "data-step": x, "data-value": y } });
  if (layout.drawEval.length) {
    nodes.push({ tag: "path", attrs: { d: pathOf(layout.drawEval, sx, sy), class: "td-line-eval", "data-testid": "eval-line" } });
    for (const [x, y] of layout.drawEval) nodes.push({ tag: "circle", attrs: { cx: sx(x), cy: sy(y), r: 3, class: "td-dot-eval", "data-testid": "eval-dot", "data-step": x, "data-value": y } });
  }
  return nodes;
}

/** The point of a sorted series nearest to step x (binary search), or null. */
export function nearest(points, x) {
  if (!points.length) return null;
  let lo = 0;
  let hi = points.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (points[mid][0] <= x) lo = mid;
    else hi = mid;
  }
  return Math.abs(points[lo][0] - x) <= Math.abs(points[hi][0] - x) ? points[lo] : points[hi];
}

/** What the hover read-out says at pixel column px: {step, train, smoothed, eval, evalStep} (nulls where
 *  a series has nothing), or null outside the plot / on an empty chart. */
export function readoutAt(layout, px) {
  if (layout.empty) return null;
  const { margin: m } = layout;
  if (px < m.left - 4 || px > layout.width - m.right + 4) return null;
  const x = layout.unx(Math.min(Math.max(px, m.left), layout.width - m.right));
  const t = nearest(layout.train, x);
  const e = nearest(layout.eval, t ? t[0] : x);
  const out = { step: t ? t[0] : e[0], train: t ? t[1] : null, smoothed: null, eval: e ? e[1] : null, evalStep: e ? e[0] : null };
  if (t && layout.smoothed) out.smoothed = nearest(layout.smoothed, t[0])[1];
  return out;
}

// -- sparklines -----------------------------------------------------------------------------------------

/** A sparkline's path over [[step, v]] in a width × height box (a flat line for one point or a constant). */
export function sparkPath(points, width, height, maxPoints = 200) {
  const pts = downsample(points, maxPoints);
  if (!pts.length) return "";
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  const [x0, x1] = minMax(xs);
  const [y0, y1] = minMax(ys);
  const pad = 2;
  const sx = (x) => (x1 === x0 ? width - pad : pad + ((x - x0) / (x1 - x0)) * (width - 2 * pad));
  const sy = (y) => (y1 === y0 ? height / 2 : pad + (1 - (y - y0) / (y1 - y0)) * (height - 2 * pad));
  if (pts.length === 1) return `M${pad},${sy(ys[0]).toFixed(1)}L${(width - pad).toFixed(1)},${sy(ys[0]).toFixed(1)}`;
  return pathOf(pts, sx, sy);
}

// -- DOM ------------------------------------------------------------------------------------------------

export function svgNode({ tag, attrs, text }) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

/** Draw the chart into an <svg> (cleared first). Returns its layout (layout.empty: nothing drawn). */
export function drawLossChart(svg, metrics, options = {}) {
  const layout = chartLayout(metrics, options);
  svg.replaceChildren(...chartScene(layout).map(svgNode));
  svg.setAttribute("viewBox", `0 0 ${layout.width} ${layout.height}`);
  return layout;
}
