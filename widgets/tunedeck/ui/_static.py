"""The widgets' front-end files: plain ES modules and CSS in ``js/``.

A wheel carries them as ``tunedeck/ui/static/`` (hatch force-include); an editable checkout reads them
from ``<repo>/js/``. anywidget loads one module per view from a string, so a relative
``import { a, b } from "./x.js";`` line is replaced by the text of ``x.js`` (once per module): the
sources stay small separate files that node can also import for tests, and nothing needs a bundler.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_IMPORT = re.compile(r'^import\s*\{[^}]*\}\s*from\s*"\./([\w.-]+\.js)";?\s*$', re.MULTILINE)
_EXPORT = re.compile(r"^export\s+(?=(?:async\s+)?function|const|let|class)", re.MULTILINE)


def static_dir() -> Path:
    """The folder holding the widgets' ES modules and CSS, in a wheel or a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "static", here.parents[2] / "js"):
        if (candidate / "monitor.js").is_file():
            return candidate
    raise FileNotFoundError(f"tunedeck's widget files are missing (looked in {here / 'static'} and {here.parents[2] / 'js'})")


@cache
def esm(name: str) -> str:
    """The module ``name`` with its relative imports inlined, ready for anywidget's ``_esm``."""
    return _inline(name, set())


@cache
def css(*names: str) -> str:
    return "\n".join((static_dir() / n).read_text(encoding="utf-8") for n in names)


def _inline(name: str, seen: set[str]) -> str:
    seen.add(name)
    source = (static_dir() / name).read_text(encoding="utf-8")

    def replace(match: re.Match[str]) -> str:
        dep = match.group(1)
        if dep in seen:
            return f"// {dep}: already included"
        body = _EXPORT.sub("", _inline(dep, seen))
        return f"// ---- {dep} ----\n{body}\n// ---- end of {dep} ----"

    return _IMPORT.sub(replace, source)
