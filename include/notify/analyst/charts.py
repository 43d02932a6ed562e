"""Inline SVG charts for the analyst view: built here as text, so a page needs no script, font or
stylesheet from the internet. Every value that reaches the markup is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from include.notify.analyst.user_page import DayPlan, DayStat

STATUS_COLOURS = {
    "sent": "#2e7d32",
    "scheduled": "#1565c0",
    "sending": "#6a1b9a",
    "expired": "#9e9e9e",
    "cancelled": "#757575",
    "failed": "#c62828",
}
BAR = "#1565c0"


def _colour(status: str) -> str:
    return STATUS_COLOURS.get(status, "#455a64")


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="{escape(label)}" style="max-width:{width}px">' + "".join(body) + "</svg>"
    )


def plan_timeline(plan: DayPlan, width: int = 960, height: int = 150) -> str:
    """The local day as a 24-hour axis: quiet hours shaded, the user's engagement by hour as faint
    bars, and one marker per planned send (colour = status, tooltip = campaign, times and why)."""
    left, right, top, axis = 30, 10, 36, height - 28
    span = (width - left - right) / 24
    body = [
        f'<text x="{left}" y="14" font-size="12">local day {escape(plan.local_day)} · {escape(plan.timezone)}</text>'
    ]
    for hour in plan.quiet_hours:
        body.append(
            f'<rect class="quiet" x="{left + hour * span:.1f}" y="{top}" width="{span:.1f}" height="{axis - top}" '
            f'fill="#eceff1"><title>quiet hour {hour:02d}:00</title></rect>'
        )
    if plan.engagement_by_hour:
        peak = max(plan.engagement_by_hour) or 1.0
        for hour, value in enumerate(plan.engagement_by_hour):
            bar = (axis - top) * 0.8 * value / peak
            body.append(
                f'<rect x="{left + hour * span + span * 0.3:.1f}" y="{axis - bar:.1f}" width="{span * 0.4:.1f}" '
                f'height="{bar:.1f}" fill="#b3e5fc"><title>engagement {hour:02d}:00: {value:.3f}</title></rect>'
            )
    body.append(f'<line x1="{left}" y1="{axis}" x2="{width - right}" y2="{axis}" stroke="#37474f"/>')
    for hour in range(0, 25, 3):
        x = left + hour * span
        body.append(f'<line x1="{x:.1f}" y1="{axis}" x2="{x:.1f}" y2="{axis + 4}" stroke="#37474f"/>')
        body.append(f'<text x="{x:.1f}" y="{axis + 16}" font-size="11" text-anchor="middle">{hour:02d}:00</text>')
    for number, slot in enumerate(plan.slots):
        x = left + slot.local_hour * span
        y = top + 14 + (number % 3) * 18
        tip = f"{slot.local_time} local ({slot.send_at_utc} UTC) · {slot.campaign_id} {slot.campaign_name} · {slot.status} · {slot.reason}"
        body.append(
            f'<g class="slot" data-status="{escape(slot.status)}"><title>{escape(tip)}</title>'
            f'<line x1="{x:.1f}" y1="{y + 6}" x2="{x:.1f}" y2="{axis}" stroke="{_colour(slot.status)}" stroke-dasharray="2 2"/>'
            f'<circle cx="{x:.1f}" cy="{y}" r="6" fill="{_colour(slot.status)}"/>'
            f'<text x="{x + 9:.1f}" y="{y + 4}" font-size="11">{escape(slot.local_time)} {escape(slot.campaign_id)}</text></g>'
        )
    return _svg(width, height, f"plan timeline for {plan.local_day}", body)


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    width: int = 460,
    height: int = 180,
    colours: Sequence[str] | None = None,
) -> str:
    """Vertical bars with a value on each non-zero bar and every ``step``-th label under the axis."""
    left, right, top, axis = 34, 8, 24, height - 24
    peak = max(values, default=0) or 1
    slot = (width - left - right) / max(len(values), 1)
    step = max(1, len(values) // 12)
    body = [f'<text x="{left}" y="14" font-size="12">{escape(title)}</text>',
            f'<line x1="{left}" y1="{axis}" x2="{width - right}" y2="{axis}" stroke="#37474f"/>',
            f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">{peak:g}</text>']  # fmt: skip
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        bar = (axis - top) * value / peak
        x = left + index * slot
        fill = colours[index] if colours else BAR
        body.append(
            f'<rect x="{x + slot * 0.1:.1f}" y="{axis - bar:.1f}" width="{slot * 0.8:.1f}" height="{bar:.1f}" '
            f'fill="{fill}"><title>{escape(label)}: {value:g}</title></rect>'
        )
        if index % step == 0:
            body.append(
                f'<text x="{x + slot / 2:.1f}" y="{axis + 14}" font-size="10" text-anchor="middle">{escape(label)}</text>'
            )
    return _svg(width, height, title, body)


def statuses_chart(statuses: dict[str, int], width: int = 460) -> str:
    """Schedule items by status as coloured horizontal bars with counts."""
    rows = sorted(statuses.items(), key=lambda kv: -kv[1])
    height = 30 + 22 * max(len(rows), 1)
    left, right = 80, 60
    peak = max((count for _, count in rows), default=0) or 1
    body = ['<text x="0" y="14" font-size="12">schedule items by status</text>']
    for row, (status, count) in enumerate(rows):
        y = 24 + row * 22
        bar = (width - left - right) * count / peak
        body.append(f'<text x="{left - 6}" y="{y + 13}" font-size="11" text-anchor="end">{escape(status)}</text>')
        body.append(f'<rect x="{left}" y="{y}" width="{bar:.1f}" height="16" fill="{_colour(status)}"/>')
        body.append(f'<text x="{left + bar + 4:.1f}" y="{y + 13}" font-size="11">{count:,}</text>')
    if not rows:
        body.append('<text x="0" y="40" font-size="11">nothing planned yet</text>')
    return _svg(width, height, "schedule items by status", body)


def clicks_ctr_chart(days: Sequence[DayStat], width: int = 460, height: int = 180) -> str:
    """Clicks per day as bars and CTR (clicks / sent) as a line on its own scale."""
    left, right, top, axis = 34, 40, 24, height - 24
    slot = (width - left - right) / max(len(days), 1)
    peak_clicks = max((d.clicks for d in days), default=0) or 1
    peak_ctr = max((d.ctr for d in days), default=0.0) or 1.0
    body = ['<text x="34" y="14" font-size="12">clicks (bars) and CTR (line) by day</text>',
            f'<line x1="{left}" y1="{axis}" x2="{width - right}" y2="{axis}" stroke="#37474f"/>']  # fmt: skip
    points = []
    for index, day in enumerate(days):
        x = left + index * slot
        bar = (axis - top) * day.clicks / peak_clicks
        body.append(
            f'<rect x="{x + slot * 0.15:.1f}" y="{axis - bar:.1f}" width="{slot * 0.7:.1f}" height="{bar:.1f}" fill="#80cbc4">'
            f"<title>{escape(day.day)}: {day.clicks:,} clicks of {day.sent:,} sent</title></rect>"
        )
        body.append(
            f'<text x="{x + slot / 2:.1f}" y="{axis + 14}" font-size="10" text-anchor="middle">{escape(day.day[5:])}</text>'
        )
        points.append((x + slot / 2, axis - (axis - top) * day.ctr / peak_ctr, day))
    if points:
        body.append(
            '<polyline fill="none" stroke="#e65100" stroke-width="2" points="'
            + " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
            + '"/>'
        )
        for x, y, day in points:
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#e65100"><title>{escape(day.day)}: CTR {day.ctr:.1%}</title></circle>'
            )
        body.append(f'<text x="{width - right + 4}" y="{top + 4}" font-size="10">{peak_ctr:.1%}</text>')
    else:
        body.append('<text x="34" y="60" font-size="11">no sends or clicks yet</text>')
    return _svg(width, height, "clicks and CTR by day", body)
