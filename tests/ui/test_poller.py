"""The poll thread ends with its owner: stop(), a False answer, or the owner being garbage."""

from __future__ import annotations

import gc

from tunedeck.ui._poller import Poller

from tests.helpers import wait_for


class Owner:
    def __init__(self, answers=True):
        self.ticks = 0
        self.answers = answers
        self.errors = []

    def _poll(self):
        self.ticks += 1
        if isinstance(self.answers, Exception):
            raise self.answers
        return self.answers

    def _poll_failed(self, exc):
        self.errors.append(str(exc))


def test_stop_ends_the_thread():
    owner = Owner()
    poller = Poller(owner, 0.01, "t").start()
    wait_for(lambda: owner.ticks >= 2, timeout=5)
    poller.stop()
    poller.join(2)
    assert not poller._thread.is_alive()


def test_false_ends_the_thread():
    owner = Owner(answers=False)
    poller = Poller(owner, 0.01, "t").start()
    poller.join(2)
    assert owner.ticks == 1 and not poller.running


def test_a_dropped_owner_ends_the_thread():
    owner = Owner()
    poller = Poller(owner, 0.01, "t").start()
    wait_for(lambda: owner.ticks >= 1, timeout=5)
    del owner
    gc.collect()
    poller.join(2)
    assert not poller._thread.is_alive()


def test_errors_are_reported_and_retried_with_backoff():
    owner = Owner(answers=RuntimeError("down"))
    poller = Poller(owner, 0.01, "t").start()
    wait_for(lambda: len(owner.errors) >= 3, timeout=5)
    poller.stop()
    assert owner.errors[0] == "down"
