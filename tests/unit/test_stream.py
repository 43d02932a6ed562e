"""Message validation and raw landing of stream ingestion (no services)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from include.notify import schemas
from include.notify.config import NotifyConfig
from include.notify.stages.stream import (
    InvalidMessageError,
    Valid,
    delivery_day,
    parse_message,
    to_raw_json,
)
from include.notify.stages.stream_run import land_raw
from include.notify.timeutil import iso_exact as format_timestamp

ORDER = {
    "purchase_id": "p1",
    "user_id": "u1",
    "product_id": "1163",
    "purchase_date": "2026-11-25T09:36:00Z",
    "price": 19.5,
    "quantity": 2,
    "total_amount": 39.0,
}
EVENT = {
    "event_id": "e1",
    "user_id": "u1",
    "ts": "2026-11-25T10:00:00.250000Z",
    "event_type": "view",
    "product_id": "1163",
}


def _parse(table: schemas.RawTable, payload: object, max_bytes: int = 4096) -> dict:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_message(table, data, max_bytes)


def _rule(table: schemas.RawTable, payload: object, max_bytes: int = 4096) -> str:
    with pytest.raises(InvalidMessageError) as error:
        _parse(table, payload, max_bytes)
    return str(error.value)


def test_valid_order_is_typed() -> None:
    record = _parse(schemas.PURCHASES, ORDER)
    assert record["purchase_date"] == datetime(2026, 11, 25, 9, 36, tzinfo=UTC)
    assert record["quantity"] == 2
    assert isinstance(record["quantity"], int)
    assert record["price"] == 19.5


def test_optional_fields_may_be_absent_and_are_filled_with_none() -> None:
    record = _parse(schemas.CLICKSTREAM, EVENT)
    assert record["campaign_id"] is None
    assert record["notification_id"] is None


def test_offset_timestamps_are_normalised_to_utc() -> None:
    record = _parse(schemas.PURCHASES, ORDER | {"purchase_date": "2026-11-25T11:36:00+02:00"})
    assert format_timestamp(record["purchase_date"]) == "2026-11-25T09:36:00Z"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"{not json", "bad_json"),
        (b"\xff\xfe\x00", "bad_utf8"),
        (b'{"price": NaN}', "bad_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"order"', "not_an_object"),
        (ORDER | {"coupon": "X"}, "unknown_fields: coupon"),
        ({k: v for k, v in ORDER.items() if k != "user_id"}, "invalid: user_id is required"),
        (ORDER | {"user_id": ""}, "invalid: user_id is required"),
        (ORDER | {"quantity": "2"}, "invalid: quantity expected int"),
        (ORDER | {"quantity": 2.5}, "invalid: quantity expected int"),
        (ORDER | {"quantity": True}, "invalid: quantity expected int"),
        (ORDER | {"quantity": 0}, "invalid: quantity 0 < 1"),
        (ORDER | {"price": -1}, "invalid: price -1 < 0.0"),
        (ORDER | {"price": "cheap"}, "invalid: price expected double"),
        (ORDER | {"purchase_date": "yesterday"}, "invalid: purchase_date"),
        (ORDER | {"purchase_date": "2026-11-25T09:36:00"}, "has no time zone"),
        (ORDER | {"purchase_date": "1970-01-01T00:00:00Z"}, "outside 2000-2100"),
        (ORDER | {"user_id": 42}, "invalid: user_id expected string"),
        (ORDER | {"user_id": "u" * 65}, "longer than 64"),
    ],
)
def test_invalid_orders_name_the_rule_and_field(payload: object, expected: str) -> None:
    assert expected in _rule(schemas.PURCHASES, payload)


def test_event_type_must_be_an_allowed_value() -> None:
    assert "event_type 'purchase' not in" in _rule(schemas.CLICKSTREAM, EVENT | {"event_type": "purchase"})


def test_every_problem_of_a_message_is_reported() -> None:
    reason = _rule(schemas.PURCHASES, ORDER | {"quantity": -3, "price": "x"})
    assert "quantity" in reason
    assert "price" in reason


def test_oversized_messages_are_rejected_before_decoding() -> None:
    payload = json.dumps(ORDER | {"product_id": "1163"}).encode()
    assert _rule(schemas.PURCHASES, payload, max_bytes=len(payload) - 1).startswith("oversized:")
    assert _parse(schemas.PURCHASES, payload, max_bytes=len(payload))["product_id"] == "1163"


def test_empty_message_is_rejected() -> None:
    with pytest.raises(InvalidMessageError, match="empty"):
        parse_message(schemas.CLICKSTREAM, None, 100)


def test_producer_json_round_trips_through_validation() -> None:
    record = _parse(schemas.CLICKSTREAM, EVENT)
    assert _parse(schemas.CLICKSTREAM, to_raw_json(schemas.CLICKSTREAM, record)) == record


def test_producer_refuses_fields_outside_the_contract() -> None:
    with pytest.raises(ValueError, match="not columns"):
        to_raw_json(schemas.CLICKSTREAM, EVENT | {"secret": 1})


SENT = {
    "event_id": "e2", "user_id": "u1", "ts": "2026-11-25T10:05:00Z", "event_type": "notification_sent",
    "campaign_id": "C1", "notification_id": "u1#2026-11-25#C1", "policy_version": "value-1", "model_version": "m-1",
    "p_click": 0.0831, "propensity": 0.9, "candidate_scores": "C1:0.0831|C2:0.02",
}  # fmt: skip


def test_landing_writes_raw_csv_per_day_and_partition_and_a_replay_overwrites(tmp_path: Path) -> None:
    config = NotifyConfig(state_dir=tmp_path, lake_uri=(tmp_path / "lake").as_uri())
    late = ORDER | {"purchase_id": "p2", "purchase_date": "2026-11-26T00:10:00Z"}
    valid = {
        "orders": {
            "p1": Valid(_parse(schemas.PURCHASES, ORDER), "notify.orders", 1, 7),
            "p2": Valid(_parse(schemas.PURCHASES, late), "notify.orders", 1, 8),
        },
        "events": {
            "e1": Valid(_parse(schemas.CLICKSTREAM, EVENT), "notify.events", 0, 3),
            "e2": Valid(_parse(schemas.CLICKSTREAM, SENT), "notify.events", 0, 4),
        },
    }
    consumed = datetime(2026, 11, 25, 23, 59, tzinfo=UTC)
    first = land_raw(config, valid, consumed)
    assert land_raw(config, valid, consumed) == first
    files = sorted(p.relative_to(tmp_path / "lake").as_posix() for p in (tmp_path / "lake").rglob("*.csv"))
    assert files == [
        "raw/clickstream/dt=2026-11-26/stream-notify.events-0-3.csv",
        "raw/purchase_history/dt=2026-11-26/stream-notify.orders-1-7.csv",
        "raw/purchase_history/dt=2026-11-27/stream-notify.orders-1-8.csv",
    ]
    lines = (tmp_path / "lake/raw/purchase_history/dt=2026-11-26/stream-notify.orders-1-7.csv").read_text().splitlines()
    assert lines == [",".join(schemas.PURCHASES.column_names), "p1,u1,1163,2026-11-25T09:36:00Z,19.5,2,39.0"]
    event_lines = (
        (tmp_path / "lake/raw/clickstream/dt=2026-11-26/stream-notify.events-0-3.csv").read_text().splitlines()
    )
    assert event_lines[0] == ",".join(schemas.CLICKSTREAM.column_names)
    assert event_lines[1] == "e1,u1,2026-11-25T10:00:00.250000Z,view,1163,,,,,,,"
    # A notification_sent row keeps its decision fields (dispatch_decide.DECISION_FIELDS) for the lake.
    assert (
        event_lines[2]
        == "e2,u1,2026-11-25T10:05:00Z,notification_sent,,C1,u1#2026-11-25#C1,value-1,m-1,0.0831,0.9,C1:0.0831|C2:0.02"
    )


def test_streamed_events_land_in_the_first_nightly_delivery_still_to_come() -> None:
    event = datetime(2026, 11, 25, 22, 0, tzinfo=UTC)
    assert delivery_day(event, datetime(2026, 11, 25, 23, 0, tzinfo=UTC)).isoformat() == "2026-11-26"
    # Consumed late (the next day): the nightly run of the 26th may be over, so the 27th.
    assert delivery_day(event, datetime(2026, 11, 26, 0, 30, tzinfo=UTC)).isoformat() == "2026-11-27"


@pytest.mark.parametrize(
    ("payload", "rule"),
    [
        (b'{"event_id": "e\\ud800", "user_id": "u1", "ts": "2026-11-25T09:00:00Z", "event_type": "view"}', "bad_text"),
        (b'{"\\udfff": 1, "event_id": "e1", "user_id": "u1", "ts": "2026-11-25T09:00:00Z", "event_type": "view"}',
         "bad_text"),
        (b"[" * 5000 + b"]" * 5000, "bad_json"),
        (b'{"event_id": "caf\xe9"}', "bad_utf8"),
    ],
)  # fmt: skip
def test_text_that_cannot_be_stored_again_is_rejected_with_an_encodable_reason(payload: bytes, rule: str) -> None:
    from include.notify.stages.stream_messages import parse_message_with

    with pytest.raises(InvalidMessageError) as error:
        parse_message_with(schemas.CLICKSTREAM, payload, 1_000_000, "keep")
    assert error.value.rule == rule
    str(error.value).encode("utf-8")  # the reason travels as a header and a log line


def test_unknown_fields_are_kept_out_and_counted_or_dead_lettered_by_policy() -> None:
    from include.notify.stages.stream_messages import parse_message_with

    data = json.dumps(EVENT | {"new_field": 1}).encode()
    parsed = parse_message_with(schemas.CLICKSTREAM, data, 4096, "keep")
    assert parsed.unknown_fields == ["new_field"]
    assert "new_field" not in parsed.record
    with pytest.raises(InvalidMessageError, match="unknown_fields"):
        parse_message_with(schemas.CLICKSTREAM, data, 4096, "dead_letter")


def test_the_opt_out_rule_lets_the_latest_signal_win_and_an_opt_out_win_a_tie() -> None:
    from include.notify import rules

    assert rules.latest_opt_out([(200, True), (100, False)]) is True  # an older opt-in arriving later
    assert rules.latest_opt_out([(100, True), (200, False)]) is False
    assert rules.latest_opt_out([(100, False), (100, True)]) is True
    assert rules.latest_opt_out([]) is None
    assert rules.opt_out_of_version(rules.opt_signal_version(5, True))
    assert not rules.opt_out_of_version(None)


def test_a_dead_letter_envelope_keeps_the_original_bytes_text_or_base64() -> None:
    from datetime import UTC, datetime

    from include.notify.stages.dead_letter_envelope import Rejected, _original, envelope

    for value in (b"\xff\xfe not text", b'{"event_id": "\\ud800"}', "plain é".encode()):
        letter = json.loads(envelope(Rejected("t", 0, 5, "bad: x", b"\x80k", value), datetime.now(UTC)))
        assert _original(letter, "value") == value
        assert _original(letter, "key") == b"\x80k"
    assert "value_base64" in json.loads(envelope(Rejected("t", 0, 5, "r", None, b"\xff"), datetime.now(UTC)))


# ------------------------------------------------------------------------------------ decisions
def _purchase(purchase_id: str, user: str = "u1", product: str = "P1", day: str = "2026-11-25", qty: int = 1) -> dict:
    return {"purchase_id": purchase_id, "user_id": user, "product_id": product, "quantity": qty,
            "purchase_date": datetime.fromisoformat(f"{day}T12:00:00+00:00")}  # fmt: skip


def test_matrix_rows_count_each_purchase_once_however_often_a_batch_is_replayed() -> None:
    from include.notify.stages.stream import matrix_rows

    batch = [_purchase("o1"), _purchase("o2", qty=2), _purchase("o3", product="P2")]
    first = {(r["user_id"], r["product_id"]): r for r in matrix_rows(batch, {}, {})}
    assert first[("u1", "P1")] == {
        "user_id": "u1", "product_id": "P1", "times_purchased": 2, "total_quantity": 3, "purchased_before": True,
        "last_purchase_date": "2026-11-25", "purchase_ids": ["o1", "o2"],
    }  # fmt: skip
    assert matrix_rows(batch, first, {}) == []  # a replay changes nothing
    later = matrix_rows([_purchase("o1"), _purchase("o4", day="2026-11-27", qty=5)], first, {})
    assert later == [first[("u1", "P1")] | {"times_purchased": 3, "total_quantity": 8,
                                            "last_purchase_date": "2026-11-27", "purchase_ids": ["o1", "o2", "o4"]}]  # fmt: skip


def test_a_nightly_matrix_row_without_its_purchase_ids_is_recomputed_from_the_users_history() -> None:
    from include.notify.stages.stream import matrix_rows, users_needing_history

    nightly = {("u1", "P1"): {"user_id": "u1", "product_id": "P1", "times_purchased": 2, "total_quantity": 2,
                              "last_purchase_date": "2026-11-20"}}  # fmt: skip
    batch = [_purchase("o9"), _purchase("o5", user="u2")]
    assert users_needing_history({("u1", "P1"), ("u2", "P1")}, nightly) == {"u1"}
    # The history already holds the batch's purchase (written before the matrix) and the old ones.
    history = {"u1": [_purchase("o1", day="2026-11-19"), _purchase("o2", day="2026-11-20"), _purchase("o9"),
                      _purchase("o7", product="P8")]}  # fmt: skip
    rows = {r["user_id"]: r for r in matrix_rows(batch, nightly, history)}
    assert rows["u1"]["times_purchased"] == 3
    assert rows["u1"]["purchase_ids"] == ["o1", "o2", "o9"]
    assert rows["u2"]["times_purchased"] == 1


def test_an_order_makes_moot_only_same_local_day_items_promoting_its_product_or_article_type() -> None:
    from include.notify.stages.stream import moot_reason, recent_orders

    def item(campaign: str, day: str, product: str | None = None, tz: str = "UTC") -> dict:
        return {"user_id": "u1", "send_at_campaign": f"{day}T18:00:00Z#{campaign}", "campaign_id": campaign,
                "product_id": product, "local_day": day, "timezone": tz, "status": "scheduled"}  # fmt: skip

    orders = recent_orders(None, [_purchase("o1")], {"P1": {"articleType": "Shirts"}})
    assert orders == [
        {"purchase_id": "o1", "product_id": "P1", "purchase_date": "2026-11-25T12:00:00Z", "article_type": "Shirts"}
    ]
    shirts, watches = {"target_article_types": "Shirts|Tshirts"}, {"target_article_types": "Watches"}
    verdicts = {
        "article type": moot_reason(item("c-shirts", "2026-11-25"), orders, shirts),
        "product": moot_reason(item("c-other", "2026-11-25", product="P1"), orders, {}),
        "unrelated": moot_reason(item("c-watch", "2026-11-25"), orders, watches),
        "another day": moot_reason(item("c-shirts", "2026-11-26"), orders, shirts),
        # 12:00 UTC on the 25th is already the 26th at UTC+14.
        "its day there": moot_reason(item("c-shirts", "2026-11-26", tz="Pacific/Kiritimati"), orders, shirts),
        "no orders": moot_reason(item("c-shirts", "2026-11-25"), [], shirts),
    }
    assert verdicts == {"article type": "order o1", "product": "order o1", "unrelated": None, "another day": None,
                        "its day there": "order o1", "no orders": None}  # fmt: skip


def test_recent_orders_keep_each_purchase_once_newest_first_and_only_the_last_days() -> None:
    from include.notify.stages.stream import RECENT_ORDER_DAYS, recent_orders

    first = recent_orders(None, [_purchase("o1", day="2026-11-23"), _purchase("o2", day="2026-11-24")], {})
    assert [e["purchase_id"] for e in first] == ["o2", "o1"]
    assert recent_orders(first, [_purchase("o2", day="2026-11-24")], {}) is None  # a replay: nothing to write
    later = recent_orders(first, [_purchase("o3", day="2026-11-27")], {})
    # Only orders within RECENT_ORDER_DAYS of the newest: o1 (4 days before o3) is dropped, o2 (3) kept.
    assert RECENT_ORDER_DAYS == 3
    assert [e["purchase_id"] for e in later] == ["o3", "o2"]
    assert recent_orders(later, [_purchase("o0", day="2026-11-01")], {}) is None  # too old to matter: unchanged
    half_past = _purchase("o4", day="2026-11-27") | {"purchase_date": datetime.fromisoformat(
        "2026-11-27T12:00:00.500000+00:00")}  # fmt: skip
    assert [e["purchase_id"] for e in recent_orders(later, [half_past], {})][:2] == ["o4", "o3"]  # by time, not text


def test_opt_signals_the_latest_wins_and_stale_or_unknown_users_are_still_cancelled_when_out() -> None:
    from include.notify.stages.stream import opt_outcomes, winning_opt_signals

    def event(user: str, ts: str, kind: str) -> dict:
        return {"user_id": user, "ts": datetime.fromisoformat(ts), "event_type": kind}

    winners = winning_opt_signals([
        event("a", "2026-11-25T10:00:00+00:00", "opt_out"), event("a", "2026-11-25T09:00:00+00:00", "opt_in"),
        event("b", "2026-11-25T10:00:00+00:00", "opt_in"), event("c", "2026-11-25T10:00:00+00:00", "opt_out"),
        event("d", "2026-11-25T10:00:00+00:00", "opt_in"), event("e", "2026-11-25T10:00:00+00:00", "view"),
    ])  # fmt: skip
    assert {u: w[1] for u, w in winners.items()} == {"a": True, "b": False, "c": True, "d": False}
    from include.notify import rules

    newer_out = {"opt_out_version": rules.opt_signal_version(10**18, True)}
    counts, to_cancel = opt_outcomes(winners, applied={"a", "b"}, stored={"d": newer_out})
    assert counts == {"opt_out": 1, "opt_in": 1, "stale": 1, "unknown_user": 1}
    assert sorted(to_cancel) == ["a", "c", "d"]  # a: applied, c: unknown user, d: a newer opt-out stands


def test_event_ids_seen_with_another_ts_are_duplicates_and_new_ones_are_registered() -> None:
    from include.notify.stages.stream import split_seen_event_ids

    events = {
        eid: Valid(_parse(schemas.CLICKSTREAM, EVENT | {"event_id": eid}), "notify.events", 0, n)
        for n, eid in enumerate(["e1", "e2", "e3"])
    }
    ts = format_timestamp(events["e1"].record["ts"])
    duplicates, new = split_seen_event_ids(events, {"e1": ts, "e2": "2026-11-24T00:00:00Z"})
    assert duplicates == ["e2"]
    assert new == [{"event_id": "e3", "ts": ts, "user_id": "u1"}]


def test_merged_worker_results_add_up() -> None:
    from include.notify.stages.stream import BatchResult

    one = BatchResult("r", "a", rows_in=5, rows_out=3, rows_rejected=1, duplicates=1,
                      rejected_by_reason={"bad_json": 1}, committed={"t-0": 5}, lag={"t-0": 2}, total_lag=2)  # fmt: skip
    two = BatchResult("r", "b", rows_in=4, rows_out=4, rejected_by_reason={}, committed={"t-1": 9}, lag={"t-1": 0})
    total = BatchResult.merged("r", "run", [one, two])
    assert (total.rows_in, total.rows_out, total.rows_rejected, total.duplicates) == (9, 7, 1, 1)
    assert total.balanced()
    assert total.workers == 2
    assert total.committed == {"t-0": 5, "t-1": 9}
    assert total.total_lag == 2


def test_a_shared_poll_budget_never_grants_more_than_its_bounds_and_starves_no_consumer() -> None:
    from include.notify.io.kafka import PollBudget

    budget = PollBudget(1000, max_bytes=None, sharers=3)
    grants = [budget.reserve(500) for _ in range(3)]
    assert all(g > 0 for g in grants)
    assert sum(grants) <= 1000
    budget.settle(grants[0], 10, 100)  # the first consumer used 10 of its grant
    assert not budget.spent()
    assert budget.reserve(10_000) <= 1000 - sum(grants) + grants[0] - 10
    by_bytes = PollBudget(10**6, max_bytes=1000, sharers=2)
    got = by_bytes.reserve(500)
    assert not by_bytes.bytes_full(999)
    assert by_bytes.bytes_full(1000)
    by_bytes.settle(got, 3, 1200)
    assert by_bytes.spent()
    assert by_bytes.reserve(1) == 0
