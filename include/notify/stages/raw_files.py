"""Reading one raw delivery file as an upstream export wrote it: pure Python, no Spark.

``read_records`` turns the bytes of one file (``.csv`` or ``.csv.gz``) into records that keep
their exact ``file:line`` whatever the file's size, because one task reads one file from its
first byte (Spark never splits it). It reads CSV as Python's ``csv`` module and Spark's CSV
reader do: a quoted field may hold commas, doubled quotes and line breaks (the record's line is
its first physical line); a bare ``"`` inside an unquoted field is a literal character
(``Tempo 3.5" Short``). A quote left open for more than ``MAX_RECORD_LINES`` lines or up to the
end of the file is a malformed record and parsing resumes on the next line, so one stray quote
costs one record, not the rest of the file. Every physical line is checked as UTF-8; a record
with invalid bytes is quarantined (``bad_encoding``) and its text shown with replacement marks.

The header is matched by name: columns may come in any order, an unknown column is reported and
ignored, a missing required column quarantines every record of the file (``bad_header``), and a
file whose first line names no known column has no header: all its lines are records and all
are quarantined (``bad_header: no header``). BOM and CRLF line ends are accepted.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from include.notify.schemas import RawTable

MAX_RECORD_LINES = 100
SUFFIXES = (".csv", ".csv.gz")


@dataclass
class FileReport:
    """What one file held: its lines, records, header problems and unknown columns."""

    file: str
    lines: int = 0
    records: int = 0
    header: bool = False
    empty: bool = False
    missing_columns: list[str] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)


def _physical_lines(stream: BinaryIO) -> Iterator[tuple[int, str, bool]]:
    """``(line number, text, valid UTF-8)`` per physical line (a ``\\r\\n`` or ``\\n`` end kept)."""
    for number, raw in enumerate(stream, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield number, raw.decode("utf-8"), True
        except UnicodeDecodeError:
            yield number, raw.decode("utf-8", "replace"), False


def _ends_inside_quotes(text: str, inside: bool) -> bool:
    """Whether a CSV reader (``csv`` / Spark, quote ``"`` doubled to escape) is inside a quoted
    field at the end of ``text``, starting ``inside`` or not. Only quotes that open a field count."""
    state = "quoted" if inside else "start"
    for char in text:
        if state == "start":
            state = "quoted" if char == '"' else ("start" if char == "," else "field")
        elif state == "field":
            if char == ",":
                state = "start"
        elif state == "quoted":
            if char == '"':
                state = "quote"
        elif state == "quote":  # a quote inside a quoted field: escaped pair, field end or literal
            state = "quoted" if char == '"' else ("start" if char == "," else "field")
    return state == "quoted"


def _records(lines: Iterator[tuple[int, str, bool]]) -> Iterator[tuple[int, str, bool, str | None]]:
    """``(first line, record text, valid UTF-8, malformed reason)`` per record; blank lines skipped."""
    pending: list[tuple[int, str, bool]] = []
    source = iter(lines)
    replay: list[tuple[int, str, bool]] = []
    while True:
        if replay:
            line = replay.pop(0)
        else:
            line = next(source, None)
            if line is None:
                break
        if not pending and not line[1].strip():
            continue
        pending.append(line)
        text = "".join(part[1] for part in pending)
        inside = ('"' in line[1] or len(pending) > 1) and _ends_inside_quotes(text, False)
        if not inside:
            yield pending[0][0], text, all(part[2] for part in pending), None
            pending = []
        elif len(pending) > MAX_RECORD_LINES:
            first = pending[0]
            yield first[0], first[1], first[2], f"malformed_csv:quote opened on line {first[0]} is never closed"
            replay = pending[1:] + replay
            pending = []
    if pending:
        first = pending[0]
        yield first[0], first[1], first[2], f"malformed_csv:quote opened on line {first[0]} is never closed"
        yield from _records(iter(pending[1:]))


def _fields(text: str) -> list[str]:
    return next(csv.reader(io.StringIO(text)), [])


def open_raw(stream: BinaryIO, name: str) -> BinaryIO:
    """The decompressed bytes of a raw file (``.csv.gz`` is gunzipped while reading)."""
    return gzip.GzipFile(fileobj=stream) if name.endswith(".gz") else stream  # type: ignore[return-value]


def read_records(stream: BinaryIO, file: str, table: RawTable, report: FileReport) -> Iterator[dict[str, Any]]:
    """Every record of one file as the raw string columns plus ``_file``, ``_line``, ``_raw_line``
    and ``_malformed`` (a reason, or None); fills ``report``. See the module docstring."""
    names = set(table.column_names)
    required = [c.name for c in table.columns if c.required]
    columns: list[str] | None = None
    problem: str | None = None
    seen_lines = 0

    def numbered() -> Iterator[tuple[int, str, bool]]:
        nonlocal seen_lines
        for item in _physical_lines(stream):
            seen_lines = item[0]
            yield item

    for line, text, valid, malformed in _records(numbered()):
        fields = _fields(text) if malformed is None else []
        if columns is None and problem is None:
            cleaned = [f.strip() for f in fields]
            if malformed is None and valid and names & set(cleaned):
                columns = cleaned
                report.header = True
                report.extra_columns = [c for c in cleaned if c not in names]
                report.missing_columns = [c for c in required if c not in cleaned]
                if report.missing_columns:
                    problem = f"bad_header:missing required column {','.join(report.missing_columns)}"
                continue
            problem = "bad_header:no header (the first line names no column of the table)"
        report.records += 1
        row: dict[str, Any] = dict.fromkeys(table.column_names)
        reason = malformed or problem
        if reason is None and not valid:
            reason = "bad_encoding:invalid UTF-8 bytes"
        if reason is None and columns is not None:
            if len(fields) != len(columns):
                reason = f"malformed_csv:expected {len(columns)} fields, got {len(fields)}"
            else:
                for name, value in zip(columns, fields, strict=True):
                    if name in names:
                        row[name] = value if value != "" else None
        row.update(_file=file, _line=line, _raw_line=text.rstrip("\r\n"), _malformed=reason)
        yield row
    report.lines = seen_lines
    report.empty = report.records == 0
