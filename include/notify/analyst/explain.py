"""The analysts' view: why does a user get what they get?

``explain_user`` reads only DynamoDB (``reads``: the user's features, their recommendation item
and the campaign definitions it names), with key lookups — never a scan — so it is instant on any
table size and shows exactly what the planner will read; ``explanation`` turns what was read into
the text without I/O. With ``with_model`` (``notify explain``) it also shows each candidate's
predicted p(click) and its main terms from the response model (``reads.response_candidates``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from include.notify.analyst import reads
from include.notify.config import NotifyConfig

if TYPE_CHECKING:
    from collections.abc import Mapping

    from include.notify.io.dynamo import Dynamo

# The weighted parts of a product's score, as scoring writes them (stages/products.py).
PRODUCT_PARTS = ("content", "collaborative", "popularity", "repurchase")
FEATURE_FIELDS = (
    "segment", "timezone", "days_since_signup", "total_orders", "total_spent", "avg_order_value",
    "last_purchase_date", "top_article_types", "top_master_categories", "recent_ctr", "ignored_streak", "opt_out",
)  # fmt: skip


def explain_user(config: NotifyConfig, dynamo: Dynamo, user_id: str, top: int = 10, with_model: bool = False) -> str:
    """A plain-text report: the user's features, ranked campaigns with score components and
    reasons, and ranked products with names and the parts of their score (content,
    collaborative, popularity, repurchase) when the recommendation carries them. Says clearly when
    the user or their recommendations are unknown instead of raising. ``with_model``: also each
    candidate's predicted p(click) and main terms from the response model (reads the lake)."""
    features = reads.user_features(dynamo, user_id)
    recs = reads.recommendations(dynamo, user_id)
    if recs is None:
        return explanation(user_id, features, recs, {}, top)
    campaigns = recs.get("campaigns") or []
    names = reads.campaign_names(dynamo, [c["campaign_id"] for c in campaigns[:top]])
    model_lines = None
    if with_model and campaigns and not recs.get("opt_out"):
        try:
            breakdown, version = reads.response_candidates(config, user_id, features, recs)
            model_lines = format_candidates(breakdown.head(top), version)
        except FileNotFoundError as error:
            model_lines = ["", f"Response model: not available ({error})"]
    return explanation(user_id, features, recs, names, top, model_lines)


def explanation(
    user_id: str,
    features: Mapping[str, Any] | None,
    recs: Mapping[str, Any] | None,
    names: Mapping[str, str],
    top: int = 10,
    model_lines: list[str] | None = None,
) -> str:
    """``explain_user``'s text from what it read: features and recommendation items (None when
    absent), campaign names, and the response model's lines (``format_candidates``) if asked for."""
    lines = [f"User {user_id}"]
    if features is None and recs is None:
        return (
            f"User {user_id}: no features and no recommendations (unknown user, or the nightly runs have not run yet)."
        )
    lines += ["", "Features:"]
    if features is None:
        lines.append("  (no features yet)")
    else:
        lines += [f"  {name:<22} {_format(features[name])}" for name in FEATURE_FIELDS if name in features]
        hours = features.get("engagement_by_hour")
        if isinstance(hours, list) and len(hours) == 24:
            peaks = sorted(range(24), key=lambda h: -float(hours[h]))[:3]
            lines.append(f"  {'peak local hours':<22} {', '.join(f'{h:02d}:00' for h in sorted(peaks))}")
    if recs is None:
        lines += ["", "Recommendations: none yet (notify_scoring has not run for this user)."]
        return "\n".join(lines)
    lines += ["", f"Recommendations for {recs.get('run_date')} (generated {recs.get('generated_at')}, "
              f"model {recs.get('model')}, version {recs.get('model_version')})"]  # fmt: skip
    campaigns = recs.get("campaigns") or []
    lines += ["", "Top campaigns:"]
    if recs.get("opt_out"):
        lines.append("  none: the user opted out of notifications")
    elif not campaigns:
        lines.append("  none: no sendable campaign is eligible for this user today")
    lines.append(f"  {'#':>2}  {'campaign':<10} {'name':<32} {'score':>6} {'sim':>6} {'prio':>4} {'resp':>6}")
    for c in campaigns[:top]:
        lines.append(
            f"  {c['rank']:>2}  {c['campaign_id']:<10} {names.get(c['campaign_id'], '?')[:32]:<32} "
            f"{float(c['score']):>6.3f} {float(c['similarity']):>6.3f} {int(c['priority']):>4} "
            f"{float(c['response_rate']):>6.1%}"
        )
        if c.get("reasons"):
            lines.append(f"      why: {'; '.join(c['reasons'])}")
    if model_lines:
        lines += model_lines
    products = recs.get("products") or []
    lines += ["", "Top products:"]
    if not products:
        lines.append("  none")
    has_parts = any(all(part in p for part in PRODUCT_PARTS) for p in products[:top])
    if products and has_parts:
        lines.append(
            f"  {'#':>2}  {'product':<8} {'score':>6} {'content':>7} {'collab':>7} {'popul':>7} {'repurch':>7}  name [type]"
        )
    for p in products[:top]:
        parts = (
            " ".join(f"{float(p[part]):>7.3f}" for part in PRODUCT_PARTS)
            if all(part in p for part in PRODUCT_PARTS)
            else " ".join(f"{'-':>7}" for _ in PRODUCT_PARTS)
        )
        lines.append(
            f"  {p['rank']:>2}  {p['product_id']:<8} {float(p['score']):>6.3f} "
            + (f"{parts}  " if has_parts else " ")
            + f"{p.get('name') or '(no name)'} [{p.get('article_type', '')}]"
        )
    if products and has_parts:
        lines.append(
            "  (score = content + collaborative + popularity + repurchase, each already weighted; "
            "repurchase > 0 means the user bought it before and it is due again)"
        )
    return "\n".join(lines)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def format_candidates(frame: Any, model_version: str, k: int = 1) -> list[str]:
    """The response model's view of each candidate (``planning_value.candidate_breakdown``) as lines."""
    lines = ["", f"Response model {model_version}: p(click) of each candidate as the {_ordinal(k)} send of the day"]
    if frame is None or len(frame) == 0:
        return [*lines, "  (no candidates)"]
    lines.append(
        f"  {'campaign':<10} {'hour':>5} {'p(click)':>8} {'cons.':>6} {'x wt':>5} {'value':>6}  "
        "main terms (affinity, similarity, hour vs best, repeats, prior p, learner weight / evidence rows)"
    )
    for r in frame.itertuples(index=False):
        lines.append(
            f"  {r.campaign_id:<10} {int(r.best_hour):>2}:00 {r.p_click:>8.2%} {r.p_conservative:>6.2%} "
            f"{r.weight:>5.2f} {r.value:>6.4f}  aff {r.affinity:.2f}, sim {r.similarity:+.2f}, hour {r.hour_rel:.2f}, "
            f"repeats {int(r.times_sent)}, prior {r.prior_p:.2%}, learner {r.learner_weight:.0%} / {r.evidence_rows:,.0f} rows"
        )
    return lines


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"
