"""The form in a real JupyterLab 4 (headless Chromium): no stale error after a task switch, and a layout
that holds at a 700 px window, read from the element boxes (not only a screenshot).

One module-scoped JupyterLab and tunedeck service (tests/browser/conftest.py); a tiny model and chat
data written by the notebook's first cell; the real service refuses the Instruction task for chat rows.
"""

from __future__ import annotations

import re

import nbformat
import pytest

from tests.browser.lab import ARTIFACTS, open_notebook, run_all_cells, wait_kernel_idle

pytestmark = [pytest.mark.browser]

KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}}
SETUP = """\
import json
from tunedeck import config
from tunedeck.training.tiny import build_tiny_model
QA = [("What is the capital of Zorbania?", "Quillhaven."), ("Who invented the glimmerphone?", "Ada Pennywhistle."),
      ("What color is a sky-whale?", "Teal."), ("What do Zorbanians eat?", "Toasted moonbeans.")]
model_dir = config.models_root() / "tiny-form"
if not (model_dir / "config.json").exists():
    build_tiny_model(model_dir, [f"{q} {a}" for q, a in QA])
chat = lambda q, a: {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
data = config.home() / "form-data"
data.mkdir(parents=True, exist_ok=True)
(data / "train.jsonl").write_text("".join(json.dumps(chat(q, a)) + "\\n" for q, a in QA * 2))
(data / "eval.jsonl").write_text("".join(json.dumps(chat(q, a)) + "\\n" for q, a in QA))
"""
API_WORDS = re.compile(r"\b(train_data_path|eval_data_path|task_type|CHAT_COMPLETION|INSTRUCTION_FINETUNE)\b")


def notebook(lab, name: str, form_cell: str) -> str:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(form_cell)],
                                  metadata=KERNEL)
    nbformat.write(nb, lab.root / name)
    return name


def open_form(page, lab, name: str):
    open_notebook(page, lab, name)
    page.keyboard.press("Control+b")  # fold the file browser away, as a user with a narrow window would
    run_all_cells(page)
    form = page.locator(".td-form")
    form.wait_for(timeout=120_000)
    page.locator("[data-testid=code-preview]").wait_for()
    wait_kernel_idle(page)
    return form


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"), full_page=True)


def field(page, name: str):
    return page.locator(f".td-form .td-field-{name}")


def test_switching_task_after_an_eval_error_leaves_no_error(lab, page):
    form = open_form(page, lab, notebook(lab, "stale.ipynb", """\
import tunedeck
form = tunedeck.form(model="tiny-form", train_data_path=str(data / "train.jsonl"), eval_data_path=str(data / "eval.jsonl"),
                     register_to="main.browser", task_type="INSTRUCTION_FINETUNE", training_duration="1ba")
form"""))
    page.locator("button.td-start").click()  # the service refuses: chat rows for the Instruction task
    evaluation = field(page, "eval_data_path")
    page.wait_for_function(
        "el => el.querySelectorAll('.td-issue').length > 0 && el.querySelector('.td-field-fixes button')",
        arg=evaluation.element_handle(), timeout=60_000,
    )
    issues = evaluation.locator(".td-issue").all_inner_texts()
    assert len(issues) == 1 and "lines 1\u20134" in issues[0], issues  # four rows, one problem
    assert issues[0].startswith("Eval data: this looks like Chat completion data"), issues
    assert evaluation.locator(".td-field-fixes button").inner_text() == "Switch Task to Chat completion"
    assert field(page, "train_data_path").locator(".td-issue").count() == 1
    assert "2 problem(s)" in page.locator(".td-form-status").inner_text()
    assert not API_WORDS.search(form.locator(".td-field-error").all_inner_texts().__str__())
    shot(page, "form-eval-error")

    field(page, "task_type").get_by_role("button", name="Chat completion").click()  # the user switches Task
    page.wait_for_function(
        "el => el.querySelectorAll('.td-issue').length === 0 && !el.querySelector('.td-field-fixes button')"
        " && !/problem/.test(el.querySelector('.td-form-status').innerText)",
        arg=form.element_handle(), timeout=30_000,
    )
    wait_kernel_idle(page)
    assert all(not t.strip() for t in form.locator(".td-field-error").all_inner_texts())
    preview = page.locator("[data-testid=code-preview]").inner_text()
    assert "task_type" not in preview and 'model="tiny-form"' in preview  # Chat completion is create()'s default
    shot(page, "form-task-switched")


