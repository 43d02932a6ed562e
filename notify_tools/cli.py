"""``notify``: the command line for operators and analysts.

Operators: ``services up|down|status``, ``init``, ``generate``, ``demo``, ``airflow``.
Analysts: ``explain USER_ID``, ``plan USER_ID``, ``deliveries USER_ID``, ``export [--include-private]``.
Stream: ``dead-letters replay [--since TIME]`` (re-process dead letters after a fix).
Outside Airflow the configuration comes from ``NOTIFY_*`` variables, with ``local.env`` filling
what is unset, so the same command works in a checkout and against AWS.

Exit codes: 0 success; 1 failure (a service down, a failed DAG, an unknown user: the reason is
printed to stderr, details in ``.notify/logs/notify.log``); 2 usage error (bad arguments).
Library logging (Airflow, Spark, boto) goes to that log file, not the terminal.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from include.notify.config import NotifyConfig, load_config
from notify_tools.localenv import airflow_environment, apply_local_env, migrate_airflow_db


def _config() -> NotifyConfig:
    apply_local_env()
    return load_config()


EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UnknownUserError(LookupError):
    """The user id names nobody Notify knows (no user item, features, recommendations or plan)."""


def _require_known_user(config: NotifyConfig, dynamo: object, user_id: str) -> None:
    from include.notify.analyst.user_page import user_page

    if not user_page(config, dynamo, user_id).known:  # type: ignore[arg-type]
        raise UnknownUserError(
            f"unknown user {user_id!r}: not in {config.table_name('users')}, no features, recommendations or plan"
        )


def version() -> str:
    """The installed package's version (the checkout's pyproject when not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("notify")
    except PackageNotFoundError:
        import tomllib

        from include.notify.config import REPO_ROOT

        return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


def _today() -> date:
    return datetime.now(UTC).date()


