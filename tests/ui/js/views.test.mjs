// Pure logic of the views, run with `node --test` (no browser): merging, chart maths, virtual rows.
import test from "node:test";
import assert from "node:assert/strict";

import { KeyedLog } from "../../../js/keyed_log.js";
import {
  lossSeries, downsample, niceTicks, extent, linearTicks, logTicks, yScale, xScale, tickStep, ema, chartLayout, chartScene,
  readoutAt, nearest, sparkPath, metricSeries,
} from "../../../js/loss_chart.js";
import { visibleRange, filterEvents } from "../../../js/events_table.js";
import { fmtDuration, fmtNumber, secondsBetween } from "../../../js/common.js";
import { progressText, generationsByCheckpoint, currentNumbers, queueText, loadLine, readoutText } from "../../../js/monitor.js";

test("KeyedLog merges deltas, history and replies in any order, once each", () => {
  const log = new KeyedLog("seq");
  assert.equal(log.add([{ seq: 5 }, { seq: 6 }]), 2);       // a delta before the history
  assert.equal(log.add([{ seq: 1 }, { seq: 2 }, { seq: 5 }]), 2); // history overlapping it
  assert.equal(log.add([{ seq: 3 }, { seq: 4 }, { seq: 7 }]), 3); // the sync reply
  assert.equal(log.add([{ seq: 7 }]), 0);
  assert.deepEqual(log.items.map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7]);
  assert.equal(log.firstKey, 1);
  assert.equal(log.lastKey, 7);
});

test("KeyedLog appends 10,000 events quickly", () => {
  const log = new KeyedLog("seq");
  const t0 = Date.now();
  for (let i = 1; i <= 10000; i += 10) log.add(Array.from({ length: 10 }, (_, k) => ({ seq: i + k })));
  assert.equal(log.size, 10000);
  assert.ok(Date.now() - t0 < 500);
});

test("loss series split by name and sorted by step", () => {
  const s = lossSeries([
    { name: "train/loss", step: 2, value: 1.5 }, { name: "train/loss", step: 1, value: 2 },
    { name: "eval/loss", step: 2, value: 1.7 }, { name: "train/lr", step: 1, value: 0.1 },
    { name: "train/loss", step: 3, value: NaN },
  ]);
  assert.deepEqual(s.train, [[1, 2], [2, 1.5]]);
  assert.deepEqual(s.eval, [[2, 1.7]]);
});

test("downsample keeps the ends and bounds the count", () => {
  const pts = Array.from({ length: 10000 }, (_, i) => [i, 10000 - i]);
  const out = downsample(pts, 600);
  assert.ok(out.length <= 600);
  assert.deepEqual(out[0], [0, 10000]);
  assert.deepEqual(out[out.length - 1], [9999, 1]);
  assert.deepEqual(downsample(pts.slice(0, 5), 600), pts.slice(0, 5));
});

test("ticks are round and cover the range", () => {
  assert.deepEqual(niceTicks(0, 10, 5), [0, 2, 4, 6, 8, 10]);
  assert.deepEqual(niceTicks(2.31, 6.2, 4), [3, 4, 5, 6]);
  assert.ok(niceTicks(1, 1).length > 0);
  assert.deepEqual(extent([]), null);
  const [x0, x1, y0] = extent([[[1, 2], [3, 4]]]);
  assert.deepEqual([x0, x1], [1, 3]);
  assert.ok(y0 >= 0 && y0 < 2);
});

test("only the rows in view are drawn", () => {
  assert.deepEqual(visibleRange(0, 264, 22, 10000, 6), { start: 0, end: 18 });
  const mid = visibleRange(22 * 5000, 264, 22, 10000, 6);
  assert.ok(mid.end - mid.start <= 24 && mid.start === 4994);
  assert.deepEqual(visibleRange(0, 264, 22, 3, 6), { start: 0, end: 3 });
  const evs = [{ type: "CREATED" }, { type: "TRAIN_UPDATED" }, { type: "COMPLETED" }];
  assert.equal(filterEvents(evs, "milestones").length, 2);
  assert.equal(filterEvents(evs, "all").length, 3);
});