MEASURE = """
form => {
  const visible = el => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  const box = el => el.getBoundingClientRect();
  const name = el => (el.innerText || el.placeholder || el.className.toString()).trim().slice(0, 60);
  const ctx = document.createElement('canvas').getContext('2d');
  const out = {width: box(form).width, cut: [], overlaps: [], outside: [], counts: {labels: 0, placeholders: 0, lines: 0}};
  const cut = (el, what) => {
    if (el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1)
      out.cut.push([what, name(el), el.scrollWidth, el.clientWidth, el.scrollHeight, el.clientHeight]);
  };
  for (const el of form.querySelectorAll('.td-label')) {
    if (!visible(el) || !el.innerText.trim()) continue;
    out.counts.labels++; cut(el, 'label');
  }
  for (const el of form.querySelectorAll('button, .widget-toggle-button, .lm-AccordionPanel-title, .jupyter-widget-Collapse-header, .widget-checkbox'))
    if (visible(el)) cut(el, 'control');
  for (const el of form.querySelectorAll('input[placeholder], textarea[placeholder]')) {
    if (!visible(el) || !el.placeholder) continue;
    const s = getComputedStyle(el);
    ctx.font = `${s.fontStyle} ${s.fontWeight} ${s.fontSize} ${s.fontFamily}`;
    const longest = Math.max(...el.placeholder.split('\\n').map(t => ctx.measureText(t).width));
    const room = el.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight);
    out.counts.placeholders++;
    if (el.tagName === 'INPUT' && longest > room + 1) out.cut.push(['placeholder', el.placeholder, Math.round(longest), room]);
  }
  for (const line of form.querySelectorAll('.td-field-line')) {
    const kids = [...line.children].filter(visible).map(k => [k, box(k)]).filter(([, b]) => b.width > 0 && b.height > 0);
    if (kids.length > 1) out.counts.lines++;
    for (let i = 0; i < kids.length; i++) for (let j = i + 1; j < kids.length; j++) {
      const [a, ra] = kids[i], [b, rb] = kids[j];
      const x = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
      const y = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
      if (x > 0.5 && y > 0.5) out.overlaps.push([name(a), name(b), x, y]);
    }
  }
  const edge = box(form).right + 0.5;
  for (const el of form.querySelectorAll('*'))
    if (visible(el) && box(el).width > 0 && box(el).right > edge && !el.closest('.td-code, pre'))
      out.outside.push([name(el), Math.round(box(el).right), Math.round(edge)]);
  out.scroll = [form.scrollWidth, form.clientWidth];
  return out;
}
"""


def test_layout_holds_at_700_px(lab, page):
    form = open_form(page, lab, notebook(lab, "narrow.ipynb", """\
import tunedeck
form = tunedeck.form(model="tiny-form", train_data_path="", register_to="main", context_length=4000)
form"""))
    page.set_viewport_size({"width": 700, "height": 1400})
    for section in ("evaluation", "advanced"):
        title = page.locator(f".td-section-{section} .jupyter-widget-Collapse-header, .td-section-{section} .lm-AccordionPanel-title").first
        if not page.locator(f".td-section-{section} .jupyter-widget-Collapse-open, .td-section-{section} .lm-mod-expanded").count():
            title.click()
    page.locator(".td-field-eval_prompts textarea").wait_for()
    fix = field(page, "context_length").locator(".td-field-fixes button")  # an error with its fix, shown too
    fix.wait_for(timeout=30_000)
    assert fix.inner_text() == "Set Context length to 1,024"
    devices = field(page, "num_devices")  # Devices (num_devices): measured with the rest; says what the service has
    assert devices.locator("input").get_attribute("placeholder") == "default 1"
    assert re.search(r"this service has \d+ (CPU core|GPU)", devices.inner_text()), devices.inner_text()
    page.wait_for_timeout(300)  # let the layout settle at the new width
    shot(page, "form-700px")
    m = form.evaluate(MEASURE)
    assert m["width"] < 640, m["width"]  # the form really is narrow here (the notebook's output area at 700 px)
    assert m["counts"]["labels"] >= 13 and m["counts"]["placeholders"] >= 8 and m["counts"]["lines"] >= 12, m["counts"]
    assert m["cut"] == [], m["cut"]
    assert m["overlaps"] == [], m["overlaps"]
    assert m["outside"] == [], m["outside"]
    assert m["scroll"][0] <= m["scroll"][1], m["scroll"]
    fix.click()  # and the one-click fix works at this width
    page.wait_for_function("el => !el.querySelector('.td-field-fixes button')",
                           arg=field(page, "context_length").element_handle(), timeout=30_000)
    assert field(page, "context_length").locator("input").input_value() == "1024"
