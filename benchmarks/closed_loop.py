"""Closed-loop evaluation: seed policy vs Notify vs two oracles on the same simulated population.

    .venv/bin/python benchmarks/closed_loop.py --users 2000 --days 7                       # full stack
    .venv/bin/python benchmarks/closed_loop.py --mode fast --profile default,sharp_evening --seeds 7,8,9

The full mode (the default) runs the seed policy, Notify (exploring), the constrained and the
unconstrained oracle through the whole stack on one ``--profile`` (the fast mode's profile objects).
``--mode fast`` runs ``notify_tools.simulator.fast`` (the same policy code in process, no
services) for every (profile, seed) and writes ``benchmarks/results/closed_loop_fast/``
``closed_loop_<profile>.md`` + ``.svg`` with the OPE check; exit status 0 when every acceptance
check of every profile holds.

Runs ``notify_tools.simulator.run_closed_loop`` (private dynalite and Tansu on free loopback
ports unless ``--use-configured-services``), prints the per-day table and writes
``benchmarks/results/closed_loop.md`` and ``closed_loop.svg``. Exits non-zero when Notify does
not earn more clicks than the seed policy with at most half its sends (``ClosedLoopResult.checks``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--products", type=int, default=4000, help="catalog sample size (0 = the full catalog)")
    parser.add_argument("--start", type=date.fromisoformat, default=None, help="first simulated day")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--state", type=Path, default=ROOT / ".notify" / "closed_loop")
    parser.add_argument("--policies", default="seed,notify,oracle_constrained,oracle", help="full mode")
    parser.add_argument("--use-configured-services", action="store_true", help="use NOTIFY_* endpoints")
    parser.add_argument("--mode", choices=("full", "fast"), default="full")
    parser.add_argument(
        "--profile", default="default", help="simulator profile (full mode: one; fast mode: comma-separated)"
    )
    parser.add_argument("--seeds", default="7,8,9", help="seeds of the fast-mode sweep")
    parser.add_argument("--report-only", action="store_true", help="fast mode: rebuild the report from raw files")
    parser.add_argument("--jobs", type=int, default=2, help="fast mode: (profile, seed) cells run at once")
    args = parser.parse_args(argv)
    if args.mode == "fast":
        return _fast(args)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".notify" / "numba"))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from include.notify.config import load_config
    from notify_tools.simulator import DEFAULT_START, run_closed_loop
    from notify_tools.simulator.profiles import get_profile

    if "," in args.profile:
        parser.error("the full mode runs one profile at a time")
    get_profile(args.profile)  # an unknown name fails before any service starts

    started = time.monotonic()
    result = run_closed_loop(
        users=args.users,
        days=args.days,
        seed=args.seed,
        out_dir=args.out,
        config=load_config() if args.use_configured_services else None,
        state_dir=args.state,
        products_limit=args.products or None,
        start=args.start or DEFAULT_START,
        policies=[p.strip() for p in args.policies.split(",") if p.strip()],
        echo=lambda line: print(line, flush=True),
        profile=args.profile,
    )
    print(result)
    print(f"wall clock {time.monotonic() - started:.0f}s; report in {args.out / 'closed_loop.md'}")
    return 0 if all(result.checks().values()) else 1


def _fast(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from notify_tools.simulator.sweep import run_sweep, write_sweep_report

    out = args.out / "closed_loop_fast"
    profiles = [p.strip() for p in args.profile.split(",") if p.strip()]
    started = time.monotonic()
    if not args.report_only:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        run_sweep(
            out, profiles, seeds, args.users, args.days, echo=lambda line: print(line, flush=True), jobs=args.jobs
        )
    ok = True
    for profile in profiles:
        text = write_sweep_report(out, profile, args.users, args.days)
        print(text)
        ok &= "**NO**" not in text
    print(f"fast sweep wall clock {time.monotonic() - started:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
