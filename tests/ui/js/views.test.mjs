// Pure logic of the views, run with `node --test` (no browser): merging, chart maths, virtual rows.
import test from "node:test";
import assert from "node:assert/strict";

import { KeyedLog } from "../../../js/keyed_log.js";
import { lossSeries, downsample, niceTicks, extent } from "../../../js/loss_chart.js";
import { visibleRange, filterEvents } from "../../../js/events_table.js";
import { fmtDuration, fmtNumber, secondsBetween } from "../../../js/common.js";
import { progressText, generationsByCheckpoint } from "../../../js/monitor.js";

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
