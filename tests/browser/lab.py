"""JupyterLab (or Notebook 7) in a temp folder, driven by headless Chromium — as
/work/shared/browser-testing.md shows.

Own config, settings and runtime dirs (a developer's settings never leak in), the news pop-up off, a
token; ready when /api/status answers; stopped by PID. The page helpers wait on what JupyterLab shows
(the status bar's "| Idle"), never on fixed sleeps. ``JupyterLab(..., app="notebook")`` starts Notebook 7
with the same flags (it is a jupyter_server app built from JupyterLab's parts): its notebooks open at
/notebooks/<name>, and it has no status bar (test_notebook7.py has its own page helpers).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"  # screenshots and logs (git-ignored)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


APPS = {"lab": "jupyterlab", "notebook": "notebook"}  # app -> the module `python -m` starts


class JupyterLab:
    def __init__(self, root: Path, env: dict[str, str], unset: tuple[str, ...] = (), app: str = "lab"):
        self.root = root
        self.unset = unset
        self.app = app
        self.module = APPS[app]
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log_path = root.parent / f"{self.module}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> "JupyterLab":
        conf = self.root.parent / "jupyter"
        settings = conf / "lab-settings"
        notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        notification.parent.mkdir(parents=True, exist_ok=True)
        notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = {**{k: v for k, v in os.environ.items() if k not in self.unset}, **self.env,
               "JUPYTER_CONFIG_DIR": str(conf / "config"), "JUPYTERLAB_SETTINGS_DIR": str(settings),
               "JUPYTER_RUNTIME_DIR": str(conf / "runtime"), "JUPYTERLAB_WORKSPACES_DIR": str(conf / "workspaces")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
             f"--port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={self.root}"],
            stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=self.root,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if self.api("GET", "/api/status").ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.module} did not answer in {timeout} s:\n{self.log_path.read_text()[-3000:]}")

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, self.url + path, headers={"Authorization": f"token {self.token}"}, timeout=10, **kwargs)

    def notebook_url(self, name: str) -> str:
        if self.app == "notebook":
            return f"{self.url}/notebooks/{name}?token={self.token}"
        return f"{self.url}/lab/tree/{name}?token={self.token}&reset"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# -- page helpers ---------------------------------------------------------------------------------------
def wait_kernel_idle(page, timeout_ms: int = 60_000) -> None:
    """The status bar's kernel item reads "<kernel name> | Idle" once a kernel really exists and is idle."""
    page.wait_for_function(
        "() => { const s = document.querySelector('#jp-main-statusbar'); return !!s && /\\|\\s*Idle\\s*$/m.test(s.innerText); }",
        timeout=timeout_ms,
    )


def open_notebook(page, lab: JupyterLab, name: str) -> None:
    page.goto(lab.notebook_url(name))
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    wait_kernel_idle(page)


def run_all_cells(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def save_notebook(page) -> None:
    page.keyboard.press("Control+s")
    page.wait_for_function("() => !document.querySelector('.jp-mod-dirty')", timeout=10_000)