test("formatting", () => {
  assert.equal(fmtDuration(9), "9s");
  assert.equal(fmtDuration(75), "1m 15s");
  assert.equal(fmtDuration(3725), "1h 02m");
  assert.equal(fmtDuration(null), "");
  assert.equal(fmtNumber(2.34567), "2.346");
  assert.equal(fmtNumber(0.000123), "1.23e-4");
  assert.equal(secondsBetween("2026-01-01T00:00:00Z", "2026-01-01T00:01:30Z"), 90);
  assert.equal(progressText({ epoch: 2, step: 140, total_steps: 210, progress: 66.7, loss: 1.23456 }), "epoch 2 · step 140/210 · 66% · loss 1.235");
  assert.equal(progressText({ epoch: 0.47619, step: 10 }), "epoch 0.48 · step 10");
});

test("generations grouped by checkpoint", () => {
  const g = generationsByCheckpoint([
    { type: "EVAL_GENERATIONS", seq: 3, data: { checkpoint: "ep1-ba8", step: 8, generations: [{ prompt: "<b>", generation: "x" }] } },
    { type: "TRAIN_UPDATED", seq: 4, data: {} },
    { type: "EVAL_GENERATIONS", seq: 5, data: { step: 16 } },
  ]);
  assert.deepEqual(g.map((x) => x.checkpoint), ["ep1-ba8", "step 16"]);
  assert.equal(g[0].generations[0].prompt, "<b>");
  assert.deepEqual(g[1].generations, []);
});

// -- the chart's ticks: every label is exactly its value, for any range ------------------------------------

/** Where a tick value sits in [0, 1] of the axis, mapped back to a value: must equal the label's number. */
function assertLabelsAreTheirPositions(scale, what) {
  assert.ok(scale.ticks.length >= 2, `${what}: ${scale.ticks.length} tick(s)`);
  for (const t of scale.ticks) {
    const back = scale.invert(scale.norm(t.value));
    const rel = Math.abs(back - Number(t.label)) / Math.max(Math.abs(Number(t.label)), Math.abs(scale.domain[1] - scale.domain[0]));
    assert.ok(rel < 1e-9, `${what}: label ${t.label} sits at ${back}`);
    assert.equal(Number(t.label), t.value, `${what}: label ${t.label} is not its value ${t.value}`);
    const n = scale.norm(t.value);
    assert.ok(n >= -1e-9 && n <= 1 + 1e-9, `${what}: tick ${t.label} outside the axis`);
  }
  const values = scale.ticks.map((t) => t.value);
  assert.deepEqual([...values].sort((a, b) => a - b), values, `${what}: ticks not in order`);
  assert.equal(new Set(scale.ticks.map((t) => t.label)).size, scale.ticks.length, `${what}: two ticks share a label`);
}

const RANGES = [
  [0.8, 1.8], [0.75, 1.85], [1.0, 2.0], [0, 10], [2.31, 6.2], [0.1, 0.3], [1e-9, 3e-9], [1e-5, 1.3e-5],
  [1e9, 5e9], [123456789, 123456799], [2.00001, 2.00003], [-3, 2], [-0.2, -0.1], [0.001, 0.0013], [7, 7.000001],
  [0, 1e-12], [12.5, 13.5], [0.3, 0.30000000000000004], [1e300, 1.2e300],
];

