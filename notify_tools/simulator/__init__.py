"""The frontend simulator and the closed-loop evaluation built on it.

- ``behaviour``: the population's hidden truth and how simulated users browse, buy and react
  (``Behaviour``, ``Population``, ``Simulator``);
- ``kafka_io``: what the simulated frontend produces and reads (``publish``, ``read_notifications``);
- ``loop``: the closed-loop harness (``run_closed_loop``), every policy in its own world;
- ``results``: what a run measures (``DayMetrics``, ``ClosedLoopResult``);
- ``report``: the Markdown + matplotlib report (``write_report``).

The names are re-exported here, so ``from notify_tools.simulator import run_closed_loop, ...``
works as before. Importing this package does not import matplotlib (only ``write_report`` does).
"""

from notify_tools.simulator.behaviour import (
    GENERIC_RELEVANCE,
    HOURS,
    NIGHT_HOURS,
    Activity,
    Behaviour,
    Population,
    Simulator,
    hour_factor,
    uniforms,
)
from notify_tools.simulator.kafka_io import publish, read_notifications
from notify_tools.simulator.loop import DEFAULT_START, FRONTEND_GROUP, run_closed_loop
from notify_tools.simulator.report import write_report
from notify_tools.simulator.results import POLICIES, POLICY_LABELS, ClosedLoopResult, DayMetrics

__all__ = [
    "DEFAULT_START",
    "FRONTEND_GROUP",
    "GENERIC_RELEVANCE",
    "HOURS",
    "NIGHT_HOURS",
    "POLICIES",
    "POLICY_LABELS",
    "Activity",
    "Behaviour",
    "ClosedLoopResult",
    "DayMetrics",
    "Population",
    "Simulator",
    "hour_factor",
    "publish",
    "read_notifications",
    "run_closed_loop",
    "uniforms",
    "write_report",
]
