"""Fingerprint every output of Notify's daily cycle on a fixed seed, to prove a refactor changes no behaviour.

    NOTIFY_STATE_DIR=/tmp/notify-fp PYTHONPATH=. .venv/bin/python benchmarks/cycle_fingerprint.py \\
        --out /tmp/fingerprint.json [--users 300 --days 2 --seed 7 --products 2000] [--dump DIR]
    .venv/bin/python benchmarks/cycle_fingerprint.py --compare A.json B.json

Runs ``run_closed_loop`` with ``policies=["notify"]`` on a private dynalite and a private Tansu
broker (free loopback ports) that this script starts and keeps alive after the loop, then scans
every DynamoDB table of the run and walks the policy's lake. The output JSON is
``{"dynamodb": {logical_table: {"count", "hash"}}, "lake": {relative_path: {"count", "hash"}}}``.
``--compare`` prints the entries that differ and exits 1 if any do. ``--dump DIR`` also writes
the canonical rows of every entry (one sorted JSON line per row), to see *what* differs.

Services and state: ``NOTIFY_STATE_DIR`` must be set (a folder outside the repository); the run
lives in ``$NOTIFY_STATE_DIR/cycle_fingerprint`` (wiped first). dynalite is found the way
``services.py`` finds it, in ``$NOTIFY_STATE_DIR/node/node_modules`` (``make setup`` lays it out
in ``.notify/node``); ``--node-dir`` links an existing ``node`` folder there instead.

What is hashed:
- DynamoDB: the logical name is the table name less the run's prefix ``cl<run_id>_notify_``
  (run_id is random; private services hold only this run's tables). Every item is scanned raw
  (boto3 ``TypeDeserializer``), canonicalised and hashed.
- Lake: files are grouped by folder. Tabular files of a folder (``*.parquet`` rows read with
  pyarrow, not bytes; ``*.csv`` rows parsed) form one entry named by the folder, e.g.
  ``curated/users/dt=2024-01-02``, whatever their file names (Spark's ``part-<uuid>``, stream
  files ``stream-<topic with run id>-<partition>-<first offset>.csv``, one per batch).
  Every other file is its own entry ``<folder>/<file>``: ``*.json`` hashed as parsed content
  (count 1), ``*.npy`` as array rows (count = rows), anything else as bytes (count 1).
  Skipped: ``_SUCCESS`` markers, ``*.crc`` checksums and hidden files (Spark bookkeeping).
- A row's canonical form is JSON with sorted keys; floats rounded to 9 significant digits (and
  -0.0 as 0.0) so summation order / BLAS-thread noise does not matter; bytes as their sha256
  (float32 vectors are thus compared exactly); timestamps and dates as ISO strings; strings
  that hold a JSON object or list are parsed (so exclusions apply inside them). An entry's hash
  is the sha256 of its rows' canonical lines sorted, i.e. independent of row and file order.

Excluded, because they differ between two runs of the same code (found by running this twice
on the same commit and diffing ``--dump`` output):
- ``written_at`` (``runs/<dag>/dt=D/<stage>.json`` and ``pipeline_runs``): ``time.time()`` when
  a stage's counts were written (``lake.write_run_counts``).
- ``seconds`` at any depth (stage counts, stream batches, ``details.gx.seconds``) and
  ``load_seconds`` (``details``): measured durations.
- ``generated_at`` (``recommendations``): ``datetime.now()`` when scoring ran.
- ``sent_wall``, ``inflight_at``, ``owner``, ``inflight_owner``, ``token`` (schedule items and
  ``dispatch_leases``): the dispatcher's wall clock, its random owner id and the fencing token
  (how many owners took a slice depends on timing).
Kept, though wall-clock by nature, because this scenario never writes them (they are absent in
both runs, so a run that starts writing them is a change): ``cancelled_at`` (cancellations by the
stream's orders/opt-outs; here only dispatch cancels, without it), ``lease_owner`` /
``lease_until`` (removed once an item is sent). Add them to ``EXCLUDED_FIELDS`` if they appear.

Normalised: the run id (``cl<6 hex>`` as in ``cl1a2b3c_notify_`` / ``cl1a2b3c.notify.events``)
becomes ``cl<run>`` in strings, dict keys (``by_topic`` / ``committed`` / ``lag`` of stream
batches are keyed by topic) and lake paths; the random suffix of a stream batch's stage
(``batch#2026-11-03T23:59:00Z#<uuid4 8 hex>``, the range key of its ``pipeline_runs`` item)
becomes ``#<batch>``, and that of a stream run's record (``run#<time>#<8 hex>``) ``#<run>``. The Kafka offsets in a stream batch's ``committed`` counts are kept:
the producers are flushed before each drain, and they were equal in both runs.

Notify imports (all in ``_notify_api``; edit there when modules move):
``notify_tools.simulator.run_closed_loop``, ``notify_tools.services.start_service`` and
``free_port``, ``include.notify.config.load_config``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POLICY = "notify"
SIGNIFICANT_DIGITS = 9
TABLE_PREFIX = re.compile(rf"^cl[0-9a-f]{{6}}_{POLICY}_")
TABULAR = (".parquet", ".csv")
SKIPPED_NAMES = {"_SUCCESS"}

# Field name -> why it is excluded (dropped at any nesting level, in DynamoDB items and lake rows).
EXCLUDED_FIELDS: dict[str, str] = {
    "written_at": "time.time() when a stage's run counts were written",
    "seconds": "measured duration of a stage or stream batch",
    "load_seconds": "measured duration of a DynamoDB load",
    "generated_at": "wall clock when scoring wrote the recommendations",
    "sent_wall": "wall clock when dispatch marked an item sent",
    "inflight_at": "wall clock of a dispatch lease's batch in flight",
    "owner": "a dispatch lease's owner (host, process id, random part)",
    "inflight_owner": "the owner of a dispatch lease's batch in flight",
    "token": "a dispatch lease's fencing token: how many owners took the slice, which depends on timing",
}
# Random parts of values: pattern -> replacement.
NORMALISED_STRINGS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"cl[0-9a-f]{6}(?=[._-])"), "cl<run>"),
    (re.compile(r"^(batch#[^#]+)#[0-9a-f]{8}$"), r"\1#<batch>"),
    (re.compile(r"^(run#[^#]+)#[0-9a-f]{8}$"), r"\1#<run>"),
)


def _notify_api() -> SimpleNamespace:
    """The only Notify imports of this script."""
    from include.notify.config import load_config
    from notify_tools.services import free_port, start_service
    from notify_tools.simulator import run_closed_loop

    return SimpleNamespace(
        load_config=load_config, free_port=free_port, start_service=start_service, run_closed_loop=run_closed_loop
    )


# --------------------------------------------------------------------------- canonical rows
def canonical(value: Any) -> Any:
    """A JSON-ready, deterministic form of a value (see the module docstring)."""
    if isinstance(value, dict):
        return {_normalised(str(k)): canonical(v) for k, v in value.items() if str(k) not in EXCLUDED_FIELDS}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else _float(float(value))
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$sha256": hashlib.sha256(bytes(value)).hexdigest()}
    if type(value).__name__ == "Binary":  # boto3's wrapper of a DynamoDB B value
        return canonical(bytes(value.value))
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, str):
        return _string(value)
    if hasattr(value, "item"):  # a NumPy scalar
        return canonical(value.item())
    return _string(str(value))


def _float(value: float) -> float | str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    rounded = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return 0.0 if rounded == 0 else rounded


def _string(value: str) -> Any:
    text = value.strip()
    if text[:1] in "{[" and text[-1:] in "}]":
        try:
            return canonical(json.loads(text))
        except ValueError:
            pass
    return _normalised(value)


def _normalised(value: str) -> str:
    for pattern, replacement in NORMALISED_STRINGS:
        value = pattern.sub(replacement, value)
    return value


def line(row: Any) -> str:
    return json.dumps(canonical(row), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry(lines: list[str]) -> dict[str, Any]:
    lines.sort()
    digest = hashlib.sha256()
    for text in lines:
        digest.update(text.encode())
        digest.update(b"\n")
    return {"count": len(lines), "hash": digest.hexdigest()}


# --------------------------------------------------------------------------- DynamoDB
def dynamodb_rows(endpoint: str) -> dict[str, list[str]]:
    """Canonical lines of every item of every table of the run, keyed by logical table name."""
    import boto3
    from boto3.dynamodb.types import TypeDeserializer

    client = boto3.client(
        "dynamodb", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="local", aws_secret_access_key="local",
    )  # fmt: skip
    deserializer = TypeDeserializer()
    names = [n for page in client.get_paginator("list_tables").paginate() for n in page["TableNames"]]
    ours = [n for n in names if TABLE_PREFIX.match(n)]
    if not ours:
        raise SystemExit(f"no table matches {TABLE_PREFIX.pattern} among {names}")
    tables: dict[str, list[str]] = {}
    for name in sorted(ours):
        rows = tables.setdefault(TABLE_PREFIX.sub("", name), [])
        for page in client.get_paginator("scan").paginate(TableName=name, ConsistentRead=True):
            rows += [line({k: deserializer.deserialize(v) for k, v in item.items()}) for item in page["Items"]]
    return tables


# --------------------------------------------------------------------------- lake
def lake_rows(lake: Path) -> dict[str, list[str]]:
    """Canonical lines of every lake entry (a folder's tabular rows, or one other file)."""
    entries: dict[str, list[str]] = {}
    for folder, _dirs, files in sorted(os.walk(lake)):
        relative = _normalised(Path(folder).relative_to(lake).as_posix())
        for name in sorted(files):
            if name in SKIPPED_NAMES or name.startswith(".") or name.endswith(".crc"):
                continue
            path = Path(folder) / name
            if name.endswith(TABULAR):
                entries.setdefault(relative, []).extend(line(row) for row in _tabular(path))
            else:
                key = f"{relative}/{_normalised(name)}"
                entries.setdefault(key, []).extend(line(row) for row in _other(path))
    return entries


def _tabular(path: Path) -> Iterator[Any]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
        return
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            yield {k: _cell(v) for k, v in row.items()}


NUMBER = re.compile(r"^-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")


def _cell(value: str | None) -> Any:
    """CSV cells stay strings, except decimals (rounded like every float)."""
    if value is not None and NUMBER.match(value) and ("." in value or "e" in value.lower()):
        return _float(float(value))
    return value


def _other(path: Path) -> Iterable[Any]:
    if path.suffix == ".json":
        return [json.loads(path.read_text(encoding="utf-8"))]
    if path.suffix == ".npy":
        import numpy as np

        array = np.load(path, allow_pickle=False)
        return [row.tolist() for row in array] if array.ndim else [array.tolist()]
    return [path.read_bytes()]


# --------------------------------------------------------------------------- run
def run_cycle(args: argparse.Namespace) -> dict[str, Any]:
    api = _notify_api()
    if not os.environ.get("NOTIFY_STATE_DIR"):
        raise SystemExit("set NOTIFY_STATE_DIR to a folder outside the repository (it holds dynalite under node/)")
    root = Path(os.environ["NOTIFY_STATE_DIR"]).resolve()
    if args.node_dir and not (root / "node").exists():
        root.mkdir(parents=True, exist_ok=True)
        (root / "node").symlink_to(Path(args.node_dir).resolve(), target_is_directory=True)
    state = root / "cycle_fingerprint"
    shutil.rmtree(state, ignore_errors=True)
    for key, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(root / "numba"))

    services = []
    try:
        for name in ("dynamodb", "kafka"):
            services.append(api.start_service(name, api.free_port(), state / "services"))
        dynamodb, kafka = services
        # As run_closed_loop builds its private config, but with services that outlive the loop.
        environment = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
        config = api.load_config(environment).replace(
            state_dir=state, dynamodb_endpoint_url=dynamodb.endpoint, kafka_bootstrap=kafka.endpoint,
            spark_master="local[2]",
        )  # fmt: skip
        began = time.monotonic()
        api.run_closed_loop(
            users=args.users, days=args.days, seed=args.seed, out_dir=state / "report", config=config,
            state_dir=state, products_limit=args.products or None, policies=[POLICY],
            echo=lambda text: print(text, flush=True),
        )  # fmt: skip
        loop_seconds = time.monotonic() - began
        tables = dynamodb_rows(dynamodb.endpoint)
        lake = lake_rows(state / POLICY / "lake")
    finally:
        for service in services:
            service.stop()
    if args.dump:
        _dump(Path(args.dump), {"dynamodb": tables, "lake": lake})
    print(f"closed loop {loop_seconds:.0f}s; {len(tables)} tables, {len(lake)} lake entries", flush=True)
    return {
        "parameters": {"users": args.users, "days": args.days, "seed": args.seed, "products": args.products},
        "dynamodb": {name: entry(rows) for name, rows in sorted(tables.items())},
        "lake": {name: entry(rows) for name, rows in sorted(lake.items())},
    }


