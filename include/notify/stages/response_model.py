"""The p(click) model of the response stage: prior, learners, calibration, evidence shrinkage.

``response`` builds the features and runs the stage; this module decides what a feature row is
worth:

- **Day-1 prior** (``prior_probability``): ``PRIOR_SCALE x (PRIOR_FLOOR + (1 - PRIOR_FLOOR) x
  affinity) x hour_rel x PRIOR_FATIGUE ** (k - 1) x PRIOR_REPEAT ** times_sent`` (a measured
  affinity is a noisy estimate of taste, so interest is never priced at zero; a later send of a
  day and the same campaign again are assumed less welcome until the logs say how much), so
  Notify ranks and times from day one.
- **Learners** (``train``): a logistic correction of the prior's logit by every feature
  (``prior_logistic``: it keeps the prior's shape where the logs are silent), scikit-learn's
  spline logistic regression and histogram gradient boosting are fit on 80 % of the logged deliveries (split by a hash of the notification id);
  each is **Platt-calibrated** on the held-out 20 % (a logistic map of its logit; the held-out
  log-loss is measured with the calibration cross-fitted on two halves of the holdout, so a
  learner is not credited for its own calibration). The prior is calibrated on all the logs by
  one scale per k (observed / predicted clicks, shrunk to the overall ratio; a k never logged
  takes the smallest scale seen): that keeps its shape where the logs are thin (a 2-parameter
  Platt map fit on yesterday's top choices flattens it and over-prices weak candidates), and it
  competes too; the best held-out log-loss decides.
  Training runs on one thread: histogram boosting spends 50x longer waiting for its OpenMP
  threads than computing on a shared 2-core machine (21 s vs 0.5 s for 3,000 rows, measured).
- **Evidence shrinkage** (empirical Bayes): a learner fit on yesterday's few thousand rows
  extrapolates for campaigns and k it never saw (a new campaign, a 4th send). Its prediction is
  blended with the calibrated prior by the evidence behind it, ``w = n / (n + SHRINK_ROWS)``, with
  ``n`` = the smallest of the logged deliveries of that campaign (not for ``prior_logistic``,
  which has no campaign term), of that k, of that repeat status and of that value of
  ``times_sent`` and of the ignored streak (``SUPPORT_FEATURES``: their range grows as the loop
  runs, and a learner extrapolating them priced day-7 repeats at a third of their clicks), so a
  region without logs is priced by the prior and the learner takes over as logs accumulate.
  ``SHRINK_ROWS`` = 800: with 200 the blend stayed near a prior that underprices the weaker
  candidates, and Notify withheld sends worth their cost (closed loop, default profile, seed 7:
  697 -> 740 clicks for exploration off).
- **Conservative value** (``lower``): the k-th send decision uses a lower quantile of p, treating
  the estimate as a Beta with ``n + SHRINK_ROWS`` rows behind it; ranking uses the mean.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass, field
from datetime import date
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

FEATURES = (
    "affinity", "similarity", "priority", "generic", "segment_new", "segment_lapsed", "recent_ctr",
    "ignored_streak", "hours_since_last", "times_sent", "days_since_same", "hour_share", "hour_rel", "k",
)  # fmt: skip
F = {name: i for i, name in enumerate(FEATURES)}
PRIOR_SCALE = 0.5
# A measured affinity is a noisy, shrunk estimate of taste: a user with none measured for a
# campaign's types still clicks now and then, so the prior never prices interest below this.
PRIOR_FLOOR = 0.1
PRIOR_FATIGUE = 0.8
PRIOR_REPEAT = 0.7
PRIOR_SCALE_PSEUDO_CLICKS = 5.0
MIN_TRAINING_ROWS = 500
MIN_POSITIVES = 20
SHRINK_ROWS = 800.0
SUPPORT_FEATURES = ("times_sent", "ignored_streak")
SUPPORT_CLIP = 4
EPS = 1e-6


def prior_probability(features: np.ndarray, hour_rel: np.ndarray | None = None) -> np.ndarray:
    """The day-1 prior: ``PRIOR_SCALE x affinity x hour_rel x PRIOR_FATIGUE ** (k - 1) x PRIOR_REPEAT ** times_sent``.

    With ``hour_rel`` ((..., h)): the prior of each row of ``features`` at each of those hours
    (..., h), the same values as rows with that ``hour_rel`` each, without building them."""
    f = np.asarray(features, dtype=float)
    k = np.maximum(f[..., F["k"]], 1)
    interest = PRIOR_FLOOR + (1 - PRIOR_FLOOR) * f[..., F["affinity"]]
    repeat = PRIOR_REPEAT ** np.maximum(f[..., F["times_sent"]], 0)
    if hour_rel is None:
        p = PRIOR_SCALE * interest * f[..., F["hour_rel"]] * PRIOR_FATIGUE ** (k - 1)
        return np.clip(p * repeat, EPS, 1 - EPS)
    # The same products in the same order, in place on one (..., h) array.
    p = (PRIOR_SCALE * interest)[..., None] * hour_rel
    p *= (PRIOR_FATIGUE ** (k - 1))[..., None]
    p *= repeat[..., None]
    return np.clip(p, EPS, 1 - EPS, out=p)


def fit_prior_scales(prior: np.ndarray, k: np.ndarray, y: np.ndarray) -> dict[int, float]:
    """Per k the observed / predicted clicks of the prior, shrunk to the overall ratio by
    ``PRIOR_SCALE_PSEUDO_CLICKS`` expected clicks."""
    overall = (y.sum() + 1.0) / (prior.sum() + 1.0)
    scales = {}
    for value in np.unique(k.astype(int)):
        rows = k.astype(int) == value
        pseudo = PRIOR_SCALE_PSEUDO_CLICKS
        scales[int(value)] = float((y[rows].sum() + pseudo) / (prior[rows].sum() + pseudo / overall))
    return scales


def scaled_prior(
    features: np.ndarray, scales: dict[int, float], hour_rel: np.ndarray | None = None, prior: np.ndarray | None = None
) -> np.ndarray:
    """The prior times its learned scale of each row's k (the smallest scale for a k never logged);
    ``hour_rel`` as in ``prior_probability``; ``prior``: ``prior_probability(features)`` when the
    caller has it already."""
    fresh = prior is None
    prior = prior_probability(features, hour_rel) if prior is None else prior
    if not scales:
        return prior
    k = np.asarray(features, dtype=float)[..., F["k"]].astype(int)
    table = np.full(max(max(scales), int(k.max(initial=1))) + 2, min(scales.values()))
    for value, scale in scales.items():
        table[value] = scale
    factor = table[np.clip(k, 0, len(table) - 1)]
    if hour_rel is None or not fresh:
        return np.clip(prior * (factor if hour_rel is None else factor[..., None]), EPS, 1 - EPS)
    prior *= factor[..., None]  # our own temporary
    return np.clip(prior, EPS, 1 - EPS, out=prior)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def _platt(a: float, b: float, p: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(a + b * _logit(p))))


def fit_platt(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` of ``sigmoid(a + b x logit(p))`` by (lightly regularised) maximum likelihood."""
    from sklearn.linear_model import LogisticRegression

    if len(set(np.asarray(y).tolist())) < 2:
        return 0.0, 1.0
    fit = LogisticRegression(C=100.0, max_iter=200).fit(_logit(p).reshape(-1, 1), y)
    return float(fit.intercept_[0]), float(fit.coef_[0, 0])


