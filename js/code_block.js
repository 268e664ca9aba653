// A read-only code block with a Copy button (the form's preview of the equivalent fm.create call).
import { h, copyText } from "./common.js";

function render({ model, el }) {
  const pre = h("pre", { class: "td-code", testid: "code-preview" });
  const status = h("span", { class: "td-copy-status", testid: "copy-status" });
  let timer = null;
  const button = h("button", {
    class: "td-btn td-copy", testid: "copy", text: "Copy",
    onclick: async () => {
      const ok = await copyText(model.get("code"));
      status.textContent = ok ? "copied" : "select the text and copy it by hand";
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => { status.textContent = ""; }, 2000);
    },
  });
  el.appendChild(h("div", { class: "td-root td-code-block" },
    h("div", { class: "td-code-head" }, h("span", { class: "td-card-title", text: model.get("title") || "Python" }), status, button),
    pre));
  const draw = () => { pre.textContent = model.get("code"); };
  model.on("change:code", draw);
  draw();
  return () => {
    model.off("change:code", draw);
    if (timer) clearTimeout(timer);
  };
}

export default { render };
