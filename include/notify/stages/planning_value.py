"""The planner's decision core: rank and place by expected value, explore, log propensities.

For every user, step ``k = 1, 2, ...`` up to the cap (an upper bound, never a target):

- every remaining candidate campaign is scored at every free, allowed local hour of the day by
  the response model: ``value = p(click | user, campaign, hour, k) x weight`` where ``weight =
  1 + PRIORITY_WEIGHT x (priority - 3)`` (priority is a business weight on the expected clicks,
  never a sort key above relevance);
- the greedy choice is the (campaign, hour) of the largest value; the k-th notification is sent
  only when that value exceeds the cost of one more interruption (``costs[k-1]``: the configured
  base plus the learned opt-out risk, ``response.interruption_costs``), otherwise the user's day
  stops there and the remaining candidates are skipped as ``below_interruption_cost``;
- with probability ``explore_share`` (a hash of user, day, step and the policy seed, so a re-plan
  gives the same draws) the step explores instead: a campaign drawn uniformly from the user's
  *arms* (the candidates with a free slot whose expected value beats this step's cost; the greedy
  one always is), at its own best hour. Exploring below the cost paid one interruption for
  nothing (uniform over every candidate cost Notify ~6 % of its clicks against exploration off,
  closed loop, default profile, seed 7). Every constraint still holds because only free, allowed
  slots are ever scored. The propensity of the chosen campaign is ``(1 - e) x [chosen is greedy]
  + e / arms`` and lies in (0, 1].

Every decision records the policy and model versions, its propensity, whether it explored, the
features it was decided on and the values of all the candidates it was chosen from
(``candidate_scores``: each one's p(click) at its best free hour, ``"C101:0.0831|C005:0.02"``),
so ``analyst.evaluate`` can estimate other
policies from the logs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from functools import cache, cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from include.notify.rules import HOURS
from include.notify.stages.response import FEATURES, CandidateTable, F, ResponseModel

PRIORITY_WEIGHT = 0.1
POLICY_NAME = "ev-greedy"


def business_weight(priority: np.ndarray) -> np.ndarray:
    """``1 + PRIORITY_WEIGHT x (priority - 3)``: priority 5 is worth 1.2 clicks per click, 1 is 0.8."""
    return 1.0 + PRIORITY_WEIGHT * (np.clip(np.asarray(priority, dtype=float), 1, 5) - 3)


# A scorer maps (candidate rows, their features at all 24 hours as the k-th send) to p(click) (n, 24).
Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class ResponseContext:
    """What the value-based planner decides with: the model, the candidates' features, the policy."""

    model: ResponseModel
    table: CandidateTable  # aligned with the recommendation rows given to build_plan
    engagement: np.ndarray  # (recommendation rows, 24) the user's local-hour engagement
    costs: np.ndarray  # cost of the k-th send, k = 1..len
    explore_share: float = 0.1
    seed: int = 7
    scorer: Scorer | None = None  # replaces model.predict (the benchmark's oracle plugs truth in here)
    policy: str = POLICY_NAME
    send_quantile: float = 0.5  # the send decision uses this lower quantile of p (0.5 = the mean)
    version_note: str = field(default="")

    @property
    def policy_version(self) -> str:
        return f"{self.policy}/e={self.explore_share:g}/cost={self.cost(1):.3f}/q={self.send_quantile:g}{self.version_note}"

    def cost(self, k: int) -> float:
        if len(self.costs) == 0:
            return 0.0
        return float(self.costs[min(k, len(self.costs)) - 1])

    def predict(
        self, rows: np.ndarray, k: np.ndarray, cells: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """p(click) (n, 24), its conservative lower quantile (n, 24) and the features (n, 24, F) of
        candidate ``rows`` at every hour as send ``k``. ``cells`` ((n, 24) bool): only these
        (candidate, hour) cells are priced (the model's cost is per cell; the others are 0)."""
        hours = np.tile(np.arange(HOURS), (len(rows), 1))
        table: CandidateTable = self.table.take(rows)
        features = table.at(hours, k, self.engagement[rows])
        if self.scorer is not None:
            p = self.scorer(rows, features)
            return p, p, features
        if cells is None:
            p, n = self.model.estimate(features, table.campaign_ids)
            return p, self.model.lower(p, n, self.send_quantile), features
        row, hour = np.nonzero(cells)
        campaigns = None if table.campaign_ids is None else table.campaign_ids[row]
        at, n_at = self.model.estimate(features[row, hour][:, None, :], campaigns)
        p, low = np.zeros(cells.shape), np.zeros(cells.shape)
        p[row, hour] = at[:, 0]
        low[row, hour] = self.model.lower(at, n_at, self.send_quantile)[:, 0]
        return p, low, features

    @cached_property
    def engagement_peak(self) -> np.ndarray:
        """Per candidate row its engagement's peak hour share, floored at 1e-9 (``hour_rel``'s divisor)."""
        return np.maximum(self.engagement.max(axis=1), 1e-9) if len(self.engagement) else np.zeros(0)

    def price(self, rows: np.ndarray, k: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``predict``'s p (n, 24) with only the open ``cells`` priced (a learner's features built per
        cell, ``CandidateTable.at_cells``; the prior's per candidate, broadcast over its hours) and
        the evidence behind each (n, 1) or (n, 24), for ``conservative`` (None: a scorer, p is final)."""
        if self.scorer is not None:
            return self.predict(rows, k)[0], None
        campaign_ids = self.table.campaign_ids
        if self.model.estimator is None:
            # The prior is element-wise in the hour: each candidate's features once, its hours
            # broadcast (the closed cells are priced too; the planner only reads the open ones).
            features = self.table.static[rows]
            features[:, F["k"]] = k
            hour_rel = self.engagement[rows]
            hour_rel /= self.engagement_peak[rows][:, None]
            return self.model.estimate_hours(features, hour_rel, None if campaign_ids is None else campaign_ids[rows])
        # A learner sees every open cell in one batch (its BLAS products round differently with
        # the batch's shape, so blocks would change the last bits).
        row, hour = np.nonzero(cells)
        cand = rows[row]
        # One column to spare: the prior-anchored learner's logit column goes there (no copy of the cells).
        cells_f = self.table.at_cells(cand, hour, k[row], self.engagement, self.engagement_peak, spare=1)
        at, n_at = self.model.estimate(cells_f[:, None, :-1], None if campaign_ids is None else campaign_ids[cand],
                                       scratch=cells_f)  # fmt: skip
        p, n = np.zeros(cells.shape), np.zeros(cells.shape)
        p[row, hour] = at[:, 0]
        n[row, hour] = n_at[:, 0]
        return p, n

    def conservative(self, p: np.ndarray, n: np.ndarray | None, at: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """The lower quantile the send decision uses of ``p`` (the prices at cells ``at`` = (rows,
        hours) of ``price``'s grid) with ``n`` that grid's evidence; only for the cells it is asked for."""
        if n is None:
            return p
        return self.model.lower(p, n[at[0], 0] if n.shape[1] == 1 else n[at], self.send_quantile)

    def features_at(self, rows: np.ndarray, hours: np.ndarray, k: np.ndarray) -> np.ndarray:
        """The features (m, F) candidate ``rows`` were decided on: each at its hour as send ``k``."""
        return self.table.at_cells(rows, hours, k, self.engagement, self.engagement_peak)

    def costs_of(self, k: np.ndarray) -> np.ndarray:
        """``cost`` of many k at once."""
        if len(self.costs) == 0:
            return np.zeros(len(k))
        return self.costs[np.minimum(k, len(self.costs)) - 1].astype(float)


def _draws(keys: pd.Series, salt: str) -> np.ndarray:
    hashed = pd.util.hash_pandas_object(keys.astype(str) + salt, index=False).to_numpy()
    return (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass
class ValueDecisions:
    """Per recommendation row chosen: hour, step k, p, value, propensity; the decision log; skip details."""

    chosen_hour: np.ndarray  # per position in ``rows`` (-1 = not placed)
    why_not: np.ndarray  # skip reason name per position ("" when placed)
    log: pd.DataFrame  # one row per placed item
    detail: np.ndarray  # per position: human-readable why (placed or withheld)

    def as_codes(self, reasons: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
        """``(chosen_hour, skip reason codes into reasons, detail, log)`` for ``planning._place``."""
        codes = pd.Index(reasons).get_indexer(pd.Series(self.why_not).replace("", reasons[0]))
        return self.chosen_hour, codes, self.detail, self.log


# The decision log's columns after the features (one row per placed send): a day with nothing
# placed (a backfilled day already over, every candidate withheld) still has them all.
LOG_FIELDS = (
    "local_hour", "p_click", "value", "cost", "propensity", "explored",
    "greedy_campaign", "greedy_value", "greedy_low", "candidate_scores",
)  # fmt: skip


def place_by_value(
    context: ResponseContext,
    rows: np.ndarray,
    group: np.ndarray,
    user_ids: np.ndarray,
    campaign_ids: np.ndarray,
    priority: np.ndarray,
    day: date,
    allowed: np.ndarray,
    free: np.ndarray,
    used: np.ndarray,
    cap: np.ndarray,
    slot_epoch: np.ndarray,
    gap_seconds: int,
) -> ValueDecisions:
    """Greedy-by-value placement with exploration, vectorised over users (a loop over steps only).

    ``rows``: candidate recommendation rows (indices into the context's arrays); ``group``: each
    row's local user index into ``allowed`` / ``free`` / ``used`` / ``cap`` / ``slot_epoch`` (users, 24);
    ``user_ids`` per local user; ``campaign_ids`` / ``priority`` per position of ``rows``.
    ``free`` and ``used`` are updated in place.
    """
    n = len(rows)
    weight = business_weight(priority)
    remaining = np.ones(n, dtype=bool)
    chosen_hour = np.full(n, -1, dtype=np.int64)
    why_not = np.full(n, "", dtype=object)
    detail = np.full(n, "", dtype=object)
    stopped = np.zeros(len(user_ids), dtype=bool)
    logs: list[dict[str, np.ndarray]] = []
    max_steps = int(cap.max()) if len(cap) else 0
    campaign_text = _CodedText(campaign_ids)  # the few campaigns' texts made once, taken per step
    for _ in range(max_steps):
        live_user = ~stopped & (used < cap)
        sel = np.flatnonzero(remaining & live_user[group])
        if len(sel) == 0:
            break
        g = group[sel]  # non-decreasing: the rows come grouped by user
        k = used[g] + 1
        open_cells = free[g] & allowed[g]
        p, evidence = context.price(rows[sel], k, open_cells)
        value = p * weight[sel, None]
        np.copyto(value, -np.inf, where=~open_cells)
        best_hour = np.argmax(value, axis=1)
        every = np.arange(len(sel))
        best_value = value[every, best_hour]
        best_p = p[every, best_hour]
        best_low = context.conservative(best_p, evidence, (every, best_hour)) * weight[sel]
        del p, evidence, value
        valid = np.isfinite(best_value)
        # No free slot left for a candidate: it can never be placed today.
        why_not[sel[~valid]] = "no_free_slot"
        remaining[sel[~valid]] = False
        sel, g, best_hour, best_value, best_p, best_low = (
            a[valid] for a in (sel, g, best_hour, best_value, best_p, best_low)
        )
        if len(sel) == 0:
            break
        # Per user (a run of g) the greedy candidate: the largest value, the first of equals.
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        segment = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(g)]))
        top = np.maximum.reduceat(best_value, starts)
        greedy = np.minimum.reduceat(np.where(best_value == top[segment], np.arange(len(g)), len(g)), starts)
        users_here = g[starts]
        step_k = used[users_here] + 1
        cost = context.costs_of(step_k)
        # Rank by the expected value, send on the conservative one (a lower quantile of p).
        send = best_low[greedy] > cost
        # Users whose best candidate is not worth another interruption stop for the day.
        stopped[users_here[~send]] = True
        quitting = ~send[segment]
        if quitting.any():
            q = ~send
            note = _text(
                "withheld: best remaining ", campaign_text.at(sel[greedy[q]]), " value ", _decimals(best_value[greedy[q]], 4),
                " (conservative ", _decimals(best_low[greedy[q]], 4), ") <= cost ", _decimals(cost[q], 4), " of a ",
                _ordinals(step_k[q]), " notification",
            )  # fmt: skip
            why_not[sel[quitting]] = "below_interruption_cost"
            detail[sel[quitting]] = note[(np.cumsum(q) - 1)[segment[quitting]]]
            remaining[sel[quitting]] = False
        users_here, greedy, step_k, cost = (a[send] for a in (users_here, greedy, step_k, cost))
        greedy_low = best_low[greedy]
        if len(users_here) == 0:
            continue
        keys = pd.Series(_text(user_ids[users_here], f"#{day.isoformat()}#{int(context.seed)}#", _integers(step_k)))
        # Arms worth exploring: the user's candidates whose expected value beats this step's cost
        # (the greedy one always does: its conservative value does); a candidate the model prices
        # below one interruption is not sent to learn about it.
        at = np.where(send[segment], (np.cumsum(send) - 1)[segment], -1)  # -1: the user stopped at this step
        worth = (at >= 0) & (best_value > cost[np.maximum(at, 0)])
        arms = np.bincount(at[worth], minlength=len(users_here))
        explore = (_draws(keys, "#explore") < context.explore_share) & (arms > 1)
        pick = greedy.copy()
        if explore.any():
            # The explored campaign: uniform over the user's arms worth exploring this step.
            order = np.lexsort((~worth, g))  # per user (g sorted), the arms first
            first = np.searchsorted(g, users_here[explore], side="left")
            offset = np.minimum((_draws(keys[explore], "#arm") * arms[explore]).astype(np.int64), arms[explore] - 1)
            pick[explore] = order[first + offset]
        propensity = np.where(pick == greedy, 1 - context.explore_share, 0.0) + np.where(
            arms > 1, context.explore_share / np.maximum(arms, 1), context.explore_share
        )
        hour = best_hour[pick]
        position = sel[pick]
        chosen_hour[position] = hour
        remaining[position] = False
        used[users_here] += 1
        free[users_here] &= np.abs(slot_epoch[users_here] - slot_epoch[users_here, hour][:, None]) >= gap_seconds
        chosen_p = best_p[pick]
        chosen_value = best_value[pick]
        scored = at >= 0
        scores = _candidate_scores(
            at[scored], best_value[scored] / weight[sel[scored]], campaign_text.at(sel[scored]), len(users_here)
        )
        explored_text = np.full(len(pick), "", dtype=object)
        if explore.any():
            explored_text[explore] = _text(" (explored, propensity ", _decimals(propensity[explore], 3), ")")
        detail[position] = _text(
            "p(click) ", _decimals(chosen_p * 100, 2), "% x weight ", _decimals(weight[position], 2), " = value ",
            _decimals(chosen_value, 4), " (conservative ", _decimals(greedy_low, 4), ") > cost ", _decimals(cost, 4),
            " of a ", _ordinals(step_k), " notification", explored_text,
        )  # fmt: skip
        logs.append({
            "row": rows[position], "features": context.features_at(rows[position], hour, step_k), "local_hour": hour,
            "p_click": chosen_p, "value": chosen_value, "cost": cost, "propensity": propensity, "explored": explore,
            "greedy_campaign": campaign_ids[sel[greedy]], "greedy_value": best_value[greedy], "greedy_low": greedy_low,
            "candidate_scores": scores,
        })  # fmt: skip
    over = remaining & (why_not == "")
    why_not[over] = "over_cap"
    return ValueDecisions(chosen_hour, why_not, _decision_log(logs), detail)


def _decision_log(steps: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """The steps' placed sends as one frame: row, FEATURES, LOG_FIELDS."""
    if not steps:
        return pd.DataFrame(columns=["row", *FEATURES, *LOG_FIELDS])
    joined = {name: np.concatenate([step[name] for step in steps]) for name in steps[0]}
    log = pd.DataFrame(joined.pop("features"), columns=list(FEATURES))
    log.insert(0, "row", joined.pop("row"))
    for name in LOG_FIELDS:
        log[name] = joined[name]
    return log


def _rounded(values: np.ndarray, digits: int) -> list[str]:
    """``values`` rounded to ``digits`` as Python prints them (``pandas.Series.round(d).astype(str)``)."""
    return [repr(x) for x in np.round(np.asarray(values, dtype=float), digits).tolist()]


@cache
def _decimal_tables(digits: int) -> tuple[pa.Array, pa.Array]:
    """Texts of the whole part (``"12."``; ``""`` at 1000) and of the fraction's digits without
    trailing zeros (``"083"``, ``"0"``; at ``10**digits + i``: ``"ie-05"``, how Python prints i x 1e-5)."""
    whole = [f"{i}." for i in range(1000)] + [""]
    fraction = [f"{i:0{digits}d}".rstrip("0") or "0" for i in range(10**digits)] + [f"{i}e-05" for i in range(10)]
    return pa.array(whole, type=pa.string()), pa.array(fraction, type=pa.string())


def _decimals(values: np.ndarray, digits: int) -> pa.Array:
    """``_rounded`` by table lookups: ``np.round`` is ``rint(v x 10**d) / 10**d`` and the shortest text
    of that float is its decimal digits without trailing zeros (below 1e-4 Python writes ``ie-05``).
    Values outside [0, 1000) or not finite take ``_rounded``."""
    v = np.asarray(values, dtype=np.float64)
    scaled = np.rint(v * 10.0**digits)
    if digits > 5 or (~np.isfinite(scaled) | np.signbit(scaled) | (scaled >= 1000 * 10**digits)).any():
        return pa.array(_rounded(v, digits), type=pa.string())
    whole, fraction = np.divmod(scaled.astype(np.int64), 10**digits)
    tiny = (whole == 0) & (fraction > 0) & (fraction < 10 ** max(digits - 4, 0))  # e.g. 3e-05
    whole_text, fraction_text = _decimal_tables(digits)
    return pc.binary_join_element_wise(
        whole_text.take(pa.array(np.where(tiny, 1000, whole))),
        fraction_text.take(pa.array(np.where(tiny, 10**digits + fraction, fraction))),
        "",
    )


def _integers(values: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.int64)).cast(pa.string())


def _text(*parts: object) -> np.ndarray:
    """Element-wise concatenation (object array of str) of plain strings, Arrow string arrays and
    equally long arrays of strings, in one Arrow pass."""
    arrays = [part if isinstance(part, str | pa.Array) else _as_text(part) for part in parts]
    return pc.binary_join_element_wise(*arrays, "").to_numpy(zero_copy_only=False).astype(object, copy=False)


def _as_text(values: object) -> pa.Array:
    """An array of strings as Arrow; anything else (ids that are numbers, None) as ``str`` prints it."""
    try:
        text = pa.array(values, type=pa.string())
        if text.null_count == 0:
            return text
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    return pa.array(np.asarray(values, dtype=object).astype(str), type=pa.string())


@cache
def _ordinal_table() -> pa.Array:
    return pa.array([_ordinal(k) for k in range(1000)], type=pa.string())


def _ordinals(k: np.ndarray) -> pa.Array:
    k = np.asarray(k, dtype=np.int64)
    if len(k) and (k.min() < 0 or k.max() >= 1000):
        return pa.array([_ordinal(int(x)) for x in k], type=pa.string())
    return _ordinal_table().take(pa.array(k))


class _CodedText:
    """``_as_text`` of an array with few distinct values (campaign ids per candidate): each distinct
    value's text made once, any positions' texts taken from them (the same strings)."""

    def __init__(self, values: np.ndarray) -> None:
        codes, distinct = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=False)
        self.codes = codes
        self.text = _as_text(np.asarray(distinct, dtype=object))

    def at(self, positions: np.ndarray) -> pa.Array:
        return self.text.take(pa.array(self.codes[positions]))


def _candidate_scores(at: np.ndarray, values: np.ndarray, campaigns: np.ndarray | pa.Array, users: int) -> np.ndarray:
    """Per sending user (``at``: its index, non-decreasing): ``"campaign:value|..."`` over that
    user's valid candidates this step, in candidate order."""
    names = campaigns if isinstance(campaigns, pa.Array) else _as_text(campaigns)
    text = pc.binary_join_element_wise(names, ":", _decimals(values, 5), "")
    offsets = np.r_[0, np.cumsum(np.bincount(at, minlength=users))].astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), text)
    return pc.binary_join(lists, "|").to_numpy(zero_copy_only=False).astype(object, copy=False)


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def parse_scores(text: str) -> dict[str, float]:
    """``candidate_scores`` back into {campaign: p(click)}."""
    out: dict[str, float] = {}
    for part in str(text or "").split("|"):
        if ":" in part:
            name, value = part.rsplit(":", 1)
            out[name] = float(value)
    return out


