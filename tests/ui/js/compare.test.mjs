// The comparison view's pure logic (js/compare.js), with `node --test`.
import test from "node:test";
import assert from "node:assert/strict";

import { overlayLayout, overlayScene, rowCells } from "../../../js/compare.js";

const ROWS = [{ name: "a", color: "#111111" }, { name: "b", color: "#222222" }];
const SERIES = {
  a: { train: [[1, 2.0], [2, 1.5], [3, 1.0]], eval: [[3, 1.2]] },
  b: { train: [[1, 3.0], [2, 2.5]], eval: [] },
};

test("overlay: one path per run and kind, in each run's colour, on shared scales", () => {
  const layout = overlayLayout(ROWS, SERIES, { width: 600 });
  const paths = overlayScene(layout).filter((n) => n.tag === "path");
  assert.deepEqual(paths.map((p) => [p.attrs["data-run"], p.attrs["data-testid"], p.attrs.stroke]),
    [["a", "train-line", "#111111"], ["a", "eval-line", "#111111"], ["b", "train-line", "#222222"]]);
  // the y axis spans both runs: its lowest tick is at most a's 1.0, its highest at least b's 3.0
  const ticks = layout.yTicks.map((t) => t.value);
  assert.ok(Math.min(...ticks) <= 1.0 && Math.max(...ticks) >= 3.0, String(ticks));
  // tick labels say their values
  for (const t of layout.yTicks) assert.equal(Number(t.label), t.value);
});

test("overlay: a hidden run leaves the scales; a lone point gets a dot; nothing to draw says so", () => {
  const layout = overlayLayout(ROWS, SERIES, { hidden: new Set(["b"]) });
  assert.ok(Math.max(...layout.yTicks.map((t) => t.value)) < 3.0);
  assert.ok(layout.lines.every((l) => l.name === "a"));
  const one = overlayScene(overlayLayout([ROWS[0]], { a: { train: [[5, 1.25]] } }));
  assert.equal(one.filter((n) => n.attrs["data-testid"] === "train-dot").length, 1);
  const empty = overlayScene(overlayLayout(ROWS, {}));
  assert.equal(empty.length, 1);
  assert.equal(empty[0].text, "no loss points yet");
});

test("rowCells: defaults, numbers and the registered version as the text snapshot writes them", () => {
  const c = rowCells({ name: "r", learning_rate: null, training_duration: "5ba", lora_rank: 8, loss: 1.234567, eval_loss: null,
    seconds: 75, registered_model_name: "main.x", registered_model_version: 3 });
  assert.deepEqual(c, { name: "r", learning_rate: "default", training_duration: "5ba", lora_rank: "8", loss: "1.235", eval_loss: "",
    time: "1m 15s", registered: "main.x v3" });
});
