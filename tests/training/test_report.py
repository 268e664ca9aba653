"""How the worker words its progress: durations and rates readable at every scale."""

from __future__ import annotations

import pytest

from tunedeck.training.report import format_duration, format_rate


@pytest.mark.parametrize(("rate", "text"), [
    (12345.6, "12,346 tok/s"), (195.2, "195 tok/s"), (31.47, "31.5 tok/s"), (4.567, "4.6 tok/s"),
    (0.1194, "0.12 tok/s"), (0.0, "0 tok/s"),
])
def test_rates_keep_two_significant_digits_when_slow(rate, text):
    assert format_rate(rate) == text  # a 7B step on a CPU is 0.12 tok/s, not "0 tok/s"


@pytest.mark.parametrize(("seconds", "text"), [(45, "45s"), (1234, "20m 34s"), (7384, "2h 3m")])
def test_durations(seconds, text):
    assert format_duration(seconds) == text
