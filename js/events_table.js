// The events table, newest first, virtualized: however many events a run has, only the rows in view
// (plus a few) exist in the DOM, so 10,000 events scroll as smoothly as 10.
import { h, fmtTime, fmtClock } from "./common.js";

export const ROW_HEIGHT = 22;
const OVERSCAN = 6;

/** Which rows [start, end) to draw for a scroll position. */
export function visibleRange(scrollTop, viewportHeight, rowHeight, total, overscan = OVERSCAN) {
  const start = Math.max(0, Math.floor(scrollTop / rowHeight) - overscan);
  const end = Math.min(total, Math.ceil((scrollTop + viewportHeight) / rowHeight) + overscan);
  return { start, end: Math.max(start, end) };
}

/** Events kept by the filter: "all", or "milestones" (everything but the frequent TRAIN_UPDATED). */
export function filterEvents(events, filter) {
  return filter === "milestones" ? events.filter((e) => e.type !== "TRAIN_UPDATED") : events;
}

export class EventsTable {
  constructor() {
    this.events = []; // oldest first, as stored
    this.filter = "all";
    this.shown = [];
    this.select = h("select", { class: "td-events-filter", testid: "events-filter", onchange: () => { this.filter = this.select.value; this.refresh(); } },
      h("option", { value: "all", text: "all events" }),
      h("option", { value: "milestones", text: "milestones (no TRAIN_UPDATED)" }));
    this.count = h("span", { class: "td-events-count", testid: "events-count" });
    this.spacer = h("div", { class: "td-events-spacer" });
    this.viewport = h("div", { class: "td-events-viewport", testid: "events", onscroll: () => this.draw() }, this.spacer);
    this.el = h("div", { class: "td-events" },
      h("div", { class: "td-card-title" }, "Events ", this.count, this.select),
      h("div", { class: "td-events-head" }, h("span", { class: "td-ev-time", text: "time" }), h("span", { class: "td-ev-type", text: "type" }), h("span", { class: "td-ev-msg", text: "message" })),
      this.viewport);
    this.drawn = "";
  }

  setEvents(events) {
    this.events = events;
    this.refresh();
  }

  refresh() {
    this.shown = filterEvents(this.events, this.filter);
    const total = this.events.length;
    this.count.textContent = this.shown.length === total ? `(${total.toLocaleString()})` : `(${this.shown.length.toLocaleString()} of ${total.toLocaleString()})`;
    this.spacer.style.height = `${this.shown.length * ROW_HEIGHT}px`;
    this.drawn = "";
    this.draw();
  }

  draw() {
    const n = this.shown.length;
    const { start, end } = visibleRange(this.viewport.scrollTop, this.viewport.clientHeight || 264, ROW_HEIGHT, n);
    const key = `${start}:${end}:${n}`;
    if (key === this.drawn) return;
    this.drawn = key;
    const rows = [];
    for (let i = start; i < end; i++) {
      const e = this.shown[n - 1 - i]; // newest first
      const row = h("div", { class: `td-ev-row td-ev-${e.type}`, testid: "event-row", title: `#${e.seq} · ${fmtTime(e.time)}\n${e.message}` },
        h("span", { class: "td-ev-time", text: fmtClock(e.time) }),
        h("span", { class: "td-ev-type", text: e.type }),
        h("span", { class: "td-ev-msg", text: e.message }));
      row.style.top = `${i * ROW_HEIGHT}px`;
      rows.push(row);
    }
    this.spacer.replaceChildren(...rows);
  }
}
