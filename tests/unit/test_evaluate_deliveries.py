"""``notify evaluate`` takes the propensity of what was sent from its delivery record where present."""

from __future__ import annotations

import pandas as pd

from notify_tools.cli import with_delivered_decisions


def test_the_delivery_records_propensity_wins_over_the_planning_logs() -> None:
    log = pd.DataFrame(
        {
            "notification_id": ["U1#d#A", "U2#d#B", "U3#d#C"],
            "propensity": [0.9, 0.9, 0.05],
            "candidate_scores": ["A:0.1|B:0.05", "B:0.2", "C:0.01|A:0.3"],
            "clicked": [1, 0, 0],
        }
    )
    deliveries = [
        # U1's A was re-planned after it was sent (the log's last plan says 0.9): the record says 0.05.
        {"notification_id": "U1#d#A", "propensity": 0.05, "candidate_scores": "B:0.09|A:0.1", "channel": "kafka"},
        {"notification_id": "U2#d#B", "channel": "kafka"},  # planned without a model: nothing to take
    ]
    out = with_delivered_decisions(log, deliveries)
    assert out["propensity"].tolist() == [0.05, 0.9, 0.05]
    assert out["candidate_scores"].tolist() == ["B:0.09|A:0.1", "B:0.2", "C:0.01|A:0.3"]
    assert out["clicked"].tolist() == [1, 0, 0]
    assert with_delivered_decisions(log, []).equals(log)
