// The runs browser view: one row per run, refreshed by the kernel; actions go back as messages.
// Sorting and filtering happen here (they keep working while the kernel is busy running a cell); their
// settings go back as traitlets so the kernel's snapshot lists the same rows.
import {
  h, setChildren, statusBadge, fmtDuration, secondsBetween, fmtDateTime, fmtNumber, watchConnection, staleText, TERMINAL,
} from "./common.js";

const TASK_NAMES = { CHAT_COMPLETION: "chat", INSTRUCTION_FINETUNE: "instruction", CONTINUED_PRETRAIN: "pretrain" };
/** [key, title, sortable, cell class]: `key` is also the sort key. */
const COLUMNS = [
  ["select", "", false, "td-col-select"],
  ["name", "run", true, "td-col-name"],
  ["status", "status", true, "td-col-status"],
  ["created", "created", true, "td-col-created"],
  ["duration", "duration", true, "td-col-duration"],
  ["train_loss", "train loss", true, "td-col-loss"],
  ["eval_loss", "eval loss", true, "td-col-loss"],
  ["model", "model", true, "td-col-model"],
  ["task", "task", false, "td-col-task"],
  ["registered", "registered model", false, "td-col-registered"],
  ["actions", "", false, "td-runs-actions"],
];
export const STATUS_FILTERS = {
  all: null,
  active: new Set(["PENDING", "QUEUED", "STARTING", "RUNNING", "TERMINATING"]),
  COMPLETED: new Set(["COMPLETED"]),
  FAILED: new Set(["FAILED"]),
  STOPPED: new Set(["STOPPED"]),
};
const SORT_KEYS = new Set(["created", "name", "status", "duration", "train_loss", "eval_loss", "model"]);
const TEXT_FIELDS = ["name", "model", "task_type", "registered_model", "status"];

function sortValue(row, key, now) {
  if (key === "created") return row.created_at || null;
  if (key === "duration") return secondsBetween(row.started_at, row.completed_at || (now ? now.toISOString() : null));
  const v = row[key];
  if (v === undefined || v === null || v === "") return null;
  return typeof v === "string" ? v.toLowerCase() : v;
}

/** The rows shown: matching the status filter and the text (any case, in name, model, task, registered
 *  model or status), sorted by `sort`; rows without a value go last in both directions. The kernel's
 *  snapshot does the same (ui/runs_browser.py, visible_rows). */
export function visibleRows(rows, { sort = "created", descending = true, status = "all", text = "" } = {}, now = new Date()) {
  const wanted = STATUS_FILTERS[status] || null;
  const needle = String(text || "").trim().toLowerCase();
  const kept = rows.filter((r) => (!wanted || wanted.has(r.status))
    && (!needle || TEXT_FIELDS.some((f) => String(r[f] ?? "").toLowerCase().includes(needle))));
  const key = SORT_KEYS.has(sort) ? sort : "created";
  const valued = kept.filter((r) => sortValue(r, key, now) !== null);
  const missing = kept.filter((r) => sortValue(r, key, now) === null);
  const sign = descending ? -1 : 1;
  valued.sort((a, b) => {
    const x = sortValue(a, key, now);
    const y = sortValue(b, key, now);
    if (x < y) return -sign;
    if (x > y) return sign;
    return a.name < b.name ? -sign : a.name > b.name ? sign : 0;
  });
  return valued.concat(missing);
}

