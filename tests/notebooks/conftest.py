"""The example notebooks run headless (nbclient) against one temp TUNEDECK_HOME per module."""

from __future__ import annotations

import pytest

from tests.helpers import ISOLATED_ENV, stop_service


@pytest.fixture(scope="module")
def nb_home(tmp_path_factory):
    """TUNEDECK_HOME for the kernels nbclient starts (they inherit this process's environment)."""
    import tunedeck.client.http as http

    root = tmp_path_factory.mktemp("notebooks")
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        for var in ISOLATED_ENV:
            mp.delenv(var, raising=False)
        mp.setenv("TUNEDECK_HOME", str(home))
        mp.setenv("HF_HUB_CACHE", str(root / "hf-cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        http._client = None
        yield home
        stop_service(home)
        http._client = None
