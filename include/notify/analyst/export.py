"""Export DynamoDB tables to Parquet for analysts (``notify export`` / ``make export``).

A full read is a parallel Scan: fine for an analyst's occasional export, never used by dispatch.
Nested values (ranked lists, engagement by hour) stay nested; embedding bytes are decoded to
float lists so notebooks can use them directly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import TABLES, Dynamo, bytes_to_vector
from include.notify.schemas import PRIVATE_USER_FIELDS

log = logging.getLogger(__name__)


def _analyst_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return bytes_to_vector(value).tolist()
    if isinstance(value, set):
        return sorted(value)
    return value


def export_tables(
    config: NotifyConfig,
    out_dir: Path,
    tables: list[str] | None = None,
    dynamo: Dynamo | None = None,
    include_private: bool = False,
) -> dict[str, tuple[int, Path]]:
    """Write ``<out_dir>/<table>.parquet`` per table; returns rows and path per table.

    ``email`` and ``password_hash`` (``schemas.PRIVATE_USER_FIELDS``) never leave ``notify_users``
    unless ``include_private`` asks for them: they are dropped from every exported item.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    dynamo = dynamo or Dynamo.from_config(config)
    wanted = tables or [spec.name for spec in TABLES]
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, tuple[int, Path]] = {}
    for name in wanted:
        dropped = () if include_private else PRIVATE_USER_FIELDS
        rows = [
            {k: _analyst_value(v) for k, v in item.items() if k not in dropped}
            for item in dynamo.scan(name, segments=4)
        ]
        frame = pd.DataFrame(rows)
        path = out_dir / f"{name}.parquet"
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Columns whose items differ in shape (rare, e.g. an attribute added later) go as JSON text.
            for column in frame.columns:
                if frame[column].map(lambda v: isinstance(v, list | dict)).any():
                    frame[column] = frame[column].map(lambda v: json.dumps(v, default=str) if v is not None else None)
            table = pa.Table.from_pandas(frame, preserve_index=False)
        pq.write_table(table, path)
        results[name] = (len(frame), path)
        log.info("exported %s: %d rows -> %s", name, len(frame), path)
    return results