function render({ model, el }) {
  let confirming = null; // {name, action}
  const selected = new Set(); // runs ticked for "Compare" (this view's own choice)
  let stale = false;
  let staleSince = null;
  let everLive = false;
  const notice = h("span", { class: "td-runs-notice", testid: "runs-notice" });
  const errorLine = h("div", { class: "td-error", testid: "runs-error" });
  const staleLine = h("div", { class: "td-stale", testid: "stale" });
  const count = h("span", { class: "td-muted", testid: "runs-count" });
  const body = h("tbody");
  const headRow = h("tr");
  const statusSelect = h("select", { class: "td-runs-status-filter", testid: "status-filter", title: "Show runs with this status",
    onchange: () => setState({ status_filter: statusSelect.value }) },
  Object.keys(STATUS_FILTERS).map((k) => h("option", { value: k, text: k === "all" ? "all statuses" : k.toLowerCase() })));
  const textInput = h("input", { type: "search", class: "td-runs-text-filter", testid: "text-filter", placeholder: "filter: name, model, task…",
    oninput: () => setState({ text_filter: textInput.value }) });
  const compareButton = h("button", { class: "td-btn", testid: "compare", title: "Overlay the ticked runs' loss curves and compare their results",
    onclick: () => { if (selected.size >= 2) model.send({ kind: "compare", names: [...selected] }); } });
  el.appendChild(h("div", { class: "td-root td-runs td-stale-aware" },
    h("div", { class: "td-runs-head" }, h("b", {}, "tunedeck runs "), count, statusSelect, textInput, compareButton, notice),
    staleLine, errorLine,
    h("div", { class: "td-runs-scroll" },
      h("table", { class: "td-runs-table", testid: "runs-table" }, h("thead", {}, headRow), body))));

  function state() {
    return { sort: model.get("sort") || "created", descending: model.get("descending") !== false,
      status: model.get("status_filter") || "all", text: model.get("text_filter") || "" };
  }

  function setState(values) {
    for (const [k, v] of Object.entries(values)) model.set(k, v);
    if (!stale) model.save_changes(); // a dead kernel would not hear it; the view still sorts and filters
    draw();
  }

  function sortBy(key) {
    const s = state();
    // a new column starts with the direction that puts the interesting rows first
    const descending = s.sort === key ? !s.descending : ["created", "duration"].includes(key);
    setState({ sort: key, descending });
  }

  function drawHead() {
    const s = state();
    setChildren(headRow, COLUMNS.map(([key, title, sortable, cls]) => {
      if (!sortable) return h("th", { class: cls, text: title });
      const active = s.sort === key;
      return h("th", { class: `${cls} td-sortable${active ? " td-sorted" : ""}`, testid: `sort-${key}`, title: `Sort by ${title}`,
        "aria-sort": active ? (s.descending ? "descending" : "ascending") : "none", onclick: () => sortBy(key) },
      title, active ? (s.descending ? " ▼" : " ▲") : "");
    }));
  }

  function actionCell(row) {
    const name = row.name;
    const off = stale ? "" : null;
    if (confirming && confirming.name === name && !stale) {
      const what = confirming.action;
      return h("td", { class: "td-runs-actions td-runs-confirm" }, what === "delete" ? "Delete run, events and checkpoints? " : "Stop this run? ",
        h("button", { class: "td-btn td-btn-danger", testid: `confirm-${what}`, text: what === "delete" ? "Yes, delete" : "Yes, cancel",
          onclick: () => { confirming = null; model.send({ kind: what, name }); draw(); } }),
        h("button", { class: "td-btn", testid: "confirm-no", text: "No", onclick: () => { confirming = null; draw(); } }));
    }
    const open = (model.get("open_names") || []).includes(name);
    return h("td", { class: "td-runs-actions" },
      h("button", { class: "td-btn", testid: "open", text: open ? "Opened" : "Open", disabled: open || stale ? "" : null, onclick: () => model.send({ kind: "open", name }) }),
      TERMINAL.has(row.status) ? null : h("button", { class: "td-btn", testid: "cancel", text: "Cancel", disabled: off, onclick: () => { confirming = { name, action: "cancel" }; draw(); } }),
      h("button", { class: "td-btn", testid: "delete", text: "Delete", disabled: off, onclick: () => { confirming = { name, action: "delete" }; draw(); } }));
  }

  function draw() {
    const all = model.get("rows") || [];
    const s = state();
    const rows = visibleRows(all, s);
    count.textContent = rows.length === all.length ? `(${all.length})` : `(${rows.length} of ${all.length})`;
    errorLine.textContent = stale ? "" : model.get("error") || "";
    notice.textContent = stale ? "" : model.get("notice") || "";
    staleLine.textContent = stale ? staleText("list", staleSince) : "";
    if (statusSelect.value !== s.status) statusSelect.value = s.status;
    if (textInput.value !== s.text && document.activeElement !== textInput) textInput.value = s.text;
    drawHead();
    for (const n of [...selected]) if (!all.some((r) => r.name === n)) selected.delete(n); // deleted runs
    compareButton.textContent = selected.size ? `Compare (${selected.size})` : "Compare";
    compareButton.disabled = stale || selected.size < 2;
    compareButton.title = selected.size < 2 ? "Tick two or more runs to compare them" : "Overlay the ticked runs' loss curves and compare their results";
    const empty = all.length ? "no run matches the filter" : "no runs yet";
    setChildren(body, rows.length ? rows.map((r) =>
      h("tr", { class: "td-runs-row", testid: "run-row", "data-name": r.name, "data-status": r.status },
        h("td", { class: "td-col-select" }, h("input", { type: "checkbox", testid: "select", title: "Tick to compare",
          checked: selected.has(r.name) ? "" : null, disabled: stale ? "" : null,
          onchange: (e) => { if (e.target.checked) selected.add(r.name); else selected.delete(r.name); draw(); } })),
        h("td", { class: "td-runs-name td-col-name", text: r.name, title: r.details ? `${r.name}: ${r.details}` : r.name }),
        h("td", { class: "td-col-status" }, statusBadge(r.status),
          r.progress !== null && r.progress !== undefined && !TERMINAL.has(r.status) ? ` ${Math.floor(r.progress)}%` : ""),
        createdCell(r.created_at),
        h("td", { class: "td-runs-duration td-col-duration", "data-started": r.started_at || "", "data-completed": r.completed_at || "",
          text: fmtDuration(secondsBetween(r.started_at, r.completed_at)) }),
        h("td", { class: "td-col-loss", testid: "train-loss", text: fmtNumber(r.train_loss) }),
        h("td", { class: "td-col-loss", testid: "eval-loss", text: fmtNumber(r.eval_loss) }),
        h("td", { class: "td-col-model", text: r.model }),
        h("td", { class: "td-col-task", text: TASK_NAMES[r.task_type] || r.task_type || "" }),
        h("td", { class: "td-col-registered", text: r.registered_model || "" }),
        actionCell(r)))
      : [h("tr", {}, h("td", { colspan: COLUMNS.length, class: "td-muted", testid: "runs-empty", text: empty }))]);
  }

  /** "2026-11-25 19:38": the year in its own span, which a narrow table hides (the tooltip keeps it). */
  function createdCell(iso) {
    const text = fmtDateTime(iso);
    const year = /^\d{4}-/.test(text) ? text.slice(0, 5) : "";
    return h("td", { class: "td-col-created", testid: "created", title: fmtDateTime(iso, { seconds: true }) },
      year ? h("span", { class: "td-year", text: year }) : null, text.slice(year.length));
  }

  function tick() {
    if (stale) return; // the last known durations stay as they were
    for (const cell of body.querySelectorAll(".td-runs-duration")) {
      if (cell.dataset.started && !cell.dataset.completed) cell.textContent = fmtDuration(secondsBetween(cell.dataset.started, null));
    }
  }

  const events = ["change:rows", "change:error", "change:notice", "change:open_names", "change:sort", "change:descending",
    "change:status_filter", "change:text_filter"];
  events.forEach((e) => model.on(e, draw));
  const ticker = setInterval(tick, 1000);
  const unwatch = watchConnection(model, el, (disconnected) => {
    stale = disconnected;
    if (!disconnected) everLive = true;
    staleSince = disconnected && everLive ? new Date() : null;
    el.classList.toggle("td-is-stale", disconnected);
    draw();
  });
  draw();
  return () => {
    clearInterval(ticker);
    unwatch();
    events.forEach((e) => model.off(e, draw));
  };
}

export default { render };
