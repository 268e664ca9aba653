// The loss chart: train loss as a line, eval loss as a line with dots, drawn as SVG by hand
// (no chart library, no network). Pure helpers are exported for tests.

const SVG = "http://www.w3.org/2000/svg";

/** Split metric points into the chart's series, each sorted by step: {train: [[step, v]], eval: [...]}. */
export function lossSeries(metrics) {
  const train = [];
  const evals = [];
  for (const m of metrics) {
    if (typeof m.value !== "number" || !isFinite(m.value)) continue;
    if (m.name === "train/loss") train.push([m.step, m.value]);
    else if (m.name === "eval/loss") evals.push([m.step, m.value]);
  }
  const byStep = (a, b) => a[0] - b[0];
  return { train: train.sort(byStep), eval: evals.sort(byStep) };
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

/** About `count` round tick values covering [min, max]. */
export function niceTicks(min, max, count = 5) {
  if (!isFinite(min) || !isFinite(max)) return [];
  if (min === max) {
    const pad = Math.abs(min) * 0.1 || 1;
    min -= pad;
    max += pad;
  }
  const raw = (max - min) / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) || 10 * mag;
  const ticks = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

/** The extent of all series: [xmin, xmax, ymin, ymax], or null when there is nothing to draw. */
export function extent(seriesList) {
  const pts = seriesList.flat();
  if (!pts.length) return null;
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const [x, y] of pts) {
    x0 = Math.min(x0, x); x1 = Math.max(x1, x);
    y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  }
  if (x0 === x1) x1 = x0 + 1;
  if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05;
  const low = y0 >= 0 ? Math.max(0, y0 - pad) : y0 - pad; // a loss axis need not go below zero
  return [x0, x1, low, y1 + pad];
}

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

/** Draw the chart into an <svg> (cleared first). Returns the number of points drawn. */
export function drawLossChart(svg, metrics, { width = 560, height = 220, maxPoints = 600 } = {}) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const series = lossSeries(metrics);
  const train = downsample(series.train, maxPoints);
  const evals = downsample(series.eval, maxPoints);
  const box = extent([train, evals]);
  const m = { left: 48, right: 12, top: 10, bottom: 26 };
  if (!box) {
    svg.appendChild(el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "td-chart-empty" }, "no loss points yet"));
    return 0;
  }
  const [x0, x1, y0, y1] = box;
  const sx = (x) => m.left + ((x - x0) / (x1 - x0)) * (width - m.left - m.right);
  const sy = (y) => height - m.bottom - ((y - y0) / (y1 - y0)) * (height - m.top - m.bottom);
  const axes = el("g", { class: "td-chart-axes" });
  const yTicks = niceTicks(y0, y1, 5);
  const decimals = yTicks.length > 1 ? Math.max(0, -Math.floor(Math.log10(yTicks[1] - yTicks[0]) + 1e-9)) : 2;
  for (const t of yTicks) {
    axes.appendChild(el("line", { x1: m.left, x2: width - m.right, y1: sy(t), y2: sy(t), class: "td-chart-grid" }));
    axes.appendChild(el("text", { x: m.left - 6, y: sy(t) + 4, "text-anchor": "end" }, t.toFixed(decimals)));
  }
  for (const t of niceTicks(x0, x1, 5).filter((t) => Number.isInteger(t))) {
    axes.appendChild(el("text", { x: sx(t), y: height - 8, "text-anchor": "middle" }, t.toLocaleString()));
  }
  svg.appendChild(axes);
  const path = (pts) => pts.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
  if (train.length) svg.appendChild(el("path", { d: path(train), class: "td-line-train", "data-testid": "train-line" }));
  if (evals.length) {
    svg.appendChild(el("path", { d: path(evals), class: "td-line-eval", "data-testid": "eval-line" }));
    for (const [x, y] of evals) svg.appendChild(el("circle", { cx: sx(x), cy: sy(y), r: 3, class: "td-dot-eval" }));
  }
  return train.length + evals.length;
}
