"""What a closed-loop run measures: per policy and day metrics, the acceptance verdicts, the table."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

POLICIES = ("seed", "notify", "oracle_constrained", "oracle")
POLICY_LABELS = {
    "seed": "seed policy (cosine top-5, every 4.8 h)",
    "notify": "Notify",
    "oracle_constrained": "oracle, constrained (same rules as Notify)",
    "oracle": "oracle, unconstrained (upper bound)",
}


@dataclass
class DayMetrics:
    """One policy's outcome on one simulated day (rates over the day's delivered notifications)."""

    policy: str
    day: int
    date: str
    sent: int
    opened: int
    clicked: int
    ordered: int
    ctr: float
    open_rate: float
    clicks_per_user: float
    opt_out_rate: float
    new_opt_outs: int
    sent_to_opted_out: int  # to users who had opted out before the day began: must be 0
    sent_after_opt_out_today: int  # the same day's later sends: reactions are ingested at day end
    cancelled: int


@dataclass
class ClosedLoopResult:
    """Per policy and day metrics of a closed-loop run, with the stage timings and the verdicts."""

    users: int
    days: int
    seed: int
    rows: list[DayMetrics]
    seconds: dict[str, float]
    out_dir: str

    def frame(self) -> pd.DataFrame:
        from dataclasses import asdict

        return pd.DataFrame([asdict(row) for row in self.rows])

    def metric(self, policy: str, name: str) -> list[float]:
        return [float(getattr(r, name)) for r in self.rows if r.policy == policy]

    def checks(self) -> dict[str, bool]:
        """Yes/no on clicks and sends, never CTR alone (sending less raises CTR while clicks fall):
        Notify earns more clicks than the seed policy over the run, with at most half its sends."""
        clicks = {p: sum(self.metric(p, "clicked")) for p in ("notify", "seed")}
        sends = {p: sum(self.metric(p, "sent")) for p in ("notify", "seed")}
        if not self.metric("notify", "sent") or not self.metric("seed", "sent"):
            return {"notify_more_clicks_than_seed": False, "notify_at_most_half_the_seed_sends": False}
        return {
            "notify_more_clicks_than_seed": clicks["notify"] > clicks["seed"],
            "notify_at_most_half_the_seed_sends": sends["notify"] <= 0.5 * sends["seed"],
        }

    def table(self) -> str:
        """A Markdown table: one row per day, the three policies side by side per metric."""
        present = [p for p in POLICIES if self.metric(p, "ctr")]
        metrics = [("ctr", "CTR", "{:.1%}"), ("clicks_per_user", "clicks/user", "{:.3f}"),
                   ("opt_out_rate", "opted out", "{:.1%}"), ("sent", "sent", "{:,.0f}")]  # fmt: skip
        header = ["day"] + [f"{label} {policy}" for _, label, _ in metrics for policy in present]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for day in range(1, self.days + 1):
            cells = [str(day)]
            for name, _, fmt in metrics:
                for policy in present:
                    row = next((r for r in self.rows if r.policy == policy and r.day == day), None)
                    cells.append(fmt.format(getattr(row, name)) if row else "")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        verdicts = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in self.checks().items())
        return f"Closed loop, {self.users:,} users x {self.days} days (seed {self.seed})\n{self.table()}\n{verdicts}"
