"""The fast-mode sweep: every policy over seeds and profiles, the OPE check, the report per profile.

``run_sweep`` writes one raw CSV per (profile, seed) (``raw_<profile>_<seed>.csv``, per policy and
day) and ``ope_<profile>_<seed>.json`` (the greedy policy's clicks estimated from the exploring
policy's logs beside the greedy policy's simulated clicks, with the bootstrap interval over users
and the prediction interval of one realised week, ``analyst.evaluate``); ``write_sweep_report`` turns them into
``closed_loop_<profile>.md`` + ``.svg``: per day and for the whole run clicks, sends, CTR, clicks
per user and opt-outs, mean ± standard deviation over the seeds, and the acceptance verdicts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

LABELS = {
    "seed": "seed policy (cosine top-5, every 4.8 h)",
    "notify": "Notify (learned, explores 10 %)",
    "notify_greedy": "Notify, exploration off",
    "oracle_constrained": "oracle, constrained (same rules as Notify)",
    "oracle": "oracle, unconstrained (ignores cooldown/quiet hours)",
}
ACCEPTANCE_SHARE = {"default": 0.80}
OTHER_PROFILE_SHARE = 0.70


def run_sweep(
    out: Path, profiles: list[str], seeds: list[int], users: int, days: int, echo: Any = print, jobs: int = 1
) -> None:
    """Every (profile, seed) cell, ``jobs`` at a time in worker processes (each cell is independent
    and deterministic for its seed, so the files are the same whatever ``jobs`` is)."""
    out.mkdir(parents=True, exist_ok=True)
    cells = [(out, profile, seed, users, days) for profile in profiles for seed in seeds]
    if jobs <= 1 or len(cells) == 1:
        for cell in cells:
            echo(_run_cell(*cell))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a fresh interpreter per worker (torch and OpenMP state do not survive a fork well).
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for line in pool.map(_run_cell, *zip(*cells, strict=True)):
            echo(line)


def _run_cell(out: Path, profile: str, seed: int, users: int, days: int) -> str:
    """One (profile, seed): ``raw_<profile>_<seed>.csv`` and ``ope_<profile>_<seed>.json``; returns a summary line."""
    from include.notify.analyst.evaluate import TargetPolicy, evaluate
    from notify_tools.simulator.fast import run_fast

    result, logs = run_fast(users=users, days=days, seed=seed, profile=profile)
    frame = result.frame().assign(profile=profile, seed=seed)
    frame.to_csv(out / f"raw_{profile}_{seed}.csv", index=False)
    simulated = float(frame.loc[frame["policy"] == "notify_greedy", "clicked"].sum())
    ope = evaluate(logs["notify"], TargetPolicy("greedy")) if "notify" in logs else None
    payload = {
        "profile": profile,
        "seed": seed,
        "seconds": result.seconds,
        "simulated_greedy_clicks": simulated,
    }
    if ope is not None:
        payload |= {
            "logged_clicks": ope["logged_clicks"], "decisions": ope["decisions"], "users": ope.get("users"),
            "estimates": [e.__dict__ | {"contains_simulated": e.contains(simulated), "predicts_simulated": e.predicts(simulated)}
                          for e in ope["estimates"]],
        }  # fmt: skip
    (out / f"ope_{profile}_{seed}.json").write_text(json.dumps(payload, indent=2))
    totals = frame.groupby("policy")["clicked"].sum().to_dict()
    return f"{profile} seed {seed}: clicks {totals}; seconds {result.seconds}"


def _totals(raw: pd.DataFrame, users: int) -> pd.DataFrame:
    per_seed = raw.groupby(["policy", "seed"]).agg(clicked=("clicked", "sum"), sent=("sent", "sum"),
                                                   opt_out=("opt_out_rate", "last")).reset_index()  # fmt: skip
    per_seed["ctr"] = per_seed["clicked"] / per_seed["sent"].clip(lower=1)
    per_seed["clicks_per_user"] = per_seed["clicked"] / users
    return per_seed


def write_sweep_report(out: Path, profile: str, users: int, days: int) -> str:
    """``closed_loop_<profile>.md`` and ``.svg`` from the raw files of ``profile``; returns the Markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw = pd.concat([pd.read_csv(p) for p in sorted(out.glob(f"raw_{profile}_*.csv"))], ignore_index=True)
    seeds = sorted(raw["seed"].unique())
    totals = _totals(raw, users)
    summary = totals.groupby("policy").agg(["mean", "std"])
    order = [p for p in LABELS if p in summary.index]
    lines = [
        f"### Profile `{profile}`: {users:,} users x {days} days, seeds {', '.join(map(str, seeds))} (mean ± sd)",
        "",
        "| policy | clicks | sends | CTR | clicks / user | opted out (end) |",
        "|---|---|---|---|---|---|",
    ]
    for p in order:
        r = summary.loc[p]
        lines.append(
            f"| {LABELS[p]} | {r[('clicked', 'mean')]:,.0f} ± {r[('clicked', 'std')]:,.0f} | "
            f"{r[('sent', 'mean')]:,.0f} ± {r[('sent', 'std')]:,.0f} | {r[('ctr', 'mean')]:.1%} ± {r[('ctr', 'std')]:.1%} | "
            f"{r[('clicks_per_user', 'mean')]:.3f} ± {r[('clicks_per_user', 'std')]:.3f} | "
            f"{r[('opt_out', 'mean')]:.1%} ± {r[('opt_out', 'std')]:.1%} |"
        )
    per_day = raw.groupby(["policy", "day"]).agg(clicked=("clicked", "mean"), clicked_sd=("clicked", "std"),
                                                 sent=("sent", "mean"), opt_out=("opt_out_rate", "mean")).reset_index()  # fmt: skip
    per_day["ctr"] = per_day["clicked"] / per_day["sent"].clip(lower=1)
    lines += ["", "Per day (mean over seeds): clicks ± sd / sends / CTR / opted out", "",
              "| day | " + " | ".join(order) + " |", "|---|" + "---|" * len(order)]  # fmt: skip
    for day in sorted(per_day["day"].unique()):
        cells = []
        for p in order:
            r = per_day[(per_day["policy"] == p) & (per_day["day"] == day)].iloc[0]
            cells.append(
                f"{r['clicked']:,.0f} ± {r['clicked_sd']:,.0f} / {r['sent']:,.0f} / {r['ctr']:.1%} / {r['opt_out']:.1%}"
            )
        lines.append(f"| {day} | " + " | ".join(cells) + " |")
    lines += ["", *_verdicts(totals, profile), "", *_ope_lines(out, profile)]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for p in order:
        d = per_day[per_day["policy"] == p]
        axes[0].plot(d["day"], d["clicked"], marker="o", label=LABELS[p])
        axes[1].plot(d["day"], d["sent"], marker="o")
        axes[2].plot(d["day"], d["opt_out"] * 100, marker="o")
    for axis, title in zip(axes, ("clicks per day", "sends per day", "opted out (%)"), strict=True):
        axis.set_title(title)
        axis.set_xlabel("day")
    axes[0].legend(fontsize=7)
    figure.suptitle(f"closed loop, fast mode, profile {profile} (mean of {len(seeds)} seeds)")
    figure.tight_layout()
    figure.savefig(out / f"closed_loop_{profile}.svg")
    plt.close(figure)
    text = "\n".join(lines) + f"\n\n![{profile}](closed_loop_{profile}.svg)\n"
    (out / f"closed_loop_{profile}.md").write_text(text)
    return text