def cmd_services(args: argparse.Namespace) -> int:
    from notify_tools import services

    config = _config()
    if args.action == "up":
        services.services_up(config)
        print(migrate_airflow_db(config))
    elif args.action == "down":
        services.services_down(config)
    for name, state in services.service_status(config).items():
        print(f"{name:9s} {state}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from include.notify.io.dynamo import Dynamo
    from include.notify.io.kafka import ensure_topics

    config = _config()
    created = Dynamo.from_config(config).create_tables()
    topics = ensure_topics(config)
    print(f"tables created: {len(created)}; topics created: {len(topics)} (existing ones left as they are)")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from notify_tools.datagen import generate_dataset

    config = _config()
    counts = generate_dataset(config, args.users, args.date, args.seed)
    for table, rows in counts.items():
        print(f"{table:18s} {rows:>10,d} rows -> {config.lake_path('raw', table, args.date)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from notify_tools.demo import run_demo

    return run_demo(
        _config(), users=args.users, run_date=args.date, loop_users=args.loop_users, loop_days=args.loop_days
    )


def cmd_backfill(args: argparse.Namespace) -> int:
    from notify_tools.backfill import run_backfill

    return run_backfill(_config(), users=args.users, first=args.first, last=args.last, products=args.products or None)


def cmd_airflow(args: argparse.Namespace) -> int:
    config = _config()
    print(migrate_airflow_db(config))
    env = {**os.environ, **airflow_environment(config), "AIRFLOW__API__PORT": str(args.port)}
    password_file = config.state_dir / "airflow" / "simple_auth_manager_passwords.json.generated"
    print(f"Airflow UI on http://127.0.0.1:{args.port} - user 'admin', password in {password_file}")
    os.execvpe("airflow", ["airflow", "standalone"], env)  # noqa: S606, S607
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from include.notify.analyst.explain import explain_user
    from include.notify.io.dynamo import Dynamo

    config = _config()
    dynamo = Dynamo.from_config(config)
    _require_known_user(config, dynamo, args.user_id)
    print(explain_user(config, dynamo, args.user_id, with_model=True))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from include.notify.analyst.views import describe_plan
    from include.notify.io.dynamo import Dynamo

    config = _config()
    dynamo = Dynamo.from_config(config)
    _require_known_user(config, dynamo, args.user_id)

    def skipped(day: str) -> object:
        import pandas as pd

        try:
            return pd.read_parquet(f"{config.lake_path('runs', 'notify_planning', day)}/skipped.parquet")
        except (FileNotFoundError, OSError):
            return None

    print(describe_plan(config, dynamo, args.user_id, args.date, skipped))
    return 0


def cmd_deliveries(args: argparse.Namespace) -> int:
    from include.notify.analyst.views import describe_deliveries
    from include.notify.io.dynamo import Dynamo

    config = _config()
    dynamo = Dynamo.from_config(config)
    _require_known_user(config, dynamo, args.user_id)
    print(describe_deliveries(config, dynamo, args.user_id))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from include.notify.analyst.export import export_tables

    config = _config()
    exported = export_tables(config, Path(args.out), args.tables, include_private=args.include_private)
    for table, (rows, path) in exported.items():
        print(f"{table:24s} {rows:>10,d} rows -> {path}")
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    import json

    from include.notify.stages.dead_letters import replay_dead_letters

    counts = replay_dead_letters(_config(), since=args.since)
    print(json.dumps(counts, indent=2, sort_keys=True))
    return 0


def _since(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Estimate the greedy policy (exploration off, optionally another cost) from the logged decisions."""
    from include.notify.analyst.evaluate import TargetPolicy, evaluate
    from include.notify.analyst.evaluate_text import format_report
    from include.notify.config import load_config
    from include.notify.io.lake import read_parquet
    from include.notify.stages.response import training_frame

    config = load_config()
    decisions = read_parquet(config, "runs", "notify_planning_decisions")
    events = read_parquet(config, "curated", "clickstream")
    labelled = training_frame(decisions, events)
    extra = decisions.drop_duplicates("notification_id").set_index("notification_id")
    columns = ["propensity", "greedy_campaign", "greedy_value", "greedy_low", "cost", "candidate_scores"]
    log = labelled.join(extra.reindex(columns=columns), on="notification_id")
    from include.notify.io.dynamo import Dynamo

    keys = [{"notification_id": n} for n in log["notification_id"].astype(str)]
    log = with_delivered_decisions(log, Dynamo.from_config(config).batch_get("deliveries", keys) if keys else [])
    print(format_report(evaluate(log, TargetPolicy("greedy", args.cost))))
    return 0


def with_delivered_decisions(log: Any, deliveries: list[dict[str, Any]]) -> Any:
    """The logged decisions with the propensity and candidate scores of what was actually sent:
    a delivery record's (copied from the schedule item it sent) wins over the planning log's, which
    keeps the last plan made for a notification id (a re-plan after the send would differ)."""
    import pandas as pd

    fields = ["propensity", "candidate_scores"]
    frame = pd.DataFrame(deliveries).reindex(columns=["notification_id", *fields])
    frame = frame.dropna(subset=["propensity"]).drop_duplicates("notification_id").set_index("notification_id")
    if frame.empty:
        return log
    found = log["notification_id"].astype(str).map(frame["propensity"])
    scores = log["notification_id"].astype(str).map(frame["candidate_scores"])
    return log.assign(
        propensity=found.astype(float).where(found.notna(), log["propensity"]),
        candidate_scores=scores.where(scores.notna(), log["candidate_scores"]),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"notify {version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="also show INFO logs on the terminal")
    sub = parser.add_subparsers(dest="command", required=True)

    services = sub.add_parser("services", help="start, stop or show the local services (loopback only)")
    services.add_argument("action", choices=["up", "down", "status"])
    services.set_defaults(func=cmd_services)

    sub.add_parser("init", help="create every DynamoDB table and Kafka topic (idempotent)").set_defaults(func=cmd_init)

    generate = sub.add_parser("generate", help="write a synthetic day of raw data into the lake")
    generate.add_argument("--users", type=int, default=2000)
    generate.add_argument("--date", type=date.fromisoformat, default=_today())
    generate.add_argument("--seed", type=int, default=7)
    generate.set_defaults(func=cmd_generate)

    demo = sub.add_parser("demo", help="run the daily cycle end to end on generated data and report")
    demo.add_argument("--users", type=int, default=2000)
    demo.add_argument("--date", type=date.fromisoformat, default=_today())
    demo.add_argument("--loop-users", type=int, default=500, help="users in the closing closed-loop run (0 skips)")
    demo.add_argument("--loop-days", type=int, default=3)
    demo.set_defaults(func=cmd_demo)

    backfill = sub.add_parser("backfill", help="backfill the real nightly chain over several days through Airflow")
    backfill.add_argument("--from", dest="first", type=date.fromisoformat, required=True)
    backfill.add_argument("--to", dest="last", type=date.fromisoformat, required=True)
    backfill.add_argument("--users", type=int, default=200)
    backfill.add_argument("--products", type=int, default=2000, help="catalog size (0: the full catalog)")
    backfill.set_defaults(func=cmd_backfill)

    airflow = sub.add_parser("airflow", help="run the Airflow UI and scheduler locally with Notify's DAGs")
    airflow.add_argument("--port", type=int, default=8080)
    airflow.set_defaults(func=cmd_airflow)

    explain = sub.add_parser("explain", help="why a user gets what: features, top campaigns, top products")
    explain.add_argument("user_id")
    explain.set_defaults(func=cmd_explain)

    plan = sub.add_parser("plan", help="a user's planned day, in local and UTC time, and why each slot")
    plan.add_argument("user_id")
    plan.add_argument("--date", type=date.fromisoformat, default=None, help="local day (default: the latest planned)")
    plan.set_defaults(func=cmd_plan)

    deliveries = sub.add_parser("deliveries", help="what was sent to a user, on which channel")
    deliveries.add_argument("user_id")
    deliveries.set_defaults(func=cmd_deliveries)

    evaluate = sub.add_parser("evaluate", help="off-policy estimate (IPS, SNIPS, DR) of another policy's clicks")
    evaluate.add_argument("--cost", type=float, default=None, help="the target's cost of interruption")
    evaluate.set_defaults(func=cmd_evaluate)

    export = sub.add_parser("export", help="export DynamoDB tables to Parquet for analysts")
    export.add_argument("--out", default=str(Path(os.environ.get("NOTIFY_STATE_DIR", ".notify")) / "export"))
    export.add_argument("--tables", nargs="*", default=None, help="logical table names (default: all)")
    export.add_argument(
        "--include-private", action="store_true", help="keep email and password_hash of users (restricted data)"
    )
    export.set_defaults(func=cmd_export)

    dead = sub.add_parser("dead-letters", help="re-process the stream's dead letters after a fix")
    dead.add_argument("action", choices=["replay"])
    dead.add_argument("--since", type=_since, default=None, help="only letters dead-lettered at/after (ISO time)")
    dead.set_defaults(func=cmd_dead_letters)
    return parser


def _log_file() -> Path:
    return Path(os.environ.get("NOTIFY_STATE_DIR", ".notify")) / "logs" / "notify.log"


def _setup_logging(verbose: bool) -> Path:
    """Everything at INFO to the log file; the terminal gets Notify's warnings (INFO with -v)."""
    path = _log_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    to_file = logging.FileHandler(path)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(to_file)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.addFilter(lambda record: record.name.startswith(("include.notify", "notify_tools")))
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)
    logging.captureWarnings(True)
    return path


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns EXIT_OK, EXIT_FAILURE or EXIT_USAGE (argparse exits 2 itself)."""
    args = build_parser().parse_args(argv)
    log_path = _setup_logging(args.verbose)
    try:
        return int(args.func(args) or EXIT_OK)
    except KeyboardInterrupt:
        print("notify: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as error:
        logging.getLogger("cli.trace").error("notify %s failed", args.command, exc_info=True)
        print(f"notify: {error}", file=sys.stderr)
        if not isinstance(error, UnknownUserError):
            print(f"notify: details in {log_path}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
