"""The learners' inference path: the prior-anchored pipeline priced from the prior the model has
already computed (and its scaler + logistic steps applied in place) must give the pipeline's own
``predict_proba`` bit for bit; every other learner goes through ``predict_proba`` unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from include.notify.stages.response_model import FEATURES, F, _learner_p, _learners, prior_probability


def _logs(rows: int = 1500, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((rows, len(FEATURES)))
    x[:, F["k"]] = rng.integers(1, 4, rows)
    x[:, F["times_sent"]] = rng.integers(0, 3, rows)
    y = (rng.random(rows) < 0.5 * prior_probability(x) + 0.05 * x[:, F["similarity"]]).astype(int)
    return x, y


@pytest.mark.parametrize("name", ["prior_logistic", "logistic"])
def test_the_learner_path_equals_predict_proba_bit_for_bit(name: str) -> None:
    x, y = _logs()
    estimator = _learners(7)[name].fit(x, y)
    cells, _ = _logs(20000, seed=4)
    expected = estimator.predict_proba(cells)[:, 1]
    got = _learner_p(estimator, cells, prior_probability(cells[:, None, :]).reshape(-1))
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    # As the planner calls it: the cells in the first columns of a scratch array one column wider.
    scratch = np.empty((len(cells), len(FEATURES) + 1))
    scratch[:, :-1] = cells
    view = scratch[:, :-1]
    np.testing.assert_array_equal(_learner_p(estimator, view, prior_probability(view), scratch), expected)


def test_a_changed_pipeline_is_not_taken_for_the_prior_anchored_one() -> None:
    from sklearn.preprocessing import MinMaxScaler

    x, y = _logs()
    estimator = _learners(7)["prior_logistic"]
    estimator.steps[1] = ("minmaxscaler", MinMaxScaler())
    estimator.fit(x, y)
    cells, _ = _logs(2000, seed=5)
    np.testing.assert_array_equal(
        _learner_p(estimator, cells, prior_probability(cells)), estimator.predict_proba(cells)[:, 1]
    )
