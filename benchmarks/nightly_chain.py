"""The nightly per-user chain at 10 k / 100 k / ... users: each stage's time and peak memory, per
user shard, and a projection to 10 M users on the production engines.

Generated data (``datagen.build_dataset`` in chunks of ``--chunk`` users with distinct ids, the
full catalog) is written as the curated lake at D; then the chain runs the stages the DAGs run,
each task in a fresh process (as a mapped Airflow task gets one), lake outputs only:

1. features: the Spark job (``stages.features_run.run_features``, ``local[2]``), which also splits the
   per-user inputs by user shard and fixes the day's shard count (``io/shards.py``);
2. purchase embeddings per shard, commit; cold-start prior per shard; user embeddings per shard,
   commit (``stages.embeddings_run``); product and campaign embeddings do not depend on the
   users and are made once for all sizes (``embed_catalog`` says how);
3. response model (``stages.response_run.run_response``), the scoring model fit once
   (``scoring_run.fit_scoring_model``), scoring per shard, commit (``scoring_run``).

Peak memory is the whole process tree's RSS (a Spark job's JVM and Python workers included),
sampled every 0.2 s, the largest task of each stage. DynamoDB loads are measured separately on
a local dynalite at one size (``--dynamo-at``, default 100 k) for ``--dynamo-sample`` items of each
table (user_features, user_embeddings, recommendations): items/s and the mean item size, from
which the write capacity for 10 M users within a load window is projected.

    .venv/bin/python benchmarks/nightly_chain.py --users 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".notify" / "numba"))

from include.notify.config import NotifyConfig  # noqa: E402

RUN_DATE = date(2026, 11, 24)
PRODUCTION_USERS = 10_000_000
PRODUCTION_SHARD_SIZE = 250_000


# ------------------------------------------------------------------------------------ processes
def _child(conn: Any, target: str, args: tuple[Any, ...]) -> None:
    import importlib
    import logging

    logging.basicConfig(level=logging.WARNING)
    module, _, name = target.partition(":")
    try:
        result = getattr(importlib.import_module(module), name)(*args)
        conn.send(("ok", result))
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", f"{type(error).__name__}: {error}"))


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        total = root.memory_info().rss
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total
    except psutil.Error:
        return 0


def run_task(target: str, *args: Any) -> dict[str, Any]:
    """``target(*args)`` in a fresh process: its result, wall seconds and peak tree RSS (MB)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    started = time.perf_counter()
    process = ctx.Process(target=_child, args=(child, target, args))
    process.start()
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(process.pid))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    status, result = parent.recv()
    process.join()
    done.set()
    sampler.join()
    if status != "ok":
        raise RuntimeError(f"{target}{args[1:]}: {result}")
    return {"result": result, "seconds": time.perf_counter() - started, "peak_mb": peak[0] / 2**20}


# ------------------------------------------------------------------------------------ data


def generate_lake(config: NotifyConfig, users: int, chunk: int) -> dict[str, int]:
    """Write ``users`` generated users (in chunks with distinct ids) as the curated lake at D."""
    from include.notify.io.lake import write_parquet_file
    from notify_tools.datagen import build_dataset
    from notify_tools.synthetic import typed_curated

    counts: dict[str, int] = {}
    for part, start in enumerate(range(0, users, chunk)):
        data = build_dataset(min(chunk, users - start), RUN_DATE, seed=7 + part)
        prefix = f"{part:03d}"
        data.users["user_id"] = data.users["user_id"].str.replace("U", f"U{prefix}", n=1)
        data.purchases["user_id"] = data.purchases["user_id"].str.replace("U", f"U{prefix}", n=1)
        data.purchases["purchase_id"] = data.purchases["purchase_id"].str.replace("P", f"P{prefix}", n=1)
        data.clickstream["user_id"] = data.clickstream["user_id"].str.replace("U", f"U{prefix}", n=1)
        data.clickstream["event_id"] = data.clickstream["event_id"].str.replace("E", f"E{prefix}", n=1)
        tables = {"users": data.users, "purchase_history": data.purchases, "clickstream": data.clickstream}
        if part == 0:
            tables |= {"products": data.products, "campaigns": data.campaigns}
        for table, frame in tables.items():
            write_parquet_file(
                typed_curated(frame, table), config, "curated", table, RUN_DATE, f"part-{part:05d}.parquet"
            )
            counts[table] = counts.get(table, 0) + len(frame)
        del data, tables
    return counts


