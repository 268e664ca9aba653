"""The form's data check, rendered: what the service's ``data_check`` answered, as escaped HTML.

The answer comes from the trainer (rows, token statistics, a sample, problems with line numbers) and
may grow new keys; this renders what is there and ignores what it does not know.
"""

from __future__ import annotations

import json
from typing import Any

from tunedeck.ui._snapshot import esc


def render_data_check(result: dict[str, Any], context_length: int | None = None, problems: bool = True) -> str:
    """The data check's answer as escaped HTML. Renders what is there: rows, token stats against the
    context length, the first bad lines with their line numbers (unless ``problems`` is False: the form
    shows them next to the field, each once, with the lines grouped), a sample row."""
    ok = bool(result.get("ok"))
    parts: list[str] = []
    rows = _first(result, "rows", "num_rows", "row_count")
    if rows:
        parts.append(f"{_fmt(rows)} rows")
    tokens = result.get("tokens") or result.get("token_counts")
    if isinstance(tokens, dict):
        stat = " / ".join(f"{k} {_fmt(tokens[k])}" for k in ("min", "median", "max") if tokens.get(k) is not None)
        if stat:
            parts.append(f"tokens {stat}")
        if tokens.get("total") is not None:
            parts.append(f"{_fmt(tokens['total'])} tokens in all")
    ctx = result.get("context_length") or context_length
    if ctx and tokens:
        parts.append(f"context length {_fmt(ctx)}")
    too_long = _first(result, "too_long", "truncated", "over_context")
    if too_long:
        parts.append(f"{_fmt(too_long)} rows longer than the context (truncated)")
    verdict = f"<b style='color:{'#15803d' if ok else '#b91c1c'}'>{'ok' if ok else 'problems found'}</b>"
    html = [f"<div class='td-check-summary' style='font-size:12px'>{verdict}{': ' if parts else ''}{esc('; '.join(parts))}</div>"]
    if result.get("message") and not parts and problems:
        html.append(f"<div style='font-size:12px'>{esc(result['message'])}</div>")
    if result.get("note"):
        html.append(f"<div class='td-muted' style='font-size:12px'>{esc(result['note'])}</div>")
    found = [p if isinstance(p, dict) else {"message": str(p)} for p in (result.get("problems") or [])]
    found += [p if isinstance(p, dict) else {"message": str(p)} for p in (result.get("bad_lines") or [])]
    if found and problems:
        items = []
        for p in found[:10]:
            line = p.get("line") or p.get("line_number")
            where = f"line {line}" + (f" of {p['file']}" if p.get("file") else "") + ": " if line else ""
            text = p.get("message") or p.get("error") or p.get("reason") or ""
            items.append(f"<li class='td-bad-line'>{esc(where + str(text))}</li>")
        more = f"<li>… and {len(found) - 10} more</li>" if len(found) > 10 else ""
        title = "first bad lines" if any(p.get("line") for p in found) else "problems"
        html.append(
            f"<div style='font-size:12px;color:#b91c1c'>{title}:<ul style='margin:2px 0'>{''.join(items)}{more}</ul></div>"
        )
    sample = result.get("sample")
    if sample is not None:
        text = sample if isinstance(sample, str) else json.dumps(sample, ensure_ascii=False, indent=1)
        html.append(
            "<details><summary style='font-size:12px'>a sample row</summary>"
            f"<pre style='font-size:11px;white-space:pre-wrap;max-height:200px;overflow:auto'>{esc(text[:2000])}</pre></details>"
        )
    return "".join(html)


def _first(d: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if d.get(key) is not None:
            return d[key]
    return None


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.4g}"
    return str(value)
