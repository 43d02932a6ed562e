"""Off-policy evaluation: what another policy would have earned, estimated from logged decisions.

Each logged decision is one planned-and-delivered notification of the value-based planner with
its propensity, whether it explored, the greedy campaign and value, the candidates' p(click)
(``candidate_scores``) and the outcome (``clicked``). A target policy is described by
``TargetPolicy``: exploration off (always the greedy campaign) and a cost of interruption; it
withholds a step whose greedy value is not above its cost (reward 0, known exactly). Estimators
of the target's total clicks, vectorised over decisions:

- **IPS**: ``sum w r`` with ``w = [a = target action] / propensity``;
- **SNIPS**: ``n_send x sum w r / sum w`` (self-normalised over the decisions the target sends);
- **DR**: ``sum q(x, target) + w (r - q(x, a))`` with ``q`` the logged p(click) of each candidate.

Intervals are percentile bootstrap (Poisson weights, one matrix product, ``resamples`` columns)
**over users**, not over decisions: a user's decisions of one week are not independent (the same
tastes, hours and tolerance decide all of them, and a send on day 1 changes day 4's repeats and
cooldowns), so each resample draws whole users with all their decisions (``user_id``; a log
without it falls back to decisions). ``low`` / ``high`` bound the target's *expected* clicks on
these users. A policy's simulated (or deployed) week is one draw around that expectation, so each
estimate also carries a **prediction interval** (``pred_low`` / ``pred_high``): the bootstrap
variance plus the outcome variance of the target's own sends, ``sum q (1 - q)`` over the
decisions it sends (``q`` its logged p(click)), normal approximation. The benchmark checks that
the simulated weekly clicks lie in the prediction interval.
A target with a *lower* cost than the logging policy would send where nothing was logged; those
decisions are not in the logs, so such a target is reported as unsupported rather than guessed.
The estimates as text (``notify evaluate``) are ``evaluate_text.format_report``.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from include.notify.stages.planning_value import parse_scores


@dataclass(frozen=True)
class TargetPolicy:
    """The policy to evaluate: greedy (no exploration) with a cost of interruption (None: the logged one)."""

    name: str = "greedy"
    cost: float | None = None


@dataclass
class Estimate:
    """One estimator's total clicks with its bootstrap interval."""

    estimator: str
    value: float
    low: float  # bootstrap interval (over users) of the expected clicks
    high: float
    pred_low: float = float("nan")  # prediction interval of one realised week's clicks
    pred_high: float = float("nan")

    def contains(self, x: float) -> bool:
        """Whether ``x`` lies in the bootstrap interval."""
        return self.low <= x <= self.high

    def predicts(self, x: float) -> bool:
        """Whether a realised value ``x`` lies in the prediction interval."""
        return self.pred_low <= x <= self.pred_high


def evaluate(
    log: pd.DataFrame, target: TargetPolicy, resamples: int = 500, seed: int = 0, level: float = 0.95
) -> dict[str, object]:
    """IPS, SNIPS and DR estimates of ``target``'s clicks over the decisions in ``log``.

    ``log`` columns: propensity, clicked, campaign_id, greedy_campaign, greedy_value, cost,
    candidate_scores (and ``greedy_low``, the conservative value the send was decided on, when logged). Returns the estimates, the logging policy's observed clicks and counts.
    """
    needed = {"propensity", "clicked", "campaign_id", "greedy_campaign", "greedy_value", "cost", "candidate_scores"}
    missing = needed - set(log.columns)
    if missing:
        raise ValueError(f"the decision log lacks {sorted(missing)}")
    n = len(log)
    propensity = log["propensity"].to_numpy(dtype=float)
    if n and not ((propensity > 0) & (propensity <= 1)).all():
        raise ValueError("propensities must lie in (0, 1]")
    reward = log["clicked"].to_numpy(dtype=float)
    logged_cost = log["cost"].to_numpy(dtype=float)
    cost = logged_cost if target.cost is None else np.full(n, target.cost)
    unsupported = int((cost < logged_cost - 1e-12).sum())
    # The step sends on the conservative value of the greedy campaign when it was logged (``greedy_low``).
    decided_on = log["greedy_low"] if "greedy_low" in log else log["greedy_value"]
    sends = decided_on.to_numpy(dtype=float) > cost
    match = (log["campaign_id"].astype(str).to_numpy() == log["greedy_campaign"].astype(str).to_numpy()) & sends
    w = np.where(match, 1.0 / np.maximum(propensity, 1e-12), 0.0)
    scores = [parse_scores(text) for text in log["candidate_scores"].astype(str)]
    q_logged = np.array([s.get(str(a), 0.0) for s, a in zip(scores, log["campaign_id"].astype(str), strict=True)])
    q_target = np.array([s.get(str(g), 0.0) for s, g in zip(scores, log["greedy_campaign"].astype(str), strict=True)])
    q_target = np.where(sends, q_target, 0.0)
    rng = np.random.default_rng(seed)
    cluster = log["user_id"].astype(str) if "user_id" in log else pd.Series(np.arange(n)).astype(str)
    codes, uniques = pd.factorize(cluster, sort=True)
    boot = rng.poisson(1.0, size=(len(uniques), resamples)).astype(float)[codes]
    # The outcome variance of one realised run of the target (its sends' clicks are Bernoulli(q)).
    outcome_var = float((q_target * (1 - q_target)).sum())
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    ips_terms = w * reward
    dr_terms = q_target + w * (reward - q_logged)

    def interval(point: float, samples: np.ndarray, name: str) -> Estimate:
        alpha = (1 - level) / 2
        low, high = np.quantile(samples, [alpha, 1 - alpha]) if n else (0.0, 0.0)
        spread = z * np.sqrt((float(np.var(samples)) if n else 0.0) + outcome_var)
        return Estimate(
            name, float(point), float(low), float(high), max(float(point - spread), 0.0), float(point + spread)
        )

    n_send = float(sends.sum())
    ips = interval(ips_terms.sum(), ips_terms @ boot, "IPS")
    weight_sum = np.maximum(w @ boot, 1e-12)
    boot_send = sends.astype(float) @ boot
    snips = interval(
        n_send * ips_terms.sum() / max(w.sum(), 1e-12), boot_send * (ips_terms @ boot) / weight_sum, "SNIPS"
    )
    dr = interval(dr_terms.sum(), dr_terms @ boot, "DR")
    return {
        "target": target,
        "decisions": n,
        "users": len(uniques),
        "target_sends": int(n_send),
        "unsupported_decisions": unsupported,
        "logged_clicks": float(reward.sum()),
        "estimates": [ips, snips, dr],
    }