def embed_catalog(config: NotifyConfig) -> dict[str, Any]:
    """Product and campaign embeddings, once: they do not depend on the users. Campaigns go
    through the real model; the 39,596 product texts get seeded random unit vectors through the
    same incremental path (``embed_incremental``, same layout): encoding them costs a fixed
    ~3 min on the quiet machine (231 texts/s, benchmarks/results/scoring.md) and took over 20 min
    on the shared one, and no per-user stage depends on what the vectors mean (exact search is
    used for this catalog size either way)."""
    import numpy as np

    from include.notify.io.lake import read_partition_frame, write_partition_frame
    from include.notify.stages import embeddings, embeddings_run

    texts = embeddings_run.prepare_texts(config, "products", RUN_DATE)
    frame, _ = read_partition_frame(config, "embeddings", "product_texts", RUN_DATE)
    rng = np.random.default_rng(11)

    def encode(batch: list[str]) -> np.ndarray:
        return embeddings.normalize_rows(rng.normal(size=(len(batch), 384)).astype(np.float32))

    result = embeddings.embed_incremental(
        frame["product_id"].tolist(), frame["text"].tolist(), config.embedding_model, encode, None
    )
    write_partition_frame(result.frame("product_id"), config, "embeddings", "products", RUN_DATE, result.vectors)
    return {
        "products": {"texts": texts, "vectors": len(result.ids), "encoder": "seeded random unit vectors"},
        "campaigns": {
            "texts": embeddings_run.prepare_texts(config, "campaigns", RUN_DATE),
            "vectors": embeddings_run.embed_items(config, "campaigns", RUN_DATE),
        },
    }


def run_features(config: NotifyConfig) -> dict[str, Any]:
    from include.notify.spark import get_spark
    from include.notify.stages.features_run import run_features as features

    os.environ["PYSPARK_SUBMIT_ARGS"] = "--conf spark.ui.showConsoleProgress=false pyspark-shell"
    spark = get_spark("bench-features", config.spark_master, config.spark_driver_memory)
    try:
        return features(spark, config, RUN_DATE, to_dynamodb=False)
    finally:
        spark.stop()


def shard_count(config: NotifyConfig) -> int:
    from include.notify.io.shards import shard_count as count

    return count(config, RUN_DATE)


# ------------------------------------------------------------------------------------ the chain
EMB = "include.notify.stages.embeddings_run"
SCO = "include.notify.stages.scoring_run"


def run_chain(
    config: NotifyConfig, catalog_lake: Path | None, embeddings_only: bool = False
) -> tuple[list[dict[str, Any]], Path | None]:
    """Every stage for one size; returns per-stage rows and the lake holding the catalog vectors."""
    lake = Path(config.lake_root.removeprefix("file://"))
    rows: list[dict[str, Any]] = []

    def stage(name: str, runs: list[dict[str, Any]], where: str) -> None:
        rows.append({"stage": name, "where": where, "tasks": len(runs), "seconds": sum(r["seconds"] for r in runs),
                     "peak_mb": max(r["peak_mb"] for r in runs), "results": [r["result"] for r in runs]})  # fmt: skip
        print(f"  {name}: {rows[-1]['seconds']:.1f} s in {len(runs)} task(s), peak {rows[-1]['peak_mb']:.0f} MB",
              flush=True)  # fmt: skip

    stage("features (Spark, + split by shard)", [run_task(f"{__name__}:run_features", config)], "Spark")
    count = run_task(f"{__name__}:shard_count", config)["result"]
    if catalog_lake is None:
        stage("product + campaign embeddings (once)", [run_task(f"{__name__}:embed_catalog", config)], "task")
        catalog_lake = lake
    else:
        for table in ("product_texts", "products", "campaign_texts", "campaigns"):
            shutil.copytree(catalog_lake / "embeddings" / table, lake / "embeddings" / table, dirs_exist_ok=True)

    def mapped(step: str, *extra: Any) -> list[dict[str, Any]]:
        return [run_task(step, config, RUN_DATE, shard, *extra) for shard in range(count)]

    stage("purchase embeddings", [*mapped(f"{EMB}:embed_purchase_shard"),
                                  run_task(f"{EMB}:commit_user_shards", config, RUN_DATE, "purchases")], "mapped")  # fmt: skip
    stage("user cold-start prior", mapped(f"{EMB}:user_prior_shard"), "mapped")
    stage("user embeddings", [*mapped(f"{EMB}:embed_user_shard"),
                              run_task(f"{EMB}:commit_user_shards", config, RUN_DATE, "users")], "mapped")  # fmt: skip
    if embeddings_only:
        for row in rows:
            row["shards"] = count
        return rows, catalog_lake
    stage("response model", [run_task("include.notify.stages.response_run:run_response", config, RUN_DATE)], "task")
    stage("scoring model fit (population)", [run_task(f"{SCO}:fit_scoring_model", config, RUN_DATE)], "task")
    stage("scoring", [*mapped(f"{SCO}:score_shard"), run_task(f"{SCO}:commit_scoring", config, RUN_DATE)], "mapped")
    rows += run_planning(config, count)
    for row in rows:
        row["shards"] = count
    return rows, catalog_lake


