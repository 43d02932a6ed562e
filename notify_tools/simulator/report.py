"""The closed-loop report: ``closed_loop.md`` (table, totals, verdicts, timings) and ``closed_loop.svg``."""

from __future__ import annotations

from typing import Any

from notify_tools.simulator.results import POLICIES, POLICY_LABELS, ClosedLoopResult


def write_report(result: ClosedLoopResult, out_dir: Any) -> tuple[str, str]:
    """``closed_loop.md`` (table, verdicts, timings), ``closed_loop.svg`` (four panels) and
    ``closed_loop_raw.csv`` (the per-day rows) in ``out_dir``."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    frame = result.frame()
    frame.to_csv(out / "closed_loop_raw.csv", index=False)  # the per-day rows, for comparisons with the fast mode
    figure, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    panels = [("ctr", "CTR (clicks / sent)"), ("clicks_per_user", "clicks per user"),
              ("opt_out_rate", "opted out (share of users)"), ("sent", "notifications sent")]  # fmt: skip
    for axis, (name, title) in zip(axes, panels, strict=True):
        for policy in POLICIES:
            part = frame[frame["policy"] == policy]
            if len(part):
                axis.plot(part["day"], part[name], marker="o", label=POLICY_LABELS[policy])
        axis.set_title(title)
        axis.set_xlabel("day")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"Closed loop: {result.users:,} simulated users x {result.days} days (seed {result.seed})")
    figure.tight_layout()
    svg = out / "closed_loop.svg"
    figure.savefig(svg)
    plt.close(figure)
    verdicts = "\n".join(
        f"- {name.replace('_', ' ')}: **{'yes' if ok else 'NO'}**" for name, ok in result.checks().items()
    )
    timings = "\n".join(f"| {stage} | {value:.1f} |" for stage, value in result.seconds.items())
    columns = ["sent", "opened", "clicked", "ordered", "sent_to_opted_out", "sent_after_opt_out_today", "cancelled"]
    totals = frame.groupby("policy")[columns].sum()
    totals_md = "\n".join(
        [
            "| policy | sent | opened | clicked | orders after a click | sent to users opted out before that day"
            " | sent later the day a user opted out | cancelled by reactions |",
            "|---|---|---|---|---|---|---|---|",
            *(
                f"| {POLICY_LABELS[p]} | " + " | ".join(f"{int(r[c]):,}" for c in columns) + " |"
                for p, r in totals.reindex([p for p in POLICIES if p in totals.index]).iterrows()
            ),
        ]
    )
    text = f"""# Closed-loop evaluation

`benchmarks/closed_loop.py --users {result.users} --days {result.days} --seed {result.seed}`: the whole daily
cycle (nightly pipeline, planning, dispatch with a simulated clock, the frontend simulator's
reactions, stream ingestion) for {len(frame["policy"].unique())} policies on the same simulated population, each in its own
tables, topics and lake. Rates are over the notifications delivered that day; "opted out" is the
share of all users opted out by the end of the day (including those opted out before day 1).

{result.table()}

![closed loop](closed_loop.svg)

## Totals over the run

{totals_md}

## Acceptance

{verdicts}

## Wall-clock seconds per stage (all days)

| stage | seconds |
|---|---|
{timings}
"""
    markdown = out / "closed_loop.md"
    markdown.write_text(text)
    return str(markdown), str(svg)