def _verdicts(totals: pd.DataFrame, profile: str) -> list[str]:
    mean = totals.groupby("policy")[["clicked", "sent", "opt_out"]].mean()
    if not {"notify", "oracle_constrained", "seed"} <= set(mean.index):
        return []
    share = ACCEPTANCE_SHARE.get(profile, OTHER_PROFILE_SHARE)
    n, o, s = mean.loc["notify"], mean.loc["oracle_constrained"], mean.loc["seed"]
    checks = [
        (f"Notify clicks >= {share:.0%} of the constrained oracle's", n["clicked"] / o["clicked"], n["clicked"] >= share * o["clicked"]),
        ("Notify clicks >= 2x the seed policy's", n["clicked"] / max(s["clicked"], 1), n["clicked"] >= 2 * s["clicked"]),
        ("Notify sends <= 50 % of the seed policy's", n["sent"] / max(s["sent"], 1), n["sent"] <= 0.5 * s["sent"]),
        ("Notify opt-outs <= constrained oracle + 1 point", (n["opt_out"] - o["opt_out"]) * 100, n["opt_out"] <= o["opt_out"] + 0.01),
    ]  # fmt: skip
    return ["Acceptance (means over seeds):", ""] + [
        f"- {name}: {ratio:.2f} -> **{'yes' if ok else 'NO'}**" for name, ratio, ok in checks
    ]


def _ope_lines(out: Path, profile: str) -> list[str]:
    lines = ["Off-policy check: Notify-greedy's weekly clicks estimated from Notify's (exploring) logs vs simulated "
             "(estimate, 95 % bootstrap interval over users of the expected clicks, 95 % prediction interval of one "
             "week's clicks; in/OUT: the simulated value in the prediction interval):", "",
             "| seed | simulated | IPS | SNIPS | DR |", "|---|---|---|---|---|"]  # fmt: skip
    inside = total = 0
    for path in sorted(out.glob(f"ope_{profile}_*.json")):
        data = json.loads(path.read_text())
        cells = []
        for e in data.get("estimates", []):
            ok = e.get("predicts_simulated", e["contains_simulated"])
            inside, total = inside + ok, total + 1
            cells.append(f"{e['value']:,.0f} [{e['low']:,.0f}, {e['high']:,.0f}] "
                         f"pred [{e.get('pred_low', e['low']):,.0f}, {e.get('pred_high', e['high']):,.0f}] {'in' if ok else 'OUT'}")  # fmt: skip
        lines.append(f"| {data['seed']} | {data['simulated_greedy_clicks']:,.0f} | " + " | ".join(cells) + " |")
    if total:
        lines += ["", f"- OPE estimate within its prediction interval of the simulated value: {inside} of {total} "
                      f"-> **{'yes' if inside == total else 'NO'}**"]  # fmt: skip
    return lines
