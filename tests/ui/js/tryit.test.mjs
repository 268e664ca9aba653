// The Try it box's status line (js/monitor.js tryNote), run with `node --test` (no browser).
import test from "node:test";
import assert from "node:assert/strict";

import { tryNote } from "../../../js/monitor.js";

test("tryNote says what the kernel's tryit state says, and where the answer came from", () => {
  assert.equal(tryNote({}), "");
  assert.equal(tryNote({ state: "running", note: "loading the model…" }), "loading the model…");
  assert.equal(tryNote({ state: "running" }), "generating…");
  assert.equal(tryNote({ state: "error", note: "prompt: is empty" }), "prompt: is empty");
  assert.equal(tryNote({ state: "done", note: "9 tokens in 0.27 s", source: "main.demo.r1 version 1", checkpoint: "registered" }),
    "9 tokens in 0.27 s · from main.demo.r1 version 1");
  assert.equal(tryNote({ state: "done", note: "3 tokens in 0.10 s", checkpoint: "ep1-ba10" }), "3 tokens in 0.10 s · from checkpoint ep1-ba10");
  assert.equal(tryNote({ state: "stopped", note: "stopped", checkpoint: "registered" }), "stopped · from the registered version");
});
