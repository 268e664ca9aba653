"""Widget tests without a browser or a service: every API call goes to an in-memory FakeClient."""

from __future__ import annotations

import pytest

from tests.ui.fakes import FakeClient


@pytest.fixture
def fake(home, monkeypatch) -> FakeClient:
    import tunedeck.client
    import tunedeck.foundation_model

    client = FakeClient()
    monkeypatch.setattr(tunedeck.client, "get_client", lambda: client)
    monkeypatch.setattr(tunedeck.foundation_model, "get_client", lambda: client)
    return client


class Sent(list):
    """Custom messages a widget sent to its views."""


@pytest.fixture
def sent(monkeypatch):
    """Capture ``widget.send`` of every RunMonitor made in the test."""
    from tunedeck.ui.monitor import RunMonitor

    messages = Sent()
    monkeypatch.setattr(RunMonitor, "send", lambda self, content, buffers=None: messages.append(content))
    return messages


@pytest.fixture
def make_form(fake, sent):
    """Forms made by the test, closed after it."""
    from tunedeck.ui.form import TrainingForm

    made = []

    def make(**defaults):
        f = TrainingForm(**defaults)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()
