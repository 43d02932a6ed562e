"""The value-based core's output pinned byte for byte on a small synthetic day: plan rows with their
reason text, the decision columns, the decision log and the skipped rows. A speed change to
``planning_value`` / ``response`` must leave these digests alone; a change of behaviour updates
them on purpose (say why in the commit)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import date

import pandas as pd
import pytest

from include.notify.config import NotifyConfig
from include.notify.stages.planning import build_plan
from include.notify.stages.response_model import ResponseModel, prior_model, prior_probability
from notify_tools.synthetic import synthetic_fitted_model, synthetic_inputs, synthetic_response

DAY = date(2026, 11, 25)

# sha256 of plan / skipped / decisions as CSV (floats at full precision), 300 users, seed 11,
# written by the planner before it was vectorised (pandas group-bys and string ops per step).
PINNED = {
    "prior": ("234bd8a73e5d8af7", "1c251b2486e997eb", "b8822588ec9dc301"),
    "mean-explore": ("573fd3ba8d874fbe", "772d8eeaf0f6e6f3", "07a2ed3497ae7eaa"),
    "fitted": ("cb90c9476d238f0d", "6cc5c2013708f692", "ce63e19e2329bf8b"),
    "calibrated": ("a21218764253cc12", "ac002e3f3d991389", "3e50d170d526007f"),
    "scorer": ("5cf4e66a8b175151", "1fa540becdc8c7fb", "8667dc72c1f570d2"),
}


def _digest(frame: pd.DataFrame) -> str:
    return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()[:16]


def _planned(case: str) -> tuple[str, str, str]:
    config = NotifyConfig()
    if case == "mean-explore":  # sends on the mean p, explores often
        config = config.replace(send_quantile=0.5, explore_share=0.3)
    # The learner path: a model fitted the nightly way on a small synthetic log (~1 s).
    model = synthetic_fitted_model(config, DAY, users=500, seed=11) if case == "fitted" else prior_model(DAY)
    if case == "calibrated":  # the calibrated prior chosen over the learners: scales and evidence, no learner
        model = ResponseModel(
            "response-prior_calibrated-test", "prior_calibrated", prior_scales={1: 0.8, 2: 1.3, 3: 0.6},
            campaign_rows={"C001": 900, "C004": 50, "C007": 3000}, k_rows={1: 2000, 2: 700, 3: 40},
            repeat_rows=(1500, 600), support={"times_sent": {0: 1500, 1: 400}, "ignored_streak": {0: 900, 1: 80}},
        )  # fmt: skip
    inputs = synthetic_response(config, synthetic_inputs(300, DAY, seed=11), model, seed=11)
    if case == "scorer":  # the simulator's oracle path: a scorer over every hour's features
        inputs = replace(inputs, response=replace(inputs.response, scorer=lambda rows, f: 1.5 * prior_probability(f)))
    result = build_plan(config, inputs)
    assert case != "fitted" or model.estimator is not None
    assert result.decisions is not None
    assert len(result.plan)
    assert len(result.skipped)
    return _digest(result.plan), _digest(result.skipped), _digest(result.decisions)


@pytest.mark.parametrize("case", sorted(PINNED))
def test_the_value_core_output_is_pinned(case: str) -> None:
    assert _planned(case) == PINNED[case]
