"""Time zones for tests that dispatch at the wall clock.

Dispatch checks quiet hours at the moment it sends, and a test that sends "now" to a user in UTC
would expire at night (the default quiet hours are 22:00-08:00): such a test passes or fails by
the hour CI happens to run it. These give the user a zone where that moment is about noon.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def awake_zone(moment: datetime) -> tuple[str, str]:
    """A fixed-offset zone in which UTC ``moment`` is between 12:00 and 13:00, and the local day
    there: (``Etc/GMT-5``-style name, ``YYYY-MM-DD``)."""
    shift = 12 - moment.hour  # -11 .. +12 hours: every one is an Etc/GMT zone
    zone = "Etc/GMT" if shift == 0 else f"Etc/GMT{-shift:+d}"
    return zone, (moment + timedelta(hours=shift)).date().isoformat()