PLAN = "include.notify.stages.planning_mapped"
# Planned as of the evening before the day, so no slot is too late to be written.
PLAN_NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def run_planning(config: NotifyConfig, count: int) -> list[dict[str, Any]]:
    """The planning DAG's mapped tasks: priors per shard, then plan + write per shard, commit. The
    schedule goes to the benchmark's local dynalite (``config``'s endpoint), so the planning
    stage's time includes its DynamoDB writes (the compute alone is in each task's counts)."""
    rows = []
    for name, runs in (
        ("planning priors", [run_task(f"{PLAN}:plan_prior_shard", config, RUN_DATE, s) for s in range(count)]),
        ("planning (+ schedule writes to local DynamoDB)",
         [*[run_task(f"{PLAN}:plan_shard", config, RUN_DATE, s, None, PLAN_NOW) for s in range(count)],
          run_task(f"{PLAN}:commit_plan", config, RUN_DATE)]),
    ):  # fmt: skip
        rows.append({"stage": name, "where": "mapped", "tasks": len(runs), "seconds": sum(r["seconds"] for r in runs),
                     "peak_mb": max(r["peak_mb"] for r in runs), "results": [r["result"] for r in runs]})  # fmt: skip
        print(f"  {name}: {rows[-1]['seconds']:.1f} s in {len(runs)} task(s), peak {rows[-1]['peak_mb']:.0f} MB",
              flush=True)  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------ DynamoDB
