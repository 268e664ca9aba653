"""One JupyterLab + one tunedeck service per browser test module, in a temp folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.browser.lab import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, REPO, JupyterLab
from tests.helpers import ISOLATED_ENV, stop_service


def pytest_collection_modifyitems(items):
    if not Path(CHROMIUM).exists():
        skip = pytest.mark.skip(reason=f"{CHROMIUM} is missing (apt-get install chromium)")
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(skip)


def _server(tmp_path_factory, app: str):
    base = tmp_path_factory.mktemp(app)
    root = base / "notebooks"
    root.mkdir()
    home = base / "home"
    env = {"TUNEDECK_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(base / "hf-cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    server = JupyterLab(root, env, unset=ISOLATED_ENV, app=app)
    server.home = home
    server.start()
    yield server
    server.stop()
    stop_service(home)
    if server.log_path.exists():
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(server.log_path, ARTIFACTS / server.log_path.name)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab 4 and its own tunedeck service (TUNEDECK_HOME = lab.home)."""
    yield from _server(tmp_path_factory, "lab")


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory):
    """Notebook 7 (`python -m notebook`, the same flags) and its own tunedeck service."""
    pytest.importorskip("notebook", minversion="7", reason="Notebook 7 is not installed (pip install 'notebook>=7')")
    yield from _server(tmp_path_factory, "notebook")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
    pg = context.new_page()
    pg.console_errors = []
    pg.on("console", lambda m: m.type == "error" and pg.console_errors.append(m.text))
    yield pg
    context.close()
