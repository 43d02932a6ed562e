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

import numpy as np
import pandas as pd

from include.notify.rules import HOURS
from include.notify.stages.response import FEATURES, CandidateTable, ResponseModel

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
    logs: list[pd.DataFrame] = []
    max_steps = int(cap.max()) if len(cap) else 0
    for _ in range(max_steps):
        live_user = ~stopped & (used < cap)
        sel = np.flatnonzero(remaining & live_user[group])
        if len(sel) == 0:
            break
        g = group[sel]
        k = used[g] + 1
        open_cells = free[g] & allowed[g]
        p, p_low, features = context.predict(rows[sel], k, open_cells)
        value = np.where(open_cells, p * weight[sel, None], -np.inf)
        best_hour = np.argmax(value, axis=1)
        best_value = value[np.arange(len(sel)), best_hour]
        best_low = p_low[np.arange(len(sel)), best_hour] * weight[sel]
        valid = np.isfinite(best_value)
        # No free slot left for a candidate: it can never be placed today.
        why_not[sel[~valid]] = "no_free_slot"
        remaining[sel[~valid]] = False
        sel, g, k, p, features = sel[valid], g[valid], k[valid], p[valid], features[valid]
        best_hour, best_value, best_low = best_hour[valid], best_value[valid], best_low[valid]
        if len(sel) == 0:
            break
        frame = pd.DataFrame({"g": g, "v": best_value, "pos": np.arange(len(sel))})
        greedy_pos = frame.sort_values(["g", "v", "pos"], ascending=[True, False, True], kind="stable").drop_duplicates(
            "g"
        )
        users_here = greedy_pos["g"].to_numpy()
        greedy = greedy_pos["pos"].to_numpy()
        n_valid = frame.groupby("g").size().reindex(users_here).to_numpy()
        step_k = used[users_here] + 1
        cost = np.array([context.cost(int(x)) for x in step_k])
        # Rank by the expected value, send on the conservative one (a lower quantile of p).
        send = best_low[greedy] > cost
        # Users whose best candidate is not worth another interruption stop for the day.
        quit_users = users_here[~send]
        stopped[quit_users] = True
        quitting = np.isin(g, quit_users)
        names = campaign_ids[sel[greedy]]
        ordinal = np.array([_ordinal(int(x)) for x in step_k], dtype=object)
        note = pd.Series(
            "withheld: best remaining " + names.astype(str) + " value " + pd.Series(best_value[greedy]).round(4).astype(str).to_numpy()
            + " (conservative " + pd.Series(best_low[greedy]).round(4).astype(str).to_numpy() + ") <= cost " + pd.Series(cost).round(4).astype(str).to_numpy() + " of a " + ordinal + " notification",
            index=users_here,
        )  # fmt: skip
        why_not[sel[quitting]] = "below_interruption_cost"
        detail[sel[quitting]] = note.reindex(g[quitting]).to_numpy()
        remaining[sel[quitting]] = False
        users_here, greedy, n_valid, step_k, cost = (a[send] for a in (users_here, greedy, n_valid, step_k, cost))
        greedy_low = best_low[greedy]
        if len(users_here) == 0:
            continue
        keys = (
            pd.Series(user_ids[users_here]).astype(str)
            + f"#{day.isoformat()}#{int(context.seed)}#"
            + step_k.astype(str)
        )
        # Arms worth exploring: the user's candidates whose expected value beats this step's cost
        # (the greedy one always does: its conservative value does); a candidate the model prices
        # below one interruption is not sent to learn about it.
        at = pd.Index(users_here).get_indexer(g)  # -1: the user stopped at this step
        worth = (at >= 0) & (best_value > cost[np.maximum(at, 0)])
        arms = np.bincount(at[worth], minlength=len(users_here))
        explore = (_draws(keys, "#explore") < context.explore_share) & (arms > 1)
        pick = greedy.copy()
        if explore.any():
            # The explored campaign: uniform over the user's arms worth exploring this step.
            order = np.lexsort((~worth, g))  # per user (g sorted), the arms first
            starts = np.searchsorted(g, users_here[explore], side="left")
            offset = np.minimum((_draws(keys[explore], "#arm") * arms[explore]).astype(np.int64), arms[explore] - 1)
            pick[explore] = order[starts + offset]
        propensity = np.where(pick == greedy, 1 - context.explore_share, 0.0) + np.where(
            arms > 1, context.explore_share / np.maximum(arms, 1), context.explore_share
        )
        hour = best_hour[pick]
        position = sel[pick]
        chosen_hour[position] = hour
        remaining[position] = False
        used[users_here] += 1
        free[users_here] &= np.abs(slot_epoch[users_here] - slot_epoch[users_here, hour][:, None]) >= gap_seconds
        chosen_p = p[pick, hour]
        chosen_value = best_value[pick]
        scores = _candidate_scores(g, best_value / weight[sel], campaign_ids[sel], users_here)
        detail[position] = (
            "p(click) " + pd.Series(chosen_p * 100).round(2).astype(str).to_numpy() + "% x weight "
            + pd.Series(weight[position]).round(2).astype(str).to_numpy() + " = value "
            + pd.Series(chosen_value).round(4).astype(str).to_numpy() + " (conservative "
            + pd.Series(greedy_low).round(4).astype(str).to_numpy() + ") > cost "
            + pd.Series(cost).round(4).astype(str).to_numpy() + " of a " + np.array([_ordinal(int(x)) for x in step_k], dtype=object)
            + " notification" + np.where(explore, " (explored, propensity " + pd.Series(propensity).round(3).astype(str).to_numpy() + ")", "")
        )  # fmt: skip
        log = pd.DataFrame(features[pick, hour], columns=list(FEATURES))
        log.insert(0, "row", rows[position])
        log["local_hour"] = hour
        log["p_click"] = chosen_p
        log["value"] = chosen_value
        log["cost"] = cost
        log["propensity"] = propensity
        log["explored"] = explore
        log["greedy_campaign"] = campaign_ids[sel[greedy]]
        log["greedy_value"] = best_value[greedy]
        log["greedy_low"] = greedy_low
        log["candidate_scores"] = scores
        logs.append(log)
    over = remaining & (why_not == "")
    why_not[over] = "over_cap"
    placed_log = pd.concat(logs, ignore_index=True) if logs else pd.DataFrame(columns=["row", *FEATURES, *LOG_FIELDS])
    return ValueDecisions(chosen_hour, why_not, placed_log, detail)


