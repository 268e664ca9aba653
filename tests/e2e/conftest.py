"""One real embedded service per test module, on a tiny model built here (nothing is downloaded)."""

from __future__ import annotations

import pytest

from tests.helpers import ISOLATED_ENV, PAIRS, stop_service

@pytest.fixture(scope="module")
def e2e_home(tmp_path_factory):
    import tunedeck.client.http as http
    from tunedeck.training.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("e2e")
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        for var in ISOLATED_ENV:
            mp.delenv(var, raising=False)
        mp.setenv("TUNEDECK_HOME", str(home))
        mp.setenv("HF_HUB_CACHE", str(root / "hf-cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        texts = [t for pair in PAIRS for t in pair]
        build_tiny_model(home / "models" / "tiny-llama", texts)
        http._client = None
        yield home
        stop_service(home)
        http._client = None
