"""The planning benchmark's synthetic response context: shaped like production's, and planned by
the value-based core the same sharded and unsharded."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from include.notify.config import NotifyConfig
from include.notify.stages.plan_shards import plan_in_shards, split_inputs
from include.notify.stages.planning import build_plan
from include.notify.stages.response_model import prior_model
from notify_tools.synthetic import synthetic_history, synthetic_inputs, synthetic_response

DAY = date(2026, 11, 25)
CONFIG = NotifyConfig()


def test_the_history_gives_signals_in_range_and_the_value_core_decides() -> None:
    inputs = synthetic_inputs(400, DAY, seed=3)
    history = synthetic_history(inputs, seed=3)
    assert (pd.to_datetime(history["events"]["ts"], utc=True) < pd.Timestamp(DAY, tz="UTC")).all()
    assert history["events"]["notification_id"].dropna().is_unique is False  # sends and their reactions share ids
    sent = history["events"][history["events"]["event_type"] == "notification_sent"]
    assert sent["notification_id"].is_unique
    assert len(sent)
    planned = synthetic_response(CONFIG, inputs, prior_model(DAY), history=history)
    context = planned.response
    assert context is not None
    assert len(context.engagement) == len(inputs.recommendations)
    assert np.allclose(context.engagement.sum(axis=1), 1, atol=1e-4)
    result = build_plan(CONFIG, planned)
    assert len(result.plan)
    assert result.decisions is not None
    assert len(result.decisions) == len(result.plan)
    assert result.plan["p_click"].between(0, 1).all()
    assert result.plan["reason"].str.startswith("expected value").all()
    assert len(result.plan) + len(result.skipped) == len(inputs.recommendations)


def test_the_value_core_plans_the_same_in_shards() -> None:
    inputs = synthetic_response(CONFIG, synthetic_inputs(1200, DAY, seed=5), prior_model(DAY), seed=5)
    whole = build_plan(CONFIG, inputs)
    plans = []
    plan_in_shards(CONFIG, split_inputs(inputs, 3), sink=lambda _, __, result: plans.append(result.plan))
    keys = ["user_id", "send_at_campaign"]
    sharded = pd.concat(plans, ignore_index=True).sort_values(keys, kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(sharded, whole.plan.sort_values(keys, kind="stable").reset_index(drop=True))