def build_context(
    config: object,
    recommendations: pd.DataFrame,
    users: pd.DataFrame,
    campaigns: pd.DataFrame,
    model: ResponseModel,
    signals: object,
    seed: int = 7,
    scorer: Scorer | None = None,
) -> ResponseContext:
    """The response context for ``build_plan``, aligned with ``recommendations``' rows.

    ``users``: user_id and segment (features); ``campaigns``: the curated campaigns (priority,
    target_article_types); ``signals``: ``response.user_signals`` for the day.
    """
    from include.notify.stages.response import candidate_table, user_engagement

    recs = recommendations.reset_index(drop=True)
    segment = users.drop_duplicates("user_id", keep="last").set_index("user_id")
    # The candidates' users factorized once, for the segments and the candidate table.
    user_code, user_names = pd.factorize(recs["user_id"].to_numpy(dtype=object), use_na_sentinel=False)
    if "segment" in segment:  # looked up once per user, not per recommendation
        seg = segment["segment"].reindex(user_names).fillna("").to_numpy()[user_code]
    else:
        seg = np.full(len(recs), "")
    table = campaigns.assign(
        targets=campaigns.get("target_article_types", pd.Series("", index=campaigns.index)).fillna("").astype(str)
    ).assign(campaign_id=lambda c: c["campaign_id"].astype(str))
    similarity = pd.to_numeric(recs.get("similarity", pd.Series(0.0, index=recs.index)), errors="coerce").fillna(0.0)
    candidates = candidate_table(signals, recs["user_id"].to_numpy(), recs["campaign_id"].to_numpy(),
                                 table, similarity.to_numpy(), seg, (user_code, user_names))  # fmt: skip
    engagement = user_engagement(signals, candidates.user_row)
    costs = model.costs if len(model.costs) else np.full(max(int(config.daily_cap), 1), float(config.interruption_cost))
    return ResponseContext(model, candidates, engagement, np.asarray(costs, dtype=float),
                           float(config.explore_share), seed, scorer,
                           send_quantile=float(getattr(config, "send_quantile", 0.5)))  # fmt: skip


