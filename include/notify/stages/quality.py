"""Data rules: row-level quarantine in Spark and the Great Expectations gate on curated output.

The rules are those of ``schemas.py`` (types, required, allowed values, ranges, max length, key
uniqueness within a delivery, references, safe campaign templates). Each failing row gets a
``_reason``: ``;``-separated ``rule:column=value`` entries, so an operator can see at a glance
why a row was refused. The same rules, translated to GX expectations, must then hold on the
curated output; a failure there means the quarantine has a bug, and the run stops.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from include.notify.schemas import PRIVATE_USER_FIELDS, RawTable
from include.notify.schemas import Column as RuleColumn

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

log = logging.getLogger(__name__)

REASON_SEPARATOR = ";"
MAX_VALUE_IN_REASON = 60
# What quarantine rows, reasons and gate samples show instead of a private value.
PRIVATE_MASK = "***"
# The GX gate validates at most this many curated rows in pandas; the full check runs in Spark.
GX_SAMPLE_ROWS = 10_000
# Templates are checked only for these columns of the campaigns table.
TEMPLATE_COLUMNS = ("template_short", "template_long")

# Strict textual forms (the raw contract): a lenient cast would accept "3.5" as an int or "1e3x".
INT_PATTERN = r"^[+-]?[0-9]{1,10}$"
DOUBLE_PATTERN = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:?[0-9]{2})?$"
)


class DataContractError(RuntimeError):
    """The curated output broke an expectation: the quarantine let a bad row through."""


def _shown(value: Column) -> Column:
    """The offending value as it appears in a reason: truncated, never null."""
    from pyspark.sql import functions as sf

    return sf.coalesce(sf.substring(value, 1, MAX_VALUE_IN_REASON), sf.lit(""))


def typed_value(column: RuleColumn) -> Column:
    """The raw string column converted to its type; null when it is absent or not of the type."""
    from pyspark.sql import functions as sf

    raw = sf.trim(sf.col(column.name))
    if column.type == "string":
        return sf.col(column.name)
    if column.type == "int":
        return sf.when(raw.rlike(INT_PATTERN), raw.try_cast("int"))
    if column.type == "double":
        return sf.when(raw.rlike(DOUBLE_PATTERN), raw.try_cast("double"))
    if column.type == "boolean":
        return sf.when(sf.lower(raw) == "true", sf.lit(True)).when(sf.lower(raw) == "false", sf.lit(False))
    if column.type == "date":
        return sf.when(raw.rlike(DATE_PATTERN), raw.try_cast("date"))
    if column.type == "timestamp":
        return sf.when(raw.rlike(TIMESTAMP_PATTERN), raw.try_cast("timestamp"))
    raise ValueError(f"unsupported column type {column.type!r} for {column.name}")


def column_problems(column: RuleColumn) -> list[Column]:
    """One expression per rule of ``column``: the reason text when the row breaks it, else null."""
    from pyspark.sql import functions as sf

    raw = sf.col(column.name)
    present = raw.isNotNull() & (sf.trim(raw) != "")
    typed = typed_value(column)
    name = column.name
    problems = []
    # A reason names the rule and the column; of a private column never the value.
    display = sf.when(raw.isNotNull(), sf.lit(PRIVATE_MASK)) if name in PRIVATE_USER_FIELDS else raw
    if column.required:
        problems.append(sf.when(~present, sf.lit(f"missing:{name}")))
    if column.type != "string":
        problems.append(sf.when(present & typed.isNull(), sf.concat(sf.lit(f"bad_type:{name}="), _shown(display))))
    if column.allowed is not None:
        problems.append(
            sf.when(present & ~raw.isin(*column.allowed), sf.concat(sf.lit(f"not_allowed:{name}="), _shown(display)))
        )
    if column.min_value is not None:
        problems.append(
            sf.when(typed < sf.lit(column.min_value), sf.concat(sf.lit(f"out_of_range:{name}="), _shown(display)))
        )
    if column.max_value is not None:
        problems.append(
            sf.when(typed > sf.lit(column.max_value), sf.concat(sf.lit(f"out_of_range:{name}="), _shown(display)))
        )
    if column.max_length is not None:
        problems.append(
            sf.when(
                sf.length(raw) > column.max_length,
                sf.concat(sf.lit(f"too_long:{name}="), sf.length(raw).cast("string"), sf.lit(" chars")),
            )
        )
    return problems


def _template_problem(text: str | None) -> str | None:
    # Imported here so Spark's Python workers load the sandbox only for the campaigns table.
    from include.notify.stages.templates import template_problem

    return template_problem(text) if text is not None else None


def template_problems(table: RawTable) -> list[Column]:
    """For campaigns: ``unsafe_template:<column>: why`` when a template may not be rendered."""
    from pyspark.sql import functions as sf
    from pyspark.sql.types import StringType

    if table.name != "campaigns":
        return []
    check = sf.udf(_template_problem, StringType())
    problems = []
    for name in TEMPLATE_COLUMNS:
        reason = check(sf.col(name))
        # template_problem answers "unsafe_template: why"; keep the rule name, add the column.
        problems.append(
            sf.when(
                sf.col(name).isNotNull() & reason.isNotNull(),
                sf.concat(sf.lit(f"unsafe_template:{name}="), sf.regexp_replace(reason, r"^unsafe_template:\s*", "")),
            )
        )
    return problems


def _join_reasons(problems: list[Column]) -> Column:
    from pyspark.sql import functions as sf

    joined = sf.concat_ws(REASON_SEPARATOR, *problems)
    return sf.when(joined != "", joined)


def add_row_reasons(frame: DataFrame, table: RawTable) -> DataFrame:
    """Add ``_reason`` from the row rules (types, required, allowed, ranges, lengths, templates).

    Expects the raw string columns plus ``_malformed`` (a reason when the CSV line could not be
    parsed, else null). A malformed line gets only that reason: its fields are not meaningful.
    """
    from pyspark.sql import functions as sf

    problems = [p for column in table.columns for p in column_problems(column)] + template_problems(table)
    row_reason = _join_reasons(problems)
    return frame.withColumn("_reason", sf.coalesce(sf.col("_malformed"), row_reason))


def _append_reason(frame: DataFrame, condition: Column, reason: Column) -> DataFrame:
    from pyspark.sql import functions as sf

    combined = sf.concat_ws(REASON_SEPARATOR, sf.col("_reason"), sf.when(condition, reason))
    return frame.withColumn("_reason", sf.when(combined != "", combined))


def add_reference_reasons(frame: DataFrame, table: RawTable, known: Mapping[str, DataFrame]) -> DataFrame:
    """Add ``unknown_reference:<column>=<value>`` for values missing from the referenced table.

    ``known[ref.table]`` holds the referenced keys known at this run (the curated state
    including this delivery). Rows already malformed are not checked again.
    """
    from pyspark.sql import functions as sf

    for ref in table.references:
        if ref.table not in known:
            raise KeyError(f"{table.name}.{ref.column} references {ref.table}, whose keys were not given")
        flag = f"_known_{ref.column}"
        keys = known[ref.table].select(sf.col(ref.key).alias(f"_ref_{ref.column}")).distinct()
        keys = keys.withColumn(flag, sf.lit(True))
        frame = frame.join(sf.broadcast(keys), frame[ref.column] == keys[f"_ref_{ref.column}"], "left")
        missing = sf.col(ref.column).isNotNull() & sf.col(flag).isNull() & sf.col("_malformed").isNull()
        frame = _append_reason(
            frame, missing, sf.concat(sf.lit(f"unknown_reference:{ref.column}="), _shown(sf.col(ref.column)))
        ).drop(f"_ref_{ref.column}", flag)
    return frame


def add_duplicate_reasons(frame: DataFrame, table: RawTable) -> DataFrame:
    """Among rows that passed every other rule, keep one row per key: the last delivered.

    The winner is the row with the greatest (``_file``, ``_line``), a deterministic choice that
    matches "the later line of an export is the newer change"; the others get
    ``duplicate_key:<key>=<value>``. Rows already refused do not compete.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as sf

    good = sf.col("_reason").isNull()
    order = Window.partitionBy(good, *table.key).orderBy(sf.col("_file").desc(), sf.col("_line").desc())
    ranked = frame.withColumn("_rank", sf.row_number().over(order))
    key_text = sf.concat_ws("|", *[_shown(sf.col(k)) for k in table.key])
    duplicate = good & (sf.col("_rank") > 1)
    return _append_reason(ranked, duplicate, sf.concat(sf.lit(f"duplicate_key:{'|'.join(table.key)}="), key_text)).drop(
        "_rank"
    )


