"""The value-based core's output pinned on a small synthetic day: plan rows with their reason text,
the decision columns, the decision log and the skipped rows. A speed change to ``planning_value`` /
``response`` must leave these digests alone; a change of behaviour updates them on purpose (say why
in the commit).

Floats are digested at 8 significant digits, not at full precision: numpy's float64 ``power`` /
``exp`` / ``log`` take other kernels on CPUs with AVX-512 than on AVX2 ones, and OpenBLAS picks its
kernel by CPU, so the last bit of ``p_click`` and ``value`` moves between machines (measured: at
most 4e-16 relative across OpenBLAS's Haswell, Sandybridge and Prescott kernels, which then agree
at 8 digits). Everything else, the text included, is compared exactly."""

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

# sha256 of plan / skipped / decisions as CSV (floats at FLOAT_DIGITS significant digits), 300 users,
# seed 11: the output of the planner before it was vectorised (pandas group-bys and string ops per
# step), which matched the vectorised one at full precision on the machine that pinned it.
PINNED = {
    "prior": ("6618f02a5a0219ea", "1c251b2486e997eb", "0ede9b059eaf9df7"),
    "mean-explore": ("62b4d0449d0a0163", "772d8eeaf0f6e6f3", "f78cc72899e764e4"),
    "fitted": ("3e5b434e455e66d7", "6cc5c2013708f692", "a900001f45a02620"),
    "calibrated": ("0fca08c565dcc121", "ac002e3f3d991389", "b32647cd685ee107"),
    "scorer": ("a12d1fa34823a402", "1fa540becdc8c7fb", "90103935208389f3"),
}
FLOAT_DIGITS = "%.8g"


def _digest(frame: pd.DataFrame) -> str:
    return hashlib.sha256(frame.to_csv(index=False, float_format=FLOAT_DIGITS).encode()).hexdigest()[:16]


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