def candidate_breakdown(context: ResponseContext, campaign_ids: np.ndarray, k: int = 1) -> pd.DataFrame:
    """Per candidate row of ``context`` (analysts' explain): its best local hour by the model as the
    ``k``-th send of the day, p(click) there, the conservative p the send decision uses, the
    evidence behind it and the main terms (affinity, similarity, hour engagement, repeats, the
    day-1 prior's p and the priority weight)."""
    from include.notify.stages.response_model import SHRINK_ROWS, F, prior_probability

    rows = np.arange(len(context.table.user_row))
    if len(rows) == 0:
        return pd.DataFrame()
    p, p_low, features = context.predict(rows, np.full(len(rows), k))
    hour = np.argmax(p, axis=1)
    at = features[rows, hour]
    evidence = (
        context.model.evidence(at, context.table.campaign_ids) if context.scorer is None else np.full(len(rows), np.inf)
    )
    priority = at[:, F["priority"]]
    frame = pd.DataFrame(
        {
            "campaign_id": np.asarray(campaign_ids, dtype=object).astype(str),
            "best_hour": hour,
            "p_click": p[rows, hour],
            "p_conservative": p_low[rows, hour],
            "weight": business_weight(priority),
            "affinity": at[:, F["affinity"]],
            "similarity": at[:, F["similarity"]],
            "hour_rel": at[:, F["hour_rel"]],
            "times_sent": at[:, F["times_sent"]],
            "prior_p": prior_probability(at),
            "evidence_rows": evidence,
            "learner_weight": np.where(context.model.estimator is None, 0.0, evidence / (evidence + SHRINK_ROWS)),
        }
    )
    frame["value"] = frame["p_click"] * frame["weight"]
    return frame.sort_values("value", ascending=False, kind="stable").reset_index(drop=True)


def decision_fields(
    context: ResponseContext,
    log: pd.DataFrame,
    details: np.ndarray,
    picked: np.ndarray,
    hour_text: np.ndarray,
    minutes: np.ndarray,
    identity: dict[str, object],
) -> tuple[np.ndarray, dict[str, object], pd.DataFrame]:
    """For the placed rows ``picked`` (in plan order): the plan's reason text, its decision columns
    (policy / model version, p_click, propensity, candidate scores) and the decision log keyed by
    ``identity`` (notification_id, user_id, campaign_id, local_day, send_at)."""
    by_row = log.set_index("row").reindex(picked)
    reason = _text(
        "expected value: ", details, f" (model {context.model.version}); ", hour_text,
        " allowed hour by engagement, the best free hour by predicted clicks; minute :", minutes, " spreads the fleet",
    )  # fmt: skip
    versions = {"policy_version": context.policy_version, "model_version": context.model.version}
    columns = {
        **versions,
        "p_click": by_row["p_click"].to_numpy(dtype=float),
        "propensity": by_row["propensity"].to_numpy(dtype=float),
        "candidate_scores": by_row["candidate_scores"].to_numpy(dtype=object),
    }
    return reason, columns, by_row.reset_index().assign(**identity, **versions)
