"""The fast in-process closed loop runs every policy with the shipped planner and scoring code,
logs what OPE needs, and the held-out profile plays like the shipped ones (a sweep that broke
silently when scoring's inputs changed is what this guards)."""

from __future__ import annotations

import numpy as np
import pytest

from include.notify.analyst.evaluate import TargetPolicy, evaluate
from include.notify.config import NotifyConfig
from notify_tools.simulator.fast import FAST_POLICIES, run_fast

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> NotifyConfig:
    # One state directory for both profiles: the catalog's embeddings are computed once.
    return NotifyConfig(state_dir=tmp_path_factory.mktemp("fast-loop"))


@pytest.mark.parametrize("profile", ["sharp_evening", "heldout_flat"])
def test_every_policy_runs_two_days_and_the_logs_feed_ope(profile: str, config: NotifyConfig) -> None:
    result, logs = run_fast(users=60, days=2, seed=5, profile=profile, products_limit=300, config=config)
    frame = result.frame()
    assert sorted(set(frame["policy"])) == sorted(FAST_POLICIES)
    assert (frame["clicked"] <= frame["opened"]).all()
    assert (frame["opened"] <= frame["sent"]).all()
    assert (frame["sent_to_opted_out"] == 0).all()
    notify = frame[frame["policy"] == "notify"]
    assert notify["sent"].sum() > 0
    log = logs["notify"]
    assert len(log) == notify["sent"].sum()
    propensity = log["propensity"].to_numpy(float)
    assert ((propensity > 0) & (propensity <= 1)).all()
    ope = evaluate(log, TargetPolicy("greedy"))
    assert all(np.isfinite(e.value) and e.low <= e.value <= e.high for e in ope["estimates"])
