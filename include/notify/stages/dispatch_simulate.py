"""A dispatch day with a simulated clock (the demo, the simulator and tests): minutes, not 24 hours.

The dispatcher runs at each tick's time (``Dispatcher(simulated=True)``), so a message goes out at
the tick, whatever the wall clock says; leases stay on the wall clock.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo
from include.notify.stages.channels import Channel, build_channels
from include.notify.stages.dispatch_events import EventSink
from include.notify.timeutil import parse_iso


def simulate_day(
    config: NotifyConfig,
    day: date,
    step_minutes: int = 10,
    dynamo: Dynamo | None = None,
    channels: list[Channel] | None = None,
    events: EventSink | None = None,
    **options: Any,
) -> dict[str, int]:
    """Dispatch local day ``day`` with a simulated clock, in minutes rather than 24 hours.

    The clock advances in ``step_minutes`` ticks over the UTC span of that local day in every time
    zone, skipping ticks where nothing is due (as the sensor would); every item is dispatched at
    most one step after it is due, so ``step_minutes`` must stay below the lateness limit.
    """
    if not 0 < step_minutes < config.max_lateness_minutes:
        raise ValueError(f"step_minutes must be in 1..{config.max_lateness_minutes - 1}, got {step_minutes}")
    from include.notify.stages.dispatch import Dispatcher, KafkaEventSink
    from include.notify.stages.dispatch_due import due_items

    dynamo = dynamo or Dynamo.from_config(config)
    own_channels = channels is None
    channels = build_channels(config, dynamo) if channels is None else channels
    events = KafkaEventSink(config) if events is None else events
    step = timedelta(minutes=step_minutes)
    # Local day D spans UTC D-1 10:00 (UTC+14) to D+1 12:00 (UTC-12).
    start = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=14)
    end = start + timedelta(hours=50)
    pending = due_items(config, dynamo, end, lookback_hours=50 + 24)
    ticks = sorted(
        {_ceil(parse_iso(i["due_at"]), start, step) for i in pending if i.get("local_day") == day.isoformat()}
    )
    totals: Counter[str] = Counter()
    dispatcher = Dispatcher(config, dynamo, channels, events, simulated=True, **options)
    try:
        for tick in ticks:
            counts = dispatcher.run(tick, lookback_hours=max(2, config.max_lateness_minutes // 60 + 2))
            totals.update({k: v for k, v in counts.items() if k != "seconds_ms"})
    finally:
        if own_channels:
            for channel in channels:
                channel.close()
    totals["ticks"] = len(ticks)
    return dict(totals)


def _ceil(moment: datetime, origin: datetime, step: timedelta) -> datetime:
    steps = -(-(moment - origin) // step)
    return origin + steps * step