test("linear y ticks: 1-2-5 steps whose labels are their positions, for tiny, huge, negative and equal ranges", () => {
  for (const [a, b] of RANGES) assertLabelsAreTheirPositions(yScale([a, b]), `[${a}, ${b}]`);
  for (const v of [2, 0, -1, 1e-7, 5e8]) assertLabelsAreTheirPositions(yScale([v]), `one point ${v}`);
  for (const v of [2, 0.5]) assertLabelsAreTheirPositions(yScale([v, v, v]), `equal values ${v}`);
  // the reported bug: ticks 0.25 apart labelled 1.8, 1.5, 1.3, 1.0, 0.8 — no 2.5 step any more
  const y = yScale([0.8, 1.8]);
  const labels = y.ticks.map((t) => t.label);
  assert.deepEqual(labels, ["0.6", "0.8", "1.0", "1.2", "1.4", "1.6", "1.8", "2.0"]);
  for (let i = 0; i < 200; i++) { // and many random ranges
    const lo = (Math.random() - 0.3) * Math.pow(10, Math.floor(Math.random() * 12) - 6);
    const hi = lo + Math.random() * Math.pow(10, Math.floor(Math.random() * 12) - 6);
    assertLabelsAreTheirPositions(yScale([lo, hi]), `[${lo}, ${hi}]`);
  }
});