def classify(frame: DataFrame, table: RawTable, known: Mapping[str, DataFrame] | None = None) -> DataFrame:
    """Every raw row with ``_reason`` (null = good): row rules, references, then key uniqueness."""
    frame = add_row_reasons(frame, table)
    if table.references:
        frame = add_reference_reasons(frame, table, known or {})
    return add_duplicate_reasons(frame, table)


def to_curated(classified: DataFrame, table: RawTable) -> DataFrame:
    """The good rows, typed per ``schemas.py`` with the same column names (the curated layout)."""
    from pyspark.sql import functions as sf

    good = classified.where(sf.col("_reason").isNull())
    return good.select(*[typed_value(c).alias(c.name) for c in table.columns])


def private_columns(table: RawTable) -> list[str]:
    """The table's columns that hold private data (``schemas.PRIVATE_USER_FIELDS``)."""
    return [name for name in table.column_names if name in PRIVATE_USER_FIELDS]


def to_quarantine(classified: DataFrame, table: RawTable) -> DataFrame:
    """The refused rows: raw string columns plus ``_reason``, ``_source`` (file:line) and ``_raw_line``.

    Private values are masked: a private column shows ``***`` when it had a value, and the raw
    line of a table with private columns is masked whole (``_source`` points at the original in
    the restricted raw zone).
    """
    from pyspark.sql import functions as sf

    private = private_columns(table)
    bad = classified.where(sf.col("_reason").isNotNull())
    masked = [
        sf.when(sf.col(n).isNotNull(), sf.lit(PRIVATE_MASK)).alias(n) if n in private else sf.col(n)
        for n in table.column_names
    ]
    raw_line = sf.lit(PRIVATE_MASK).alias("_raw_line") if private else sf.col("_raw_line")
    return bad.select(*masked, "_reason", "_source", raw_line)


