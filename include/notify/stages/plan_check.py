"""The plan checker: every rule a plan must keep, re-checked row by row.

``plan_violations`` is independent of the vectorised planner's bookkeeping (it walks the plan per
user and per row) but asks the same ``rules`` the planner does, so the two can only disagree
where the planner's placement is wrong, never about what a rule is.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from include.notify.config import NotifyConfig
from include.notify.rules import eligible, in_cooldown, is_quiet, over_cap, required_segment
from include.notify.stages.planning import PlanInputs, clean_campaigns, clean_users


def plan_violations(
    config: NotifyConfig, plan: pd.DataFrame, inputs: PlanInputs, existing_sent: pd.DataFrame | None = None
) -> list[str]:
    """Every broken rule in a plan, one readable line each (empty when the plan is valid).

    An independent re-check (per row, not vectorised) used by tests and ``plan_day``'s
    self-check: cap, quiet hours in local time, minimum gap, campaign active/in window/eligible,
    cooldown and opt-out.
    """
    problems: list[str] = []
    users = clean_users(config, inputs.users).set_index("user_id")
    campaigns = clean_campaigns(config, inputs.campaigns).set_index("campaign_id")
    required = dict(
        zip(
            campaigns.index,
            required_segment(campaigns["eligibility"].to_numpy(), campaigns["notification_type"].to_numpy()),
            strict=True,
        )
    )
    sent = existing_sent if existing_sent is not None else pd.DataFrame(columns=["user_id", "send_at"])
    recent = inputs.recent_sends if inputs.recent_sends is not None else pd.DataFrame(columns=["user_id"])
    for user_id, rows in plan.groupby("user_id"):
        user = users.loc[user_id]
        zone = ZoneInfo(str(user["timezone"]))
        own_sent = pd.to_datetime(sent.loc[sent["user_id"] == user_id, "send_at"], utc=True, format="ISO8601")
        if over_cap(len(rows), len(own_sent), user["cap"]):
            problems.append(f"{user_id}: {len(rows)} planned + {len(own_sent)} sent > cap {user['cap']}")
        times = sorted([*pd.to_datetime(rows["send_at"], utc=True, format="ISO8601"), *own_sent])
        for earlier, later in itertools.pairwise(times):
            if (later - earlier) < timedelta(minutes=config.min_gap_minutes):
                problems.append(f"{user_id}: gap {later - earlier} between {earlier} and {later}")
        if user["opt_out"]:
            problems.append(f"{user_id}: opted out but has {len(rows)} planned")
        for row in rows.itertuples():
            local = pd.Timestamp(row.send_at).tz_convert(zone)
            start, end = int(user["quiet_start"]), int(user["quiet_end"])
            if is_quiet(local.hour, start, end):
                problems.append(f"{row.notification_id}: {local:%H:%M} local is in quiet hours {start}-{end}")
            if local.date() != inputs.day:
                problems.append(f"{row.notification_id}: local day {local.date()} is not {inputs.day}")
            if row.campaign_id not in campaigns.index:
                problems.append(f"{row.notification_id}: campaign not in curated")
                continue
            campaign = campaigns.loc[row.campaign_id]
            if campaign["status"] != "active":
                problems.append(f"{row.notification_id}: campaign status {campaign['status']}")
            day64 = np.datetime64(inputs.day, "D")
            if not campaign["start_date"] <= day64 <= campaign["end_date"]:
                problems.append(
                    f"{row.notification_id}: outside window {campaign['start_date']}..{campaign['end_date']}"
                )
            rule, segment = campaign["eligibility"], user["segment"]
            if not eligible(required[row.campaign_id], segment):
                problems.append(f"{row.notification_id}: not eligible ({rule}, segment {segment!r})")
            if "campaign_id" in recent and len(recent):
                mine = recent[(recent["user_id"] == user_id) & (recent["campaign_id"] == row.campaign_id)]
                for sent_at in pd.to_datetime(mine["sent_at"], utc=True):
                    days = (inputs.day - sent_at.date()).days
                    if in_cooldown(days, campaign["cooldown_days"]):
                        problems.append(
                            f"{row.notification_id}: sent {days} days ago, cooldown {campaign['cooldown_days']}"
                        )
    return problems
