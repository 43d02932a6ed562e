"""Named simulator profiles: every behaviour and data-generation knob of a simulated population.

A profile is the hidden world a closed-loop run plays; nothing under ``include/`` may read one.
The shipped profiles differ in hour structure, tolerance, the noise of the preference -> purchase
link and responsiveness, so a policy that wins on one only by fitting its constants loses on the
other:

- ``default``: two active hours with a gentle fall-off, tolerance 3 a day, 20 % of past purchases
  off-taste, the generator's responsiveness.
- ``sharp_evening``: a sharp hour structure (an hour away is already half as good, three hours
  away almost nothing; more activity concentrated at the active hours), tolerance 2 a day with
  steeper opt-outs, 45 % of purchases and 40 % of views off-taste (a noisier preference signal),
  users 30 % less responsive and more put off by repeats.
- ``heldout_flat`` (held out, not an acceptance profile): flat hours, tolerance 1 with steep
  opt-outs, strong fatigue, a weak repetition effect; no constant of Notify was chosen on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from notify_tools.simulator.behaviour import Behaviour


@dataclass(frozen=True)
class Profile:
    """A simulated world: how users behave and how their history was generated."""

    name: str
    behaviour: Behaviour = field(default_factory=Behaviour)
    purchase_noise: float = 0.2  # datagen: share of past purchases drawn regardless of taste
    description: str = ""


PROFILES: dict[str, Profile] = {
    "default": Profile("default", Behaviour(), 0.2, "gentle hours, tolerance 3, 20 % purchase noise"),
    "sharp_evening": Profile(
        "sharp_evening",
        Behaviour(
            base_open=0.63,
            tolerated_per_day=2,
            opt_out_per_extra=0.03,
            hour_falloff=(1.0, 0.5, 0.2, 0.06),
            night_factor=0.02,
            peak_share=0.85,
            explore_share=0.4,
            repeat_decay=0.45,
            repeat_window_days=10,
        ),
        0.45,
        "sharp hours, tolerance 2, 45 % purchase noise, 30 % less responsive",
    ),
    # Held out: never used to choose any constant of Notify; a check that the policy did not fit
    # the two shipped worlds. Flat hours, tolerance 1 with steep opt-outs, strong fatigue, a weak
    # repetition effect, clicks depending more on relevance, 30 % purchase noise.
    "heldout_flat": Profile(
        "heldout_flat",
        Behaviour(
            base_open=1.0,
            click_base=0.08,
            click_relevance=0.75,
            fatigue_decay=0.6,
            tolerated_per_day=1,
            opt_out_per_extra=0.04,
            hour_falloff=(1.0, 0.9, 0.7, 0.45),
            night_factor=0.1,
            peak_share=0.55,
            explore_share=0.3,
            repeat_decay=0.8,
            repeat_window_days=5,
        ),
        0.3,
        "flat hours, tolerance 1, strong fatigue, weak repetition effect, 30 % purchase noise (held out)",
    ),
}


def get_profile(name: str) -> Profile:
    """The named profile; a clear error listing the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown simulator profile {name!r}; known: {sorted(PROFILES)}") from None
