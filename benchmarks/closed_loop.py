"""Closed-loop evaluation: seed policy vs Notify vs an oracle on the same simulated population.

    .venv/bin/python benchmarks/closed_loop.py --users 2000 --days 7

Runs ``notify_tools.simulator.run_closed_loop`` (private dynalite and Tansu on free loopback
ports unless ``--use-configured-services``), prints the per-day table and writes
``benchmarks/results/closed_loop.md`` and ``closed_loop.svg``. Exits non-zero when Notify does
not beat the seed policy in CTR on the last day or does not improve from day 1 to the last day.
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
    parser.add_argument("--policies", default="seed,notify,oracle")
    parser.add_argument("--use-configured-services", action="store_true", help="use NOTIFY_* endpoints")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".notify" / "numba"))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from include.notify.config import load_config
    from notify_tools.simulator import DEFAULT_START, run_closed_loop

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
    )
    print(result)
    print(f"wall clock {time.monotonic() - started:.0f}s; report in {args.out / 'closed_loop.md'}")
    return 0 if all(result.checks().values()) else 1


if __name__ == "__main__":
    sys.exit(main())