def _dump(folder: Path, groups: dict[str, dict[str, list[str]]]) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    for group, entries in groups.items():
        for name, rows in entries.items():
            path = folder / group / (name.replace("/", "__") + ".jsonl")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{row}\n" for row in sorted(rows)), encoding="utf-8")


# --------------------------------------------------------------------------- compare
def compare(first: Path, second: Path) -> int:
    a, b = (json.loads(p.read_text()) for p in (first, second))
    differences = []
    for group in ("dynamodb", "lake"):
        left, right = a.get(group, {}), b.get(group, {})
        for name in sorted(set(left) | set(right)):
            x, y = left.get(name), right.get(name)
            if x == y:
                continue
            show = [f"{v['count']} {v['hash'][:12]}" if v else "(missing)" for v in (x, y)]
            differences.append((group, name, *show))
    if a.get("parameters") != b.get("parameters"):
        differences.append(("parameters", "", json.dumps(a.get("parameters")), json.dumps(b.get("parameters"))))
    if not differences:
        entries = sum(len(a.get(g, {})) for g in ("dynamodb", "lake"))
        print(f"identical: {entries} entries ({len(a.get('dynamodb', {}))} tables, {len(a.get('lake', {}))} lake)")
        return 0
    widths = [
        max(len(str(row[i])) for row in [("group", "entry", first.name, second.name), *differences]) for i in range(4)
    ]
    for row in [("group", "entry", str(first), str(second)), *differences]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"{len(differences)} differ")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"))
    parser.add_argument("--out", type=Path, help="where to write the fingerprint JSON")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--products", type=int, default=2000, help="catalog sample size (0 = the full catalog)")
    parser.add_argument("--node-dir", help="a folder holding node_modules/dynalite, linked as $NOTIFY_STATE_DIR/node")
    parser.add_argument("--dump", type=Path, help="also write every entry's canonical rows under this folder")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if not args.out:
        parser.error("--out is required unless --compare is given")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    fingerprint = run_cycle(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fingerprint, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out} in {time.monotonic() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
