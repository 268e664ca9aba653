"""Settings read from the environment."""

from __future__ import annotations

import pytest

from tunedeck import config


@pytest.mark.parametrize("value, expected", [(None, "auto"), ("", "auto"), ("BF16", "bf16"), (" fp32 ", "fp32")])
def test_precision_values(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("TUNEDECK_PRECISION", raising=False)
    else:
        monkeypatch.setenv("TUNEDECK_PRECISION", value)
    assert config.precision() == expected


def test_an_unknown_precision_names_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv("TUNEDECK_PRECISION", "fp8")
    with pytest.raises(ValueError, match=r"TUNEDECK_PRECISION='fp8' is not one of auto, fp32, bf16"):
        config.precision()
