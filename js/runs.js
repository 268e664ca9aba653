// The runs browser view: one row per run, refreshed by the kernel; actions go back as messages.
import { h, setChildren, statusBadge, fmtDuration, secondsBetween, fmtTime, TERMINAL } from "./common.js";

const COLUMNS = ["run", "status", "model", "task", "created", "duration", "registered model", ""];
const TASK_NAMES = { CHAT_COMPLETION: "chat", INSTRUCTION_FINETUNE: "instruction", CONTINUED_PRETRAIN: "pretrain" };

function render({ model, el }) {
  let confirming = null; // {name, action}
  const notice = h("span", { class: "td-runs-notice", testid: "runs-notice" });
  const errorLine = h("div", { class: "td-error", testid: "runs-error" });
  const count = h("span", { class: "td-muted", testid: "runs-count" });
  const body = h("tbody");
  el.appendChild(h("div", { class: "td-root td-runs" },
    h("div", { class: "td-runs-head" }, h("b", {}, "tunedeck runs "), count, notice),
    errorLine,
    h("div", { class: "td-runs-scroll" },
      h("table", { class: "td-runs-table", testid: "runs-table" },
        h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { text: c })))), body))));

  function actionCell(row) {
    const name = row.name;
    if (confirming && confirming.name === name) {
      const what = confirming.action;
      return h("td", { class: "td-runs-actions" }, what === "delete" ? "Delete run, events and checkpoints? " : "Stop this run? ",
        h("button", { class: "td-btn td-btn-danger", testid: `confirm-${what}`, text: what === "delete" ? "Yes, delete" : "Yes, cancel",
          onclick: () => { confirming = null; model.send({ kind: what, name }); draw(); } }),
        h("button", { class: "td-btn", testid: "confirm-no", text: "No", onclick: () => { confirming = null; draw(); } }));
    }
    const open = (model.get("open_names") || []).includes(name);
    return h("td", { class: "td-runs-actions" },
      h("button", { class: "td-btn", testid: "open", text: open ? "Opened" : "Open", disabled: open ? "" : null, onclick: () => model.send({ kind: "open", name }) }),
      TERMINAL.has(row.status) ? null : h("button", { class: "td-btn", testid: "cancel", text: "Cancel", onclick: () => { confirming = { name, action: "cancel" }; draw(); } }),
      h("button", { class: "td-btn", testid: "delete", text: "Delete", onclick: () => { confirming = { name, action: "delete" }; draw(); } }));
  }

  function draw() {
    const rows = model.get("rows") || [];
    count.textContent = `(${rows.length})`;
    errorLine.textContent = model.get("error") || "";
    notice.textContent = model.get("notice") || "";
    setChildren(body, rows.length ? rows.map((r) =>
      h("tr", { class: "td-runs-row", testid: "run-row", "data-name": r.name },
        h("td", { class: "td-runs-name", text: r.name, title: r.details || "" }),
        h("td", {}, statusBadge(r.status), r.progress !== null && r.progress !== undefined && !TERMINAL.has(r.status) ? ` ${Math.floor(r.progress)}%` : ""),
        h("td", { text: r.model }),
        h("td", { text: TASK_NAMES[r.task_type] || r.task_type || "" }),
        h("td", { text: fmtTime(r.created_at) }),
        h("td", { class: "td-runs-duration", "data-started": r.started_at || "", "data-completed": r.completed_at || "", text: fmtDuration(secondsBetween(r.started_at, r.completed_at)) }),
        h("td", { text: r.registered_model || "" }),
        actionCell(r)))
      : [h("tr", {}, h("td", { colspan: COLUMNS.length, class: "td-muted", text: "no runs yet" }))]);
  }

  function tick() {
    for (const cell of body.querySelectorAll(".td-runs-duration")) {
      if (cell.dataset.started && !cell.dataset.completed) cell.textContent = fmtDuration(secondsBetween(cell.dataset.started, null));
    }
  }

  const events = ["change:rows", "change:error", "change:notice", "change:open_names"];
  events.forEach((e) => model.on(e, draw));
  const ticker = setInterval(tick, 1000);
  draw();
  return () => {
    clearInterval(ticker);
    events.forEach((e) => model.off(e, draw));
  };
}

export default { render };