test("tick steps are 1, 2 or 5 times a power of ten, and the domain ends on ticks", () => {
  for (let span = 1e-6; span < 1e7; span *= 1.37) {
    const step = tickStep(span, 5);
    assert.ok([1, 2, 5].includes(step.factor), `${span}: ${JSON.stringify(step)}`);
  }
  const y = yScale([0.83, 1.77]);
  assert.equal(y.ticks[0].value, y.domain[0]);
  assert.equal(y.ticks[y.ticks.length - 1].value, y.domain[1]);
  assert.deepEqual(niceTicks(0, 10, 5), [0, 2, 4, 6, 8, 10]);
  assert.deepEqual(niceTicks(2.31, 6.2, 4), [3, 4, 5, 6]);
  assert.ok(niceTicks(1, 1).length > 0);
  assert.deepEqual(linearTicks(0, 1, 5).map((t) => t.label), ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
  assert.deepEqual(extent([]), null);
  const [x0, x1, y0] = extent([[[1, 2], [3, 4]]]);
  assert.deepEqual([x0, x1], [1, 3]);
  assert.ok(y0 >= 0 && y0 < 2);
});

test("log y ticks: powers of ten, then 1-2-5 multiples, then round values; labels are their positions", () => {
  for (const [a, b] of [[0.01, 100], [1.2, 1.8], [0.5, 20], [0.3, 0.9], [1e-8, 1e8], [2, 2], [0.9, 1.1], [3e-7, 4e-7], [1, 1e300]])
    assertLabelsAreTheirPositions(yScale([a, b], { log: true }), `log [${a}, ${b}]`);
  assert.deepEqual(yScale([0.01, 100], { log: true }).ticks.map((t) => t.label), ["0.01", "0.1", "1", "10", "100"]);
  assert.deepEqual(logTicks(0.45, 22).map((t) => t.label), ["0.5", "1", "2", "5", "10", "20"]);
  const y = yScale([0.01, 100], { log: true });
  assert.ok(Math.abs(y.norm(1) - 0.5) < 1e-12); // 1 is half-way between 0.01 and 100 on a log axis
  assert.equal(yScale([0, -1], { log: true }).log, false); // nothing > 0: linear
});

test("x ticks are whole steps", () => {
  assert.deepEqual(xScale([1]).ticks.map((t) => t.label), ["0", "1", "2"]);
  assert.deepEqual(xScale([1, 3], 10).ticks.map((t) => t.value), [1, 2, 3]); // never 1.5
  assert.deepEqual(xScale([1, 12000], 5).ticks.map((t) => t.label), ["2,000", "4,000", "6,000", "8,000", "10,000", "12,000"]);
});

// -- the drawn chart ----------------------------------------------------------------------------------------

const point = (id, step, value, name = "train/loss") => ({ id, step, name, value });

test("a single loss point is drawn: a dot where its step and loss map to, with ticks around it", () => {
  const layout = chartLayout([point(1, 1, 2.0)], { width: 560, height: 264 });
  const nodes = chartScene(layout);
  const dots = nodes.filter((n) => n.attrs["data-testid"] === "train-dot");
  assert.equal(dots.length, 1);
  const { cx, cy } = dots[0].attrs;
  const m = layout.margin;
  assert.ok(cx > m.left && cx < 560 - m.right, `cx ${cx}`);
  assert.ok(cy > m.top && cy < 264 - m.bottom, `cy ${cy}`);
  assert.ok(Math.abs(layout.unx(cx) - 1) < 1e-9 && Math.abs(layout.uny(cy) - 2.0) < 1e-9);
  const ticks = nodes.filter((n) => n.attrs["data-testid"] === "y-tick");
  assert.ok(ticks.length >= 3);
  for (const t of ticks) assert.ok(Math.abs(layout.uny(t.attrs.y) - Number(t.text)) < 1e-9, `${t.text} at y=${t.attrs.y}`);
  const titles = nodes.filter((n) => n.attrs.class === "td-axis-title").map((n) => n.text);
  assert.deepEqual(titles, ["step", "loss"]);
  // one eval point alone, too
  const evalOnly = chartScene(chartLayout([point(1, 4, 1.5, "eval/loss")]));
  assert.equal(evalOnly.filter((n) => n.attrs["data-testid"] === "eval-dot").length, 1);
  // nothing yet
  assert.equal(chartScene(chartLayout([]))[0].text, "no loss points yet");
});

test("long series draw a bounded path without dots; a resumed run's repeated step keeps its newest point", () => {
  const metrics = Array.from({ length: 10000 }, (_, i) => point(i + 1, i + 1, 5 / (1 + i / 500)));
  const nodes = chartScene(chartLayout(metrics));
  assert.equal(nodes.filter((n) => n.attrs["data-testid"] === "train-dot").length, 0);
  const d = nodes.find((n) => n.attrs["data-testid"] === "train-line").attrs.d;
  assert.ok(d.split("L").length <= 600);
  assert.deepEqual(metricSeries([point(1, 5, 2), point(2, 6, 1.9), point(3, 5, 1.95)], "train/loss"), [[5, 1.95], [6, 1.9]]);
});

test("smoothing is TensorBoard's debiased EMA, drawn over the faint raw curve", () => {
  const pts = [[1, 1], [2, 2], [3, 3], [4, 10]];
  assert.deepEqual(ema(pts, 0), pts);
  const s = ema(pts, 0.6);
  assert.equal(s[0][1], 1); // debiased: the first smoothed point is the first value, not 0.4
  assert.ok(Math.abs(s[1][1] - (0.6 * 0.4 + 0.4 * 2) / (1 - 0.36)) < 1e-12);
  assert.ok(s[3][1] < 10 && s[3][1] > 3); // lags behind a jump
  const constant = ema([[1, 2], [2, 2], [3, 2]], 0.9);
  assert.ok(constant.every(([, v]) => Math.abs(v - 2) < 1e-12)); // a constant stays itself
  const metrics = pts.map(([x, v], i) => point(i + 1, x, v));
  const smooth = chartScene(chartLayout(metrics, { smooth: 0.6 }));
  assert.equal(smooth.filter((n) => n.attrs["data-testid"] === "train-raw-line").length, 1);
  assert.equal(smooth.find((n) => n.attrs["data-testid"] === "train-raw-line").attrs.class, "td-line-train-raw");
  const plain = chartScene(chartLayout(metrics));
  assert.equal(plain.filter((n) => n.attrs["data-testid"] === "train-raw-line").length, 0);
});

test("log scale drops non-positive points and says so on its axis", () => {
  const metrics = [point(1, 1, 10), point(2, 2, 1), point(3, 3, 0.1), point(4, 4, 0)];
  const layout = chartLayout(metrics, { log: true });
  assert.equal(layout.log, true);
  assert.deepEqual(layout.yTicks.map((t) => t.label), ["0.1", "1", "10"]);
  for (const t of layout.yTicks) assert.ok(Math.abs(layout.uny(t.pos) - t.value) / t.value < 1e-9);
  assert.ok(chartScene(layout).some((n) => n.text === "loss (log scale)"));
});

test("hover read-out: the nearest step's train loss, smoothed value and the nearest eval loss", () => {
  const metrics = [point(1, 1, 3), point(2, 2, 2.5), point(3, 3, 2), point(4, 4, 2.2, "eval/loss"), point(5, 4, 1.8), point(6, 8, 1.5)];
  const layout = chartLayout(metrics, { smooth: 0.5 });
  const r = readoutAt(layout, layout.sx(3.2));
  assert.deepEqual([r.step, r.train, r.eval, r.evalStep], [3, 2, 2.2, 4]);
  assert.ok(r.smoothed > 2 && r.smoothed < 3);
  assert.equal(readoutText({ ...r, smoothed: null }), "step 3 · train 2 · eval 2.2 (step 4)");
  assert.equal(readoutText(readoutAt(chartLayout(metrics), layout.sx(4))), "step 4 · train 1.8 · eval 2.2");
  assert.equal(readoutAt(layout, 2), null); // left of the plot
  assert.deepEqual(nearest([[1, 0], [5, 0], [9, 0]], 6.9), [5, 0]);
  const one = chartLayout([point(1, 1, 2.0)]);
  assert.equal(readoutText(readoutAt(one, 300)), "step 1 · train 2");
});

test("sparklines: a path for many points, a flat line for one", () => {
  assert.equal(sparkPath([], 120, 26), "");
  assert.match(sparkPath([[1, 5]], 120, 26), /^M2,13\.0L118\.0,13\.0$/);
  const d = sparkPath([[1, 1e-3], [2, 5e-4], [3, 1e-4]], 120, 26);
  assert.equal(d.split("L").length, 3);
});

// -- one source for every number ------------------------------------------------------------------------------

test("header, legend and panels read the latest metric point; the summary only where there is none", () => {
  const s = { status: "RUNNING", step: 5, total_steps: 10, epoch: 1, progress: 50, loss: 2.5, eval_loss: 2.3, lr: 1e-3, tokens_per_second: 900 };
  assert.deepEqual(currentNumbers(s, []), { step: 5, total_steps: 10, epoch: 1, progress: 50, loss: 2.5, eval_loss: 2.3, lr: 1e-3, tokens_per_second: 900 });
  const metrics = [point(1, 5, 2.5), point(2, 6, 2.4), point(3, 7, 2.3), point(4, 7, 5e-4, "train/lr"), point(5, 7, 1234, "train/tokens_per_second"), point(6, 5, 2.25, "eval/loss")];
  const n = currentNumbers(s, metrics);
  assert.deepEqual([n.step, n.loss, n.progress, n.eval_loss, n.lr, n.tokens_per_second, n.epoch], [7, 2.3, 70, 2.25, 5e-4, 1234, 1.4]);
  assert.equal(progressText({ ...s, ...n }), "epoch 1.4 · step 7/10 · 70% · loss 2.3 · eval loss 2.25");
  assert.equal(currentNumbers({ ...s, status: "COMPLETED", progress: 100 }, metrics).progress, 100);
});

test("a waiting run says its place in the queue", () => {
  assert.equal(queueText({ status: "QUEUED", queue_ahead: 2 }), "2 runs ahead in the queue");
  assert.equal(queueText({ status: "QUEUED", queue_ahead: 1 }), "1 run ahead in the queue");
  assert.equal(queueText({ status: "PENDING", queue_ahead: 0 }), "next in the queue");
  assert.equal(queueText({ status: "RUNNING", queue_ahead: 2 }), "");
  assert.equal(queueText({ status: "QUEUED" }), "");
  assert.equal(progressText({ status: "QUEUED", queue_ahead: 3, progress: 0 }), "3 runs ahead in the queue");
});

test("the load line of a registered version", () => {
  assert.equal(loadLine("main.demo.r1", 3), 'import tunedeck.registry\nmodel, tokenizer = tunedeck.registry.load_model("main.demo.r1", 3)');
  assert.equal(loadLine('a"b', "v2"), 'import tunedeck.registry\nmodel, tokenizer = tunedeck.registry.load_model("a\\"b", "v2")');
});