@dataclass
class ResponseModel:
    """A fitted (or prior) p(click) model with its version, calibration, evidence and metrics."""

    version: str
    kind: str  # "prior" | "prior_calibrated" | "prior_logistic" | "logistic" | "hist_gbt"
    estimator: Any = None
    metrics: dict[str, Any] = field(default_factory=dict)
    costs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    calibration: tuple[float, float] = (0.0, 1.0)  # Platt map of the learner
    prior_scales: dict[int, float] = field(default_factory=dict)  # the prior's learned scale per k
    campaign_rows: dict[str, int] = field(default_factory=dict)  # logged deliveries per campaign
    k_rows: dict[int, int] = field(default_factory=dict)  # logged deliveries per k
    repeat_rows: tuple[int, int] = (0, 0)  # logged first sends of a campaign, logged repeats
    # Logged rows per value of the features whose range grows as the loop runs (times this campaign
    # was sent, ignored streak; clipped at SUPPORT_CLIP): a value never logged is priced by the prior.
    support: dict[str, dict[int, int]] = field(default_factory=dict)

    def evidence(self, features: np.ndarray, campaigns: np.ndarray | None) -> np.ndarray:
        """Logged rows behind a prediction: min(rows of its campaign, of its k, of its repeat status)."""
        f = np.asarray(features, dtype=float)
        if self.estimator is None and self.kind == "prior":
            return np.zeros(f.shape[:-1])
        k = f[..., F["k"]].astype(int)
        table = np.zeros(max([*self.k_rows, 0]) + 2)
        for value, rows in self.k_rows.items():
            table[value] = rows
        by_k = table[np.clip(k, 0, len(table) - 1)]
        by_k = np.minimum(by_k, np.where(f[..., F["times_sent"]] > 0, self.repeat_rows[1], self.repeat_rows[0]))
        for name, counts in getattr(self, "support", {}).items():
            values = np.zeros(SUPPORT_CLIP + 1)
            for value, rows in counts.items():
                values[value] = rows
            by_k = np.minimum(by_k, values[np.clip(f[..., F[name]], 0, SUPPORT_CLIP).astype(int)])
        if campaigns is None or self.kind == "prior_logistic":
            # The prior-anchored learner has no campaign term: a campaign it never saw is priced
            # by the same corrections of the prior, so only k and repeat status bound its evidence.
            return by_k
        per = pd.Series(self.campaign_rows, dtype=float)
        names = np.asarray(campaigns, dtype=object).astype(str)
        by_campaign = per.reindex(names).fillna(0.0).to_numpy().reshape(names.shape + (1,) * (k.ndim - names.ndim))
        return np.minimum(by_k, by_campaign)

    def predict(self, features: np.ndarray, campaigns: np.ndarray | None = None) -> np.ndarray:
        """p(click) for feature rows of any leading shape (..., len(FEATURES)); ``campaigns`` (the
        leading axis' campaign ids) lets the evidence of each campaign decide how far the learner is trusted."""
        return self.estimate(features, campaigns)[0]

    def estimate(
        self, features: np.ndarray, campaigns: np.ndarray | None = None, scratch: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(p, n)``: the shrunk, calibrated p(click) and the logged rows behind it.

        ``scratch``: an (m, F + 1) array whose first F columns are ``features`` (as m rows), which
        the learner may overwrite (its inputs built there rather than in a copy)."""
        f = np.asarray(features, dtype=float)
        prior = prior_probability(f)
        if f.size == 0:
            return prior, np.zeros(prior.shape)
        calibrated_prior = scaled_prior(f, self.prior_scales, prior=prior) if self.prior_scales else prior
        n = self.evidence(f, campaigns)
        if self.estimator is None:
            return calibrated_prior, n
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # see the module docstring: OpenMP waits dominate on a shared machine
            raw = _learner_p(self.estimator, f.reshape(-1, len(FEATURES)), prior.reshape(-1), scratch)
        learned = _platt(*self.calibration, raw.reshape(f.shape[:-1]))
        weight = n / (n + SHRINK_ROWS)
        return weight * learned + (1 - weight) * calibrated_prior, n

    def estimate_hours(
        self, features: np.ndarray, hour_rel: np.ndarray, campaigns: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``estimate`` of each candidate row of ``features`` (n, F) at each hour of ``hour_rel``
        (n, h), for a model without a learner (the prior is element-wise and its evidence does not
        depend on the hour): ``p`` (n, h) and ``n`` (n, 1), the same values as ``estimate`` of the
        (n x h) feature rows, without building them."""
        if self.estimator is not None:
            raise ValueError(f"{self.version} has a learner: price its feature rows with estimate")
        f = np.asarray(features, dtype=float)
        p = scaled_prior(f, self.prior_scales, hour_rel) if self.prior_scales else prior_probability(f, hour_rel)
        if f.size == 0:
            return p, np.zeros((len(p), 1))
        return p, self.evidence(f, campaigns)[:, None]

    def lower(self, p: np.ndarray, n: np.ndarray, quantile: float) -> np.ndarray:
        """The ``quantile`` (e.g. 0.2) of p as a Beta with ``n + SHRINK_ROWS`` rows (normal approximation)."""
        if quantile >= 0.5:
            return p
        z = -NormalDist().inv_cdf(quantile)
        if not (isinstance(p, np.ndarray) and p.dtype == np.float64 and p.ndim):
            return np.maximum(p - z * np.sqrt(p * (1 - p) / (n + SHRINK_ROWS + 1)), 0.0)
        # The same: p - z x sqrt(p (1 - p) / (n + SHRINK_ROWS + 1)), floored at 0, on one temporary.
        spread = 1 - p
        spread *= p
        spread /= n + SHRINK_ROWS + 1
        np.sqrt(spread, out=spread)
        spread *= z
        np.subtract(p, spread, out=spread)
        return np.maximum(spread, 0.0, out=spread)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        pickle.dump(self, buffer, protocol=pickle.HIGHEST_PROTOCOL)
        return buffer.getvalue()

    @staticmethod
    def from_bytes(data: bytes) -> ResponseModel:
        model = pickle.loads(data)  # noqa: S301 - our own artefact from our own lake
        if not isinstance(model, ResponseModel):
            raise TypeError(f"not a ResponseModel: {type(model)}")
        return model


def prior_model(day: date | None = None, costs: np.ndarray | None = None) -> ResponseModel:
    """The documented day-1 prior as a model (no estimator, no calibration)."""
    return ResponseModel(f"response-prior-{day or 'none'}", "prior", None, {"reason": "no logs yet"},
                         np.zeros(0) if costs is None else costs)  # fmt: skip


def with_prior_logit(x: np.ndarray, prior: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """The features plus the day-1 prior's logit (the ``prior_logistic`` learner's inputs);
    ``prior``: ``prior_probability(x)`` when the caller has it already; ``out``: an (m, F + 1)
    array whose first F columns already are ``x`` (only the logit column is written)."""
    x = np.asarray(x, dtype=float)
    if out is None:
        out = np.empty((len(x), x.shape[1] + 1))  # what np.column_stack builds, without its temporaries
        out[:, :-1] = x
    out[:, -1] = _logit(prior_probability(x) if prior is None else prior)
    return out


def _learner_p(estimator: Any, x: np.ndarray, prior: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
    """``estimator.predict_proba(x)[:, 1]``; the prior-anchored pipeline (its first step
    ``with_prior_logit``) gets its inputs from ``prior`` (``prior_probability(x)``, which the model
    has computed already), built in ``scratch`` when given (``estimate``), and runs its remaining
    steps: the same arrays through the same steps."""
    steps = getattr(estimator, "steps", None)
    first = steps[0][1] if steps else None
    if getattr(first, "func", None) is with_prior_logit and not getattr(first, "kw_args", None) and len(steps) > 1:
        rest = [step for _, step in steps[1:]]
        if [type(step).__name__ for step in rest] == ["StandardScaler", "LogisticRegression"] and _binary(rest[1]):
            return _scaled_logistic(rest[0], rest[1], with_prior_logit(x, prior, scratch))
        return estimator[1:].predict_proba(with_prior_logit(x, prior, scratch))[:, 1]
    return estimator.predict_proba(np.ascontiguousarray(x))[:, 1]  # x may be a view of scratch: its own rows


def _binary(learner: Any) -> bool:
    return len(getattr(learner, "classes_", ())) == 2 and np.ndim(learner.coef_) == 2 and learner.coef_.shape[0] == 1


def _scaled_logistic(scaler: Any, learner: Any, z: np.ndarray) -> np.ndarray:
    """``make_pipeline(scaler, learner).predict_proba(z)[:, 1]`` (scikit-learn 1.9's
    ``StandardScaler.transform`` and binary ``LogisticRegression`` ``decision_function`` + expit,
    the same operations in the same order) on ``z``, our own array, scaled in place: without the
    scaler's copy and the validation passes over millions of cells.
    ``test_planning_value_pinned``'s fitted case holds it to the pipeline's bytes."""
    from scipy.special import expit

    if scaler.with_mean:
        z -= scaler.mean_.astype(z.dtype)
    if scaler.with_std:
        z /= scaler.scale_.astype(z.dtype)
    scores = z @ learner.coef_.T + learner.intercept_
    return expit(scores.reshape(-1))


def _learners(seed: int) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, SplineTransformer, StandardScaler

    return {
        # A linear correction of the prior's logit by every feature: it keeps the prior's shape
        # where the logs say nothing (a campaign or hour never sent) and learns its errors where they do.
        "prior_logistic": make_pipeline(
            FunctionTransformer(with_prior_logit), StandardScaler(), LogisticRegression(C=0.5, max_iter=500)
        ),
        "logistic": make_pipeline(
            SplineTransformer(n_knots=4, degree=2), StandardScaler(), LogisticRegression(C=0.5, max_iter=500)
        ),
        "hist_gbt": HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.06, max_leaf_nodes=15, min_samples_leaf=40, l2_regularization=1.0,
            early_stopping=False, random_state=seed,
        ),
    }  # fmt: skip


def _hash_bucket(ids: pd.Series, buckets: int) -> np.ndarray:
    return pd.util.hash_pandas_object(ids.astype(str), index=False).to_numpy() % buckets


def train(frame: pd.DataFrame, day: date, seed: int = 7, costs: np.ndarray | None = None) -> ResponseModel:
    """Fit p(click) on ``training_frame`` rows (FEATURES + ``clicked`` + ``notification_id`` [+ ``campaign_id``]).

    The prior (uncalibrated) when there are too few rows or clicks; otherwise the calibrated
    learner or calibrated prior of the best held-out log-loss. Deterministic for the same frame and seed.
    """
    from sklearn.metrics import log_loss, roc_auc_score
    from threadpoolctl import threadpool_limits

    costs = np.zeros(0) if costs is None else costs
    rows, positives = len(frame), int(frame["clicked"].sum()) if len(frame) else 0
    if rows < MIN_TRAINING_ROWS or positives < MIN_POSITIVES:
        model = prior_model(day, costs)
        model.metrics = {"rows": rows, "positives": positives, "chosen": "prior", "reason": "too few logs"}
        return model
    frame = frame.sort_values("notification_id", kind="stable").reset_index(drop=True)
    x = frame.loc[:, list(FEATURES)].to_numpy(dtype=float)
    y = frame["clicked"].to_numpy(dtype=int)
    bucket = _hash_bucket(frame["notification_id"], 10)
    held = bucket < 2  # 20 %, stable for the same logs; its two halves cross-fit the calibration
    half = bucket[held] == 0
    yh = y[held]
    scores: dict[str, dict[str, float]] = {}
    calibrations: dict[str, tuple[float, float]] = {}

    def measure(name: str, raw_held: np.ndarray) -> None:
        crossed = np.empty(len(raw_held))
        for part in (half, ~half):
            crossed[part] = _platt(*fit_platt(raw_held[~part], yh[~part]), raw_held[part])
        p = np.clip(crossed, EPS, 1 - EPS)
        auc = float(roc_auc_score(yh, p)) if len(set(yh)) == 2 else float("nan")
        scores[name] = {"log_loss": round(float(log_loss(yh, p, labels=[0, 1])), 5), "auc": round(auc, 4),
                        "raw_log_loss": round(float(log_loss(yh, np.clip(raw_held, EPS, 1 - EPS), labels=[0, 1])), 5)}  # fmt: skip
        calibrations[name] = fit_platt(raw_held, yh)

    prior_scales = fit_prior_scales(prior_probability(x), x[:, F["k"]], y)
    measure(
        "prior_calibrated",
        scaled_prior(x[held], fit_prior_scales(prior_probability(x[~held]), x[~held, F["k"]], y[~held])),
    )
    estimators: dict[str, Any] = {}
    with threadpool_limits(1):
        for name, learner in _learners(seed).items():
            estimators[name] = learner.fit(x[~held], y[~held])
            measure(name, learner.predict_proba(x[held])[:, 1])
    chosen = min(scores, key=lambda name: scores[name]["log_loss"])
    campaign_rows = (
        frame["campaign_id"].astype(str).value_counts().astype(int).to_dict() if "campaign_id" in frame else {}
    )
    k_rows = {int(key): int(v) for key, v in pd.Series(x[:, F["k"]].astype(int)).value_counts().items()}
    repeats = int((x[:, F["times_sent"]] > 0).sum())
    support = {
        name: {int(v): int(c) for v, c in pd.Series(np.clip(x[:, F[name]], 0, SUPPORT_CLIP).astype(int)).value_counts().items()}
        for name in SUPPORT_FEATURES
    }  # fmt: skip
    metrics = {"rows": rows, "positives": positives, "holdout_rows": int(held.sum()), "candidates": scores,
               "chosen": chosen, "features": list(FEATURES), "shrink_rows": SHRINK_ROWS,
               "calibration": calibrations[chosen], "prior_scales": prior_scales}  # fmt: skip
    digest = hashlib.blake2b(pd.util.hash_pandas_object(frame["notification_id"], index=False).to_numpy().tobytes(),
                             digest_size=4).hexdigest()  # fmt: skip
    estimator = None if chosen == "prior_calibrated" else estimators[chosen]
    return ResponseModel(f"response-{chosen}-{day}-{digest}", chosen, estimator, metrics, costs,
                         calibrations[chosen], prior_scales, campaign_rows, k_rows, (rows - repeats, repeats), support)  # fmt: skip