def reason_rules(reason_column: Column) -> Column:
    """The rule names of a ``_reason`` (``missing``, ``bad_type``, ...) as an array, for counting."""
    from pyspark.sql import functions as sf

    return sf.array_distinct(
        sf.transform(sf.split(reason_column, REASON_SEPARATOR), lambda r: sf.regexp_extract(r, r"^([a-z_]+)", 1))
    )


# ---------------------------------------------------------------------------- GX gate
def expectations_for(table: RawTable) -> list[tuple[str, dict[str, Any]]]:
    """The table's rules as Great Expectations expectations: ``(class name, kwargs)`` pairs.

    Referential rules and template safety have no GX counterpart; they are enforced by the
    quarantine only (documented in docs/data-contracts.md).
    """
    expectations: list[tuple[str, dict[str, Any]]] = []
    for key in table.key:
        expectations.append(("ExpectColumnValuesToBeUnique", {"column": key}))
    for column in table.columns:
        if column.required:
            expectations.append(("ExpectColumnValuesToNotBeNull", {"column": column.name}))
        if column.allowed is not None:
            expectations.append(
                ("ExpectColumnValuesToBeInSet", {"column": column.name, "value_set": list(column.allowed)})
            )
        if column.min_value is not None or column.max_value is not None:
            expectations.append(
                (
                    "ExpectColumnValuesToBeBetween",
                    {"column": column.name, "min_value": column.min_value, "max_value": column.max_value},
                )
            )
        if column.max_length is not None:
            expectations.append(
                ("ExpectColumnValueLengthsToBeBetween", {"column": column.name, "max_value": column.max_length})
            )
    return expectations


