"""The catch-up rule: which nearby days a chain run takes on besides its events' days."""

from __future__ import annotations

from datetime import date

from include.notify.catch_up import days_to_catch_up, window_days

D = date(2026, 11, 29)


def test_the_window_is_the_days_either_side_of_the_last_one_not_already_in_the_run() -> None:
    assert window_days([date(2026, 11, 28), D], 1) == [date(2026, 11, 30)]
    assert window_days([D], 2) == [date(2026, 11, 27), date(2026, 11, 28), date(2026, 11, 30), date(2026, 12, 1)]
    assert window_days([D], 0) == []
    assert window_days([], 7) == []


def test_a_day_is_caught_up_when_upstream_finished_it_and_this_stage_has_not_or_finished_it_before() -> None:
    a, b, c, d = (date(2026, 11, n) for n in (26, 27, 28, 30))
    upstream = {a: 100.0, b: 100.0, c: 100.0, d: None}
    own = {a: None, b: 50.0, c: 150.0, d: None}
    # a: never done here; b: done before its input changed; c: up to date; d: upstream not done
    assert days_to_catch_up([a, b, c, d], upstream, own) == [a, b]