def _item_bytes(value: Any) -> int:
    """DynamoDB's item size rule, approximately: names + values (numbers ~ digits / 2 + 1)."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in {"S", "N", "B", "BOOL", "NULL", "L", "M"}:
        kind, inner = next(iter(value.items()))
        if kind == "S":
            return len(inner.encode())
        if kind == "N":
            return len(inner.replace("-", "").replace(".", "")) // 2 + 1
        if kind == "B":
            return len(inner)
        if kind in {"BOOL", "NULL"}:
            return 1
        if kind == "L":
            return 3 + sum(1 + _item_bytes(v) for v in inner)
        return 3 + sum(len(k) + 1 + _item_bytes(v) for k, v in inner.items())
    return sum(len(k) + _item_bytes(v) for k, v in value.items())


def dynamo_loads(config: NotifyConfig, sample: int) -> list[dict[str, Any]]:
    """Load ``sample`` items of each nightly per-user table into a local dynalite: items/s and size."""
    import numpy as np

    from include.notify.io import shards
    from include.notify.io.dynamo import Dynamo
    from include.notify.io.lake import read_features, read_partition_frame
    from include.notify.stages.embeddings_run import write_vectors
    from include.notify.stages.ingest import to_dynamo_frame  # noqa: F401 - the Spark path's shaping
    from include.notify.stages.scoring import Recommendations, recommendation_items

    dynamo = Dynamo.from_config(config)
    users, vectors = shards.read_shard_frame(config, "embeddings", "users", RUN_DATE, 0, 1)
    users, vectors = users.head(sample), vectors[:sample]
    keep = set(users["user_id"].astype(str))
    features = read_features(config, "user_features", RUN_DATE)
    features = features[features["user_id"].astype(str).isin(keep)]
    feature_records = [_plain(r) for r in features.to_dict("records")]
    ids = users["user_id"].astype(str).to_numpy(object)
    try:
        campaigns, _ = read_partition_frame(config, "recommendations", "campaigns", RUN_DATE)
        products, _ = read_partition_frame(config, "recommendations", "products", RUN_DATE)
        campaigns["reasons"] = campaigns["reasons"].map(list)  # Parquet gives arrays back
        recs = Recommendations(campaigns[campaigns["user_id"].astype(str).isin(keep)],
                               products[products["user_id"].astype(str).isin(keep)])  # fmt: skip
        rec_items = recommendation_items(recs, ids, np.zeros(len(ids), bool), RUN_DATE, "all-MiniLM-L6-v2", 384)
    except FileNotFoundError:  # a size run up to the user embeddings only
        rec_items = []
    rows = []
    for table, load, records in (
        ("user_features", lambda: dynamo.put_items("user_features", feature_records), feature_records),
        ("user_embeddings", lambda: write_vectors(dynamo, "users", RUN_DATE, users, vectors), None),
        ("recommendations", lambda: dynamo.put_items("recommendations", rec_items), rec_items),
    ):
        if records is not None and not records:
            continue
        started = time.perf_counter()
        written = load()
        seconds = time.perf_counter() - started
        if records is None:
            item = dynamo.get("user_embeddings", {"user_id": ids[0]})
            sizes = [_item_bytes(dynamo.serialize(item))]
        else:
            sizes = [_item_bytes(dynamo.serialize(r)) for r in records[:2000]]
        rows.append({"table": table, "items": written, "seconds": seconds, "items_per_s": written / seconds,
                     "mean_bytes": float(np.mean(sizes))})  # fmt: skip
        print(f"  DynamoDB {table}: {written} items in {seconds:.1f} s, ~{rows[-1]['mean_bytes']:.0f} B each",
              flush=True)  # fmt: skip
    return rows


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    """A lake row as a DynamoDB record: arrays to lists, missing values left out."""
    import numpy as np
    import pandas as pd

    out = {}
    for key, value in record.items():
        if isinstance(value, np.ndarray):
            out[key] = value.tolist()
        elif value is None or (np.isscalar(value) and pd.isna(value)):
            continue
        elif isinstance(value, pd.Timestamp | date):
            out[key] = value.isoformat()
        else:
            out[key] = value.item() if isinstance(value, np.generic) else value
    return out


# ------------------------------------------------------------------------------------ report
def _fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def write_report(path: Path, command: str, sizes: dict[int, dict[str, Any]], dynamo: list[dict[str, Any]],
                 dynamo_at: int | None, shard_size: int, not_run: list[str]) -> str:  # fmt: skip
    longest = max(sizes.values(), key=lambda d: len(d["rows"]))["rows"]
    stages = [r["stage"] for r in longest if "once" not in r["stage"]]
    head = "| stage | where | " + " | ".join(f"{n:,} users: time / peak / tasks" for n in sizes) + " |"
    lines = [
        "# Nightly per-user chain: time and peak memory per stage",
        "",
        f"Command: `{command}` ({platform.node() and 'this machine'}: {os.cpu_count()} cores shared with other "
        f"sessions, Python {platform.python_version()}). Shard size {shard_size:,} users "
        "(`NOTIFY_USER_SHARD_SIZE`); every task a fresh process, run one after another; peak = the task's "
        "whole process tree RSS (Spark's JVM included), the largest task of the stage; lake outputs only.",
        "",
        head,
        "|---|---|" + "---|" * len(sizes),
    ]
    for name in stages:
        cells = []
        for data in sizes.values():
            row = next((r for r in data["rows"] if r["stage"] == name), None)
            cells.append(f"{_fmt_s(row['seconds'])} / {row['peak_mb']:,.0f} MB / {row['tasks']}" if row else "not run")
        where = next(r for r in longest if r["stage"] == name)["where"]
        lines.append(f"| {name} | {where} | " + " | ".join(cells) + " |")
    totals = [sum(r["seconds"] for r in d["rows"] if "once" not in r["stage"]) for d in sizes.values()]
    lines.append("| **chain total** | | " + " | ".join(f"**{_fmt_s(t)}**" for t in totals) + " |")
    lines.append("| shards | | " + " | ".join(str(d["rows"][0]["shards"]) for d in sizes.values()) + " |")
    gen = " · ".join(f"{n:,}: {_fmt_s(d['generate_seconds'])} ({d['generated']})" for n, d in sizes.items())
    lines += ["", f"Data generation (not part of the chain): {gen}."]
    once = [r for d in sizes.values() for r in d["rows"] if "once" in r["stage"]]
    if once:
        lines.append(f"Product + campaign embeddings (users do not change them; encoded once): "
                     f"{_fmt_s(once[0]['seconds'])}, peak {once[0]['peak_mb']:,.0f} MB.")  # fmt: skip
    earlier = sorted({d["earlier"] for d in sizes.values() if d.get("earlier")})
    if earlier:
        lines.append(f"Sizes {', '.join(f'{n:,}' for n, d in sizes.items() if d.get('earlier'))} come from an "
                     f"earlier run on the same code: `{'`, `'.join(earlier)}`.")  # fmt: skip
    if not_run:
        lines += ["", "Not run: " + "; ".join(not_run)]
    if dynamo:
        lines += ["", f"## DynamoDB loads (local dynalite, {dynamo_at:,}-user lake, sample per table)", "",
                  "| table | items | seconds | items/s | mean item size | WCU per item |", "|---|---|---|---|---|---|"]  # fmt: skip
        for d in dynamo:
            wcu = math.ceil(d["mean_bytes"] / 1024)
            lines.append(f"| {d['table']} | {d['items']:,} | {d['seconds']:.1f} | {d['items_per_s']:,.0f} | "
                         f"{d['mean_bytes']:,.0f} B | {wcu} |")  # fmt: skip
    lines += ["", *projection(sizes, dynamo)]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def _per_task(sizes: dict[int, dict[str, Any]], name: str) -> list[tuple[float, float, float]]:
    """(users per task, seconds per task, peak MB) of a stage at each measured size."""
    points = []
    for users, data in sorted(sizes.items()):
        row = next((r for r in data["rows"] if r["stage"] == name), None)
        if row is not None:
            tasks = row["shards"] if row["where"] == "mapped" else 1
            points.append((users / tasks, row["seconds"] / tasks, row["peak_mb"]))  # a commit counts in its shards
    return points


def _at(points: list[tuple[float, float, float]], users: float) -> tuple[float, float] | None:
    """Seconds and MB at ``users`` per task, linear through the two largest measured sizes (fixed
    cost + per-user cost); None with one size (the fixed cost cannot be told from the per-user one)."""
    if len(points) < 2 or points[-1][0] == points[-2][0]:
        return None
    (u0, s0, m0), (u1, s1, m1) = points[-2], points[-1]
    return s1 + (s1 - s0) / (u1 - u0) * (users - u1), m1 + (m1 - m0) / (u1 - u0) * (users - u1)


def projection(sizes: dict[int, dict[str, Any]], dynamo: list[dict[str, Any]]) -> list[str]:
    """10 M users on the production engines: per task, linear through the two largest sizes."""
    shards = 1 << max(0, math.ceil(PRODUCTION_USERS / PRODUCTION_SHARD_SIZE) - 1).bit_length()  # io.shards.shards_for
    names = [r["stage"] for r in max(sizes.values(), key=lambda d: len(d["rows"]))["rows"] if "once" not in r["stage"]]
    lines = [f"## Projection to {PRODUCTION_USERS:,} users", "",
             f"{shards} shards of {PRODUCTION_SHARD_SIZE:,} users (the default `user_shard_size`). A task's time and "
             "memory are taken as fixed cost + per-user cost, fitted through the two largest sizes measured for "
             "that stage (a stage measured at one size only is not projected: its fixed cost, process start and "
             "imports, cannot be told from its per-user cost).", "",
             "| stage | runs on | tasks | per task (projected) | stage wall time (projected) |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name in names:
        points = _per_task(sizes, name)
        row = next(r for d in sizes.values() for r in d["rows"] if r["stage"] == name)
        mapped = row["where"] == "mapped"
        at = _at(points, PRODUCTION_SHARD_SIZE if mapped else PRODUCTION_USERS)
        if row["where"] == "Spark":
            where, tasks = "EMR Serverless (Spark partitions by user itself)", "1 job"
        elif mapped:
            where, tasks = "MWAA worker, one mapped task per shard (`.expand`)", str(shards)
        else:
            where, tasks = "one task over the whole population", "1"
        if at is None:
            lines.append(f"| {name} | {where} | {tasks} | not projected (one size measured) | - |")
            continue
        seconds, mb = at
        wall = _fmt_s(seconds * shards / 16) + " on 16 worker slots" if mapped else _fmt_s(seconds) + " on this machine"
        if row["where"] == "Spark":
            wall = f"{_fmt_s(seconds / 16)} at 16x this machine's 2 cores (if it scaled linearly)"
        lines.append(f"| {name} | {where} | {tasks} | {_fmt_s(seconds)}, ~{mb:,.0f} MB | {wall} |")
    if dynamo:
        window_s = 2 * 3600
        lines += ["", f"DynamoDB nightly loads at {PRODUCTION_USERS:,} users, written within a {window_s // 3600} h "
                  "window (provisioned write capacity, 1 WCU = one 1 KB write a second):", "",
                  "| table | items a night | WCU per item | WCU for the window | this machine's local endpoint would take |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for d in dynamo:
            items = PRODUCTION_USERS
            wcu = math.ceil(d["mean_bytes"] / 1024)
            lines.append(f"| {d['table']} | {items:,} | {wcu} | {math.ceil(items * wcu / window_s):,} | "
                         f"{_fmt_s(items / d['items_per_s'])} |")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--shard-size", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=100_000, help="users generated per chunk")
    parser.add_argument("--dynamo-at", type=int, default=100_000)
    parser.add_argument("--dynamo-sample", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "nightly_chain.md")
    parser.add_argument("--work", type=Path, default=ROOT / ".notify" / "bench-chain")
    parser.add_argument(
        "--embeddings-only",
        type=int,
        nargs="*",
        default=[],
        help="sizes run only up to the user embeddings (no response model or scoring)",
    )
    parser.add_argument("--previous", type=Path, help="an earlier run's .json whose sizes join the table")
    parser.add_argument("--resume-on", type=Path, help="a kept lake of one size: run the stages from --resume-from on")
    parser.add_argument("--resume-users", type=int, help="the size (users) of --resume-on's lake")
    parser.add_argument("--resume-from", choices=("fit", "planning"), default="planning")
    parser.add_argument("--fit-users", type=int, default=100_000, help="NOTIFY_SCORING_FIT_USERS for the chain")
    args = parser.parse_args(argv)
    command = "python benchmarks/nightly_chain.py " + " ".join(argv if argv is not None else sys.argv[1:])
    shutil.rmtree(args.work, ignore_errors=True)
    from include.notify.io.dynamo import Dynamo
    from notify_tools.services import free_port, start_service

    # The stages record their counts in pipeline_runs, and the DynamoDB loads are measured here.
    service = start_service("dynamodb", free_port(), Path(tempfile.mkdtemp(prefix="notify-bench-dynamo-")))
    try:
        return _sizes(args, command, service.endpoint, Dynamo)
    finally:
        service.stop()


def _sizes(args: argparse.Namespace, command: str, endpoint: str, dynamo_client: Any) -> int:
    sizes: dict[int, dict[str, Any]] = {}
    dynamo: list[dict[str, Any]] = []
    if args.previous:  # sizes measured by an earlier run of this script (said in the report)
        earlier = json.loads(args.previous.read_text())
        sizes = {
            int(n): {**d, "earlier": earlier.get("command", str(args.previous))} for n, d in earlier["sizes"].items()
        }
        dynamo = earlier.get("dynamo") or []
    # Product and campaign vectors do not depend on the users: encoded once, kept for later runs.
    cache = args.work.parent / "bench-chain-catalog"
    catalog_lake: Path | None = cache if (cache / "embeddings" / "products").exists() else None
    not_run: list[str] = []
    if args.resume_on:  # the last stages on a kept lake; their rows replace that size's
        return _resume(args, command, endpoint, dynamo_client, sizes, dynamo)
    if not args.users and args.previous:  # only re-render the report of an earlier run
        print(write_report(args.out, earlier.get("command", ""), sizes, dynamo, args.dynamo_at, args.shard_size,
                           earlier.get("not_run", [])))  # fmt: skip
    for users in args.users:
        lake = args.work / f"lake-{users}"
        config = NotifyConfig(state_dir=args.work / f"state-{users}", lake_uri=lake.as_uri(),
                              user_shard_size=args.shard_size, spark_master="local[2]", spark_driver_memory="3g",
                              scoring_fit_users=args.fit_users,
                              dynamodb_endpoint_url=endpoint, table_prefix=f"bench{users}_")  # fmt: skip
        dynamo_client.from_config(config).create_tables()
        print(f"{users:,} users", flush=True)
        try:
            generated = run_task(f"{__name__}:generate_lake", config, users, args.chunk)
            print(f"  generated in {generated['seconds']:.1f} s: {generated['result']}", flush=True)
            rows, catalog_lake = run_chain(config, catalog_lake, users in args.embeddings_only)
        except RuntimeError as error:
            not_run.append(f"{users:,} users: {error}")
            print(f"  failed: {error}", flush=True)
            break
        sizes[users] = {"rows": rows, "generate_seconds": generated["seconds"], "generated": generated["result"]}
        if users == args.dynamo_at:
            try:
                dynamo = run_task(f"{__name__}:dynamo_loads", config, args.dynamo_sample)["result"]
            except RuntimeError as error:
                not_run.append(f"DynamoDB loads at {users:,} users: {error}")
                print(f"  DynamoDB loads failed: {error}", flush=True)
        json_path = args.out.with_suffix(".json")
        record = {"command": command, "sizes": sizes, "dynamo": dynamo, "not_run": not_run}
        json_path.write_text(json.dumps(record, indent=1, default=str))
        print(write_report(args.out, command, sizes, dynamo, args.dynamo_at, args.shard_size, not_run), flush=True)
        if catalog_lake == lake:
            for table in ("product_texts", "products", "campaign_texts", "campaigns"):
                shutil.copytree(lake / "embeddings" / table, cache / "embeddings" / table, dirs_exist_ok=True)
            catalog_lake = cache
        shutil.rmtree(lake, ignore_errors=True)
    return 0


def _resume(args: argparse.Namespace, command: str, endpoint: str, dynamo_client: Any,
            sizes: dict[int, dict[str, Any]], dynamo: list[dict[str, Any]]) -> int:  # fmt: skip
    """The stages from the scoring-model fit (or from planning) on, on a lake an earlier run kept."""
    users = int(args.resume_users)
    config = NotifyConfig(state_dir=args.work / f"state-{users}", lake_uri=args.resume_on.resolve().as_uri(),
                          user_shard_size=args.shard_size, dynamodb_endpoint_url=endpoint,
                          scoring_fit_users=args.fit_users, table_prefix=f"bench{users}_")  # fmt: skip
    dynamo_client.from_config(config).create_tables()
    print(f"{users:,} users: stages from {args.resume_from} on {args.resume_on}", flush=True)
    count = run_task(f"{__name__}:shard_count", config)["result"]
    rows = []
    if args.resume_from == "fit":
        for name, runs in (
            ("scoring model fit (population)", [run_task(f"{SCO}:fit_scoring_model", config, RUN_DATE)]),
            ("scoring", [*[run_task(f"{SCO}:score_shard", config, RUN_DATE, s) for s in range(count)],
                         run_task(f"{SCO}:commit_scoring", config, RUN_DATE)]),
        ):  # fmt: skip
            where = "task" if name.startswith("scoring model") else "mapped"
            rows.append({"stage": name, "where": where, "tasks": len(runs), "seconds": sum(r["seconds"] for r in runs),
                         "peak_mb": max(r["peak_mb"] for r in runs), "results": [r["result"] for r in runs]})  # fmt: skip
            print(f"  {name}: {rows[-1]['seconds']:.1f} s, peak {rows[-1]['peak_mb']:.0f} MB", flush=True)
    rows += run_planning(config, count)
    for row in rows:
        row["shards"] = count
    data = sizes.setdefault(users, {"rows": [], "generate_seconds": 0.0, "generated": {}})
    names = {r["stage"] for r in rows}
    data["rows"] = [r for r in data["rows"] if r["stage"] not in names] + rows
    data["resume_command"] = command
    if args.resume_from == "fit" and users == args.dynamo_at:
        dynamo = run_task(f"{__name__}:dynamo_loads", config, args.dynamo_sample)["result"]
    record = {"command": command, "sizes": sizes, "dynamo": dynamo, "not_run": []}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str))
    print(write_report(args.out, command, sizes, dynamo, args.dynamo_at, args.shard_size, []), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
