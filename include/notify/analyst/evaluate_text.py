"""Off-policy estimates as text (``notify evaluate``): what ``evaluate.evaluate`` returned, formatted."""

from __future__ import annotations


def format_report(result: dict[str, object]) -> str:
    """The estimates as a small text table."""
    target = result["target"]
    lines = [
        f"target policy: {target.name} (cost {'as logged' if target.cost is None else target.cost}); "
        f"{result['decisions']:,} logged decisions, the target sends {result['target_sends']:,}; "
        f"logged clicks {result['logged_clicks']:,.0f}",
    ]
    if result["unsupported_decisions"]:
        lines.append(f"WARNING: {result['unsupported_decisions']:,} decisions have a cost below the logged one: "
                     "the target would also send where nothing was logged (not estimable)")  # fmt: skip
    for e in result["estimates"]:
        lines.append(f"  {e.estimator:5s} {e.value:10,.1f} clicks  95 % CI [{e.low:,.1f}, {e.high:,.1f}]"
                     f"  prediction [{e.pred_low:,.1f}, {e.pred_high:,.1f}]")  # fmt: skip
    return "\n".join(lines)