def _candidate_scores(g: np.ndarray, values: np.ndarray, campaigns: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Per user of ``users``: ``"campaign:value|..."`` over that user's valid candidates this step."""
    text = pd.Series(campaigns.astype(str)) + ":" + pd.Series(np.round(values, 5)).astype(str)
    joined = text.groupby(g).agg("|".join)
    return joined.reindex(users).to_numpy(dtype=object)


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
    seg = (
        segment["segment"].reindex(recs["user_id"]).fillna("").to_numpy()
        if "segment" in segment
        else np.full(len(recs), "")
    )
    table = campaigns.assign(
        targets=campaigns.get("target_article_types", pd.Series("", index=campaigns.index)).fillna("").astype(str)
    ).assign(campaign_id=lambda c: c["campaign_id"].astype(str))
    similarity = pd.to_numeric(recs.get("similarity", pd.Series(0.0, index=recs.index)), errors="coerce").fillna(0.0)
    candidates = candidate_table(signals, recs["user_id"].to_numpy(), recs["campaign_id"].astype(str).to_numpy(),
                                 table, similarity.to_numpy(), seg)  # fmt: skip
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
    reason = (
        "expected value: " + details + " (model " + context.model.version + "); " + hour_text
        + " allowed hour by engagement, the best free hour by predicted clicks; minute :" + minutes
        + " spreads the fleet"
    )  # fmt: skip
    versions = {"policy_version": context.policy_version, "model_version": context.model.version}
    columns = {
        **versions,
        "p_click": by_row["p_click"].to_numpy(dtype=float),
        "propensity": by_row["propensity"].to_numpy(dtype=float),
        "candidate_scores": by_row["candidate_scores"].to_numpy(dtype=object),
    }
    return reason, columns, by_row.reset_index().assign(**identity, **versions)
