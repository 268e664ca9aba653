"""Durations -> optimizer steps, the LR schedule's shape, checkpoint spacing, throttled progress."""

from __future__ import annotations

import pytest

from tunedeck.inputs.params import parse_duration
from tunedeck.training.plan import checkpoint_steps, lr_multiplier, make_plan
from tunedeck.training.progress import Progress


def plan(duration: str, rows: int = 10, tokens: int = 10_000, batch: int = 4000):
    return make_plan(parse_duration(duration), rows, tokens, batch)


def test_epochs_batches_and_tokens_give_the_right_number_of_steps():
    p = plan("1ep")  # 10 rows of 1000 tokens on average, 4 rows per step -> 4 + 4 + 2
    assert (p.rows_per_step, p.steps_per_epoch, p.total_steps, p.tokens_per_step) == (4, 3, 3, 3333)
    assert plan("3ep").total_steps == 9
    assert plan("7ba").total_steps == 7
    assert plan("100ba").total_steps == 100  # epochs repeat
    assert plan("10_000tok").total_steps == 3  # one epoch of tokens
    assert plan("25000tok").total_steps == 8  # 2.5 epochs of 3 steps, rounded up
    assert plan("1tok").total_steps == 1


def test_steps_walk_through_epochs_and_cover_every_row():
    p = plan("2ep")
    assert [p.epoch_of(s) for s in range(1, 7)] == [0, 0, 0, 1, 1, 1]
    assert [p.rows_of(s) for s in (1, 2, 3, 4)] == [slice(0, 4), slice(4, 8), slice(8, 10), slice(0, 4)]
    assert [p.completed_epochs(s) for s in (2, 3, 4, 6)] == [0, 1, 1, 2]


def test_rows_per_step_from_batch_tokens():
    assert plan("1ep", rows=10, tokens=81_920, batch=4096).rows_per_step == 1  # 8k-token rows: never zero
    assert plan("1ep", rows=100, tokens=51_200, batch=4096).rows_per_step == 8  # 512-token rows
    assert plan("1ep", rows=100, tokens=40_000, batch=4096).rows_per_step == 10  # rows of 400 on average
    tiny = plan("1ep", rows=1, tokens=63, batch=4096)  # less data than one batch: one step per epoch
    assert (tiny.rows_per_step, tiny.steps_per_epoch) == (1, 1)  # never more rows per step than there are


def test_schedule_warms_up_then_decays_to_near_zero():
    total = 200
    warmup = plan("200ba").warmup_steps
    assert warmup == 4  # 2% of the run
    lrs = [lr_multiplier(k, warmup, total) for k in range(total)]
    assert lrs[0] == pytest.approx(0.25) and lrs[warmup - 1] == 1.0  # no step at lr 0
    assert all(a < b for a, b in zip(lrs[:warmup], lrs[1:warmup]))
    assert all(a > b for a, b in zip(lrs[warmup - 1 :], lrs[warmup:]))
    assert 0 < lrs[-1] < 0.01
    # Linear: equal decrements after the peak.
    steps = {round(a - b, 9) for a, b in zip(lrs[warmup - 1 :], lrs[warmup:])}
    assert len(steps) == 1


def test_short_runs_still_learn():
    assert plan("1ba").warmup_steps == 1
    assert lr_multiplier(0, 1, 1) == 1.0
    assert [round(lr_multiplier(k, 1, 3), 4) for k in range(3)] == [1.0, 0.6667, 0.3333]


def test_checkpoints_at_epoch_ends_at_most_five_and_always_the_last_step():
    assert checkpoint_steps(9, 3) == [3, 6, 9]
    assert checkpoint_steps(7, 3) == [3, 6, 7]  # a ba duration ending mid-epoch
    assert checkpoint_steps(2, 10) == [2]  # shorter than an epoch
    many = checkpoint_steps(150, 1)
    assert len(many) == 5 and many[-1] == 150
    gaps = [b - a for a, b in zip([0] + many, many)]
    assert max(gaps) - min(gaps) <= 2  # evenly spaced
    assert checkpoint_steps(150, 1, max_checkpoints=1) == [150]


def test_progress_throttles_but_reports_first_and_last():
    now = [0.0]
    p = Progress(total_steps=100, checkpoints=2, clock=lambda: now[0])
    reported = []
    for step in range(1, 101):
        now[0] += 0.01
        p.step_done(tokens=100, seconds=0.01)
        if p.should_report(step):
            reported.append(step)
    assert reported[0] == 1 and reported[-1] == 100
    assert len(reported) <= 1 + 100 * 0.01 / 0.5 + 1
    assert p.tokens_per_second == pytest.approx(10_000)
    assert p.percent(50) == 50.0
    p.checkpoint_done(1.0)
    assert p.eta_seconds(50) == pytest.approx(50 * 0.01 + 1 * 1.0)
