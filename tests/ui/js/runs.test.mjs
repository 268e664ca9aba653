// The runs browser's pure logic: sort and filter (the same cases as the kernel's visible_rows), dates,
// and how a view knows its kernel is gone.
import test from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { visibleRows } from "../../../js/runs.js";
import { fmtDateTime, isDisconnected, watchConnection, staleText, DISCONNECTED_CLASS } from "../../../js/common.js";

const spec = JSON.parse(readFileSync(new URL("./runs_cases.json", import.meta.url), "utf8"));

test("visibleRows sorts and filters exactly as the kernel's visible_rows", () => {
  assert.ok(spec.cases.length >= 10);
  for (const c of spec.cases) {
    const got = visibleRows(spec.rows, { sort: c.sort, descending: c.descending, status: c.status || "all", text: c.text || "" }, new Date(c.now));
    assert.deepEqual(got.map((r) => r.name), c.expect, JSON.stringify(c));
  }
});

test("visibleRows leaves its input alone", () => {
  const before = spec.rows.map((r) => r.name);
  visibleRows(spec.rows, { sort: "name", descending: false });
  assert.deepEqual(spec.rows.map((r) => r.name), before);
});

test("fmtDateTime always says the day", () => {
  const iso = new Date(2026, 10, 25, 9, 5, 7).toISOString(); // local time, whatever the zone
  assert.equal(fmtDateTime(iso), "2026-11-25 09:05");
  assert.equal(fmtDateTime(iso, { seconds: true }), "2026-11-25 09:05:07");
  assert.equal(fmtDateTime(null), "");
  assert.equal(fmtDateTime("not a time"), "not a time");
});

/** Just enough of an element for isDisconnected / watchConnection: classes and closest(). */
function fakeElement(parent = null) {
  const classes = new Set();
  return {
    parent,
    classList: { add: (c) => classes.add(c), remove: (c) => classes.delete(c), contains: (c) => classes.has(c) },
    closest(selector) {
      const name = selector.slice(1);
      for (let e = this; e; e = e.parent) if (e.classList.contains(name)) return e;
      return null;
    },
  };
}

test("a view is disconnected when it or a widget around it carries ipywidgets' class", () => {
  const outer = fakeElement();
  const el = fakeElement(outer);
  assert.equal(isDisconnected(el), false);
  outer.classList.add(DISCONNECTED_CLASS);
  assert.equal(isDisconnected(el), true);
});

test("watchConnection reports the state at once and on each comm_live_update, then stops", () => {
  const handlers = new Map();
  const model = { on: (e, f) => handlers.set(e, f), off: (e) => handlers.delete(e) };
  const el = fakeElement();
  const seen = [];
  const stop = watchConnection(model, el, (d) => seen.push(d));
  el.classList.add(DISCONNECTED_CLASS);
  handlers.get("comm_live_update")();
  handlers.get("comm_live_update")(); // no change: not reported twice
  el.classList.remove(DISCONNECTED_CLASS);
  handlers.get("comm_live_update")();
  assert.deepEqual(seen, [false, true, false]);
  stop();
  assert.equal(handlers.size, 0);
});

test("staleText says what happened and what to do", () => {
  assert.match(staleText("list"), /kernel that has stopped: .*Run the cell again/);
  assert.match(staleText("list", new Date(2026, 0, 2, 3, 4, 5)), /\(since 2026-01-02 03:04:05\)/);
});

test("watchConnection: a kernel that restarts or is replaced leaves the view stale for good", () => {
  const listeners = new Set();
  const kernel = { status: "idle", isDisposed: false, statusChanged: { connect: (f) => listeners.add(f), disconnect: (f) => listeners.delete(f) } };
  const manager = { kernel };
  const model = { on() {}, off() {}, widget_manager: manager };
  const seen = [];
  const stop = watchConnection(model, fakeElement(), (d) => seen.push(d));
  kernel.status = "busy";
  listeners.forEach((f) => f());
  kernel.status = "restarting";
  listeners.forEach((f) => f());
  kernel.status = "idle"; // the new process is up: this view's models are still gone
  listeners.forEach((f) => f());
  assert.deepEqual(seen, [false, true]);
  stop();
  assert.equal(listeners.size, 0);

  const other = { on() {}, off() {}, widget_manager: { kernel } };
  const seen2 = [];
  kernel.status = "idle";
  watchConnection(other, fakeElement(), (d) => seen2.push(d));
  other.widget_manager.kernel = { status: "idle" }; // the notebook got another kernel
  listeners.forEach((f) => f());
  assert.deepEqual(seen2, [false, true]);
});
