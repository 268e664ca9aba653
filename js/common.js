// Small DOM and formatting helpers shared by the tunedeck views.
// Text always goes in through textContent / text nodes: no user or model text is parsed as HTML.

/** Create an element: h("div", {class: "x", testid: "y", title: "t"}, "text", child, ...). */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "testid") node.dataset.testid = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children) append(node, child);
  return node;
}

function append(node, child) {
  if (child === undefined || child === null || child === false) return;
  if (Array.isArray(child)) child.forEach((c) => append(node, c));
  else if (child instanceof Node) node.appendChild(child);
  else node.appendChild(document.createTextNode(String(child)));
}

/** Replace all children of node by the given ones. */
export function setChildren(node, ...children) {
  node.replaceChildren();
  for (const child of children) append(node, child);
}

export const TERMINAL = new Set(["COMPLETED", "STOPPED", "FAILED"]);
export const ACTIVE = new Set(["STARTING", "RUNNING", "TERMINATING"]);

/** A colored status badge; the color comes from the CSS class, the text says the same thing. */
export function statusBadge(status, testid = "status") {
  const s = status || "UNKNOWN";
  return h("span", { class: `td-badge td-status-${s.replace(/[^A-Z_]/g, "")}`, testid, text: s });
}

/** 75 -> "1m 15s", 3725 -> "1h 02m", 9 -> "9s". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  let s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  s = s % 60;
  if (m < 60) return `${m}m ${String(s).padStart(2, "0")}s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(hours / 24)}d ${hours % 24}h`;
}

/** ISO time -> local "HH:MM:SS" only (the table's narrow column; the full time goes in a tooltip). */
export function fmtClock(iso) {
  if (!iso) return "";
  const t = new Date(iso);
  return isNaN(t) ? String(iso) : t.toLocaleTimeString([], { hour12: false });
}

/** Seconds between two ISO times (the second defaults to now). */
export function secondsBetween(startIso, endIso) {
  if (!startIso) return null;
  const start = Date.parse(startIso);
  const end = endIso ? Date.parse(endIso) : Date.now();
  return isNaN(start) || isNaN(end) ? null : (end - start) / 1000;
}

/** ISO time -> local "HH:MM:SS" (with the date when it is not today). */
export function fmtTime(iso, now = new Date()) {
  if (!iso) return "";
  const t = new Date(iso);
  if (isNaN(t)) return String(iso);
  const time = t.toLocaleTimeString([], { hour12: false });
  return t.toDateString() === now.toDateString() ? time : `${t.toLocaleDateString()} ${time}`;
}

/** A number with few significant digits: 2.3456 -> "2.346", 0.000123 -> "1.23e-4". */
export function fmtNumber(x, digits = 4) {
  if (x === null || x === undefined || x === "") return "";
  const v = Number(x);
  if (!isFinite(v)) return String(x);
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e6)) return v.toExponential(2).replace("e-0", "e-").replace("e+0", "e+");
  return String(Number(v.toPrecision(digits)));
}

/** Put text on the clipboard; true if it got there. Without the clipboard API (an insecure origin, no
 *  permission) a selected scratch textarea and execCommand("copy") are tried. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (_) {
    const area = h("textarea", { class: "td-copy-scratch" });
    area.value = text;
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
    area.remove();
    return ok;
  }
}

/** A random id so a view can recognise the kernel's answers to its own requests. */
export function viewId() {
  return Math.random().toString(36).slice(2, 10);
}

/** ISO time -> local "YYYY-MM-DD HH:MM" (a table column that must say the day; seconds in the tooltip). */
export function fmtDateTime(iso, { seconds = false } = {}) {
  if (!iso) return "";
  const t = new Date(iso);
  if (isNaN(t)) return String(iso);
  const p = (n) => String(n).padStart(2, "0");
  const day = `${t.getFullYear()}-${p(t.getMonth() + 1)}-${p(t.getDate())}`;
  return `${day} ${p(t.getHours())}:${p(t.getMinutes())}${seconds ? `:${p(t.getSeconds())}` : ""}`;
}

// -- a view whose kernel is gone ----------------------------------------------------------------------
// Two signs, either is enough:
// - ipywidgets puts this class on the views of a model without a live comm (DOMWidgetView's
//   _comm_live_update): at once for a view restored from widget state saved in the notebook, and on a
//   restart (the manager's disconnect()). Seen in JupyterLab 4.6 on ipywidgets' own views (a VBox around
//   a tunedeck view), but not on anywidget 0.11's views themselves, hence:
// - the widget manager's kernel (JupyterLab's and Notebook 7's managers expose `kernel`) going through
//   "restarting", "autorestarting" or "dead", or being replaced: the models of this view died with it,
//   even when the new kernel comes up idle. Once stale, a view stays stale.
export const DISCONNECTED_CLASS = "jupyter-widgets-disconnected";
const KERNEL_GONE = new Set(["restarting", "autorestarting", "dead"]);

/** True when the view in `el` (or a widget around it) has lost its kernel. */
export function isDisconnected(el) {
  return !!(el && el.closest && el.closest(`.${DISCONNECTED_CLASS}`));
}

function managerKernel(model) {
  try {
    return (model.widget_manager && model.widget_manager.kernel) || null;
  } catch (_) {
    return null;
  }
}

/** Call onChange(disconnected) now and whenever that changes; returns the cleanup. */
export function watchConnection(model, el, onChange) {
  let last = null;
  let gone = false;
  const kernel = managerKernel(model);
  const check = () => {
    const current = managerKernel(model);
    if (kernel && (current !== kernel || kernel.isDisposed || KERNEL_GONE.has(kernel.status))) gone = true;
    const now = gone || isDisconnected(el);
    if (now !== last) {
      last = now;
      onChange(now);
    }
  };
  const onStatus = () => check();
  const signal = kernel && kernel.statusChanged && typeof kernel.statusChanged.connect === "function" ? kernel.statusChanged : null;
  if (signal) signal.connect(onStatus);
  const observer = typeof MutationObserver === "undefined" ? null : new MutationObserver(check);
  if (observer) observer.observe(el, { attributes: true, attributeFilter: ["class"] });
  model.on("comm_live_update", check);
  check();
  return () => {
    model.off("comm_live_update", check);
    if (signal) signal.disconnect(onStatus);
    if (observer) observer.disconnect();
  };
}

/** The line a disconnected view shows above itself. */
export function staleText(what, since) {
  const when = since ? ` (since ${fmtDateTime(since.toISOString(), { seconds: true })})` : "";
  return `This ${what} belongs to a kernel that has stopped${when}: it no longer updates and its actions are off. Run the cell again for a live one.`;
}

/** The least a view does about a dead kernel: `td-is-stale` on its element while it is stale, which
 *  common.css turns into one line above the view and buttons that take no clicks. Returns the cleanup.
 *  (A view that says more itself, as the runs browser does, puts `td-stale-aware` on its root.) */
export function markStale(model, el, onChange = null) {
  return watchConnection(model, el, (stale) => {
    el.classList.toggle("td-is-stale", stale);
    if (onChange) onChange(stale);
  });
}