def validate_curated(frame: Any, table: RawTable, engine: str = "pandas") -> dict[str, Any]:
    """Validate curated rows with Great Expectations; returns a JSON-able summary.

    ``frame`` is a Spark DataFrame. ``engine="pandas"`` validates a sample of at most
    ``GX_SAMPLE_ROWS`` rows in pandas and every row in Spark (``spark_expectation_failures``), so
    no table is ever collected whole to the driver; ``engine="spark"``
    validates through GX's Spark datasource without collecting. The summary has ``success``,
    ``evaluated``, ``failed`` and, per failed expectation, its type, column and a sample of
    unexpected values. Callers decide to fail (``assert_valid``).
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx  # slow import (3-8 s): only when a gate actually runs
    import great_expectations.expectations as gxe

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    full_check: list[dict[str, Any]] = []
    if engine == "pandas":
        # Never the whole table in the driver: GX checks a bounded sample, Spark checks every row.
        source = context.data_sources.add_pandas(f"{table.name}_source")
        data = frame.limit(GX_SAMPLE_ROWS).toPandas()
        full_check = spark_expectation_failures(frame, table)
    elif engine == "spark":
        source = context.data_sources.add_spark(f"{table.name}_source")
        data = frame
    else:
        raise ValueError(f"engine must be 'pandas' or 'spark', got {engine!r}")
    batch_definition = source.add_dataframe_asset(table.name).add_batch_definition_whole_dataframe("delivery")
    suite = gx.ExpectationSuite(name=f"{table.name}_contract")
    for class_name, kwargs in expectations_for(table):
        suite.add_expectation(getattr(gxe, class_name)(**kwargs))
    suite = context.suites.add(suite)
    result = batch_definition.get_batch(batch_parameters={"dataframe": data}).validate(suite)
    failed = [
        {
            "expectation": r.expectation_config.type,
            "column": r.expectation_config.kwargs.get("column"),
            "unexpected_count": (r.result or {}).get("unexpected_count"),
            "sample": _sample(r.expectation_config.kwargs.get("column"), r.result),
        }
        for r in result.results
        if not r.success
    ]
    seen = {(f["expectation"], f["column"]) for f in failed}
    return {
        "success": bool(result.success) and not full_check,
        "engine": engine,
        "evaluated": len(result.results),
        "sampled_rows": len(data) if engine == "pandas" else None,
        "failed": failed + [f for f in full_check if (f["expectation"], f["column"]) not in seen],
    }


def _sample(column: str | None, result: Mapping[str, Any] | None) -> list[str]:
    values = [str(v) for v in ((result or {}).get("partial_unexpected_list") or [])[:5]]
    return [PRIVATE_MASK] * len(values) if column in PRIVATE_USER_FIELDS else values


def _snake(class_name: str) -> str:
    """GX's expectation type for a class name (``ExpectColumnValuesToBeUnique`` ->
    ``expect_column_values_to_be_unique``)."""
    import re

    return re.sub(r"(?<!^)(?=[A-Z])", "_", class_name).lower()


def spark_expectation_failures(frame: DataFrame, table: RawTable) -> list[dict[str, Any]]:
    """``expectations_for(table)`` checked on every row in one Spark aggregation; the failed ones,
    shaped like the GX summary's (``sample`` empty: nothing is collected)."""
    from pyspark.sql import functions as sf

    checks: list[tuple[str, str, Column]] = []
    for class_name, kwargs in expectations_for(table):
        column = sf.col(kwargs["column"])
        if class_name == "ExpectColumnValuesToBeUnique":
            continue  # counted below with count - count distinct
        if class_name == "ExpectColumnValuesToNotBeNull":
            bad = column.isNull()
        elif class_name == "ExpectColumnValuesToBeInSet":
            bad = column.isNotNull() & ~column.isin(*kwargs["value_set"])
        elif class_name == "ExpectColumnValuesToBeBetween":
            low, high = kwargs["min_value"], kwargs["max_value"]
            bad = sf.lit(False)
            if low is not None:
                bad = bad | (column < sf.lit(low))
            if high is not None:
                bad = bad | (column > sf.lit(high))
        else:  # ExpectColumnValueLengthsToBeBetween
            bad = sf.length(column) > sf.lit(kwargs["max_value"])
        checks.append((_snake(class_name), kwargs["column"], sf.sum(sf.when(bad, 1).otherwise(0))))
    keys = list(table.key)
    aggregates = [expression.alias(f"c{i}") for i, (_, _, expression) in enumerate(checks)]
    aggregates += [sf.count(sf.lit(1)).alias("rows"), sf.count_distinct(*[sf.col(k) for k in keys]).alias("keys")]
    totals = frame.agg(*aggregates).first()
    failed = [
        {
            "expectation": name,
            "column": column,
            "unexpected_count": int(totals[f"c{i}"] or 0),
            "sample": [],
            "full": True,
        }
        for i, (name, column, _) in enumerate(checks)
        if int(totals[f"c{i}"] or 0) > 0
    ]
    duplicates = int(totals["rows"]) - int(totals["keys"])
    if duplicates > 0:
        failed.append({"expectation": _snake("ExpectColumnValuesToBeUnique"), "column": "|".join(keys),
                       "unexpected_count": duplicates, "sample": [], "full": True})  # fmt: skip
    return failed


def assert_valid(summary: Mapping[str, Any], table: str) -> None:
    """Raise ``DataContractError`` naming every failed expectation of ``table``."""
    if summary["success"]:
        return
    lines = [
        f"{f['expectation']}({f['column']}): {f['unexpected_count']} rows, e.g. {f['sample']}"
        for f in summary["failed"]
    ]
    raise DataContractError(f"curated {table} broke its data contract: " + "; ".join(lines))
