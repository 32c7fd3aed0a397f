"""Tests for streams.records: decoding, validation and dead letters of raw record values."""

from __future__ import annotations

import base64
import json
import math
import random
from datetime import datetime

import pytest

from streams.records import (
    DEFAULT_EVENT_TYPE,
    EVENT_TYPES,
    FUTURE_TOLERANCE_S,
    MAX_ID_LENGTH,
    MIN_TIMESTAMP,
    EventBatch,
    RejectReason,
    Rejection,
    dead_letter_value,
    parse_values,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
GOOD = {"user_id": "u1", "item_id": "i1", "timestamp": 1_600_000_000}


def encode(obj: object) -> bytes:
    return json.dumps(obj).encode("utf-8")


def record(**fields: object) -> bytes:
    """A valid record value with some fields replaced (a value of ... drops the field)."""
    merged = {**GOOD, **fields}
    return encode({key: value for key, value in merged.items() if value is not ...})


def parse_one(raw: bytes | None, **kwargs: object) -> EventBatch | Rejection:
    batch, rejections = parse_values([raw], now=NOW, **kwargs)  # type: ignore[arg-type]
    assert len(batch) + len(rejections) == 1
    return rejections[0] if rejections else batch


def reason_of(raw: bytes | None, **kwargs: object) -> RejectReason:
    result = parse_one(raw, **kwargs)
    assert isinstance(result, Rejection), "value was accepted"
    assert len(result.detail) <= 200
    return result.reason


def test_constants() -> None:
    assert EVENT_TYPES == {"purchase", "buy", "pv", "view", "click", "cart", "fav"}
    assert DEFAULT_EVENT_TYPE in EVENT_TYPES
    assert MIN_TIMESTAMP == datetime.fromisoformat("1990-01-01T00:00:00+00:00").timestamp()


def test_valid_record_with_all_fields() -> None:
    raw = record(user_id=" 17850 ", item_id=85123, event_type=" PV ", quantity=6, price=2.55)
    batch = parse_one(raw)
    assert isinstance(batch, EventBatch)
    assert batch.user_ids == ["17850"] and batch.item_ids == ["85123"]
    assert batch.timestamps == [1_600_000_000.0] and batch.event_types == ["pv"]
    assert batch.quantities == [6.0] and batch.prices == [2.55] and batch.positions == [0]


def test_optional_fields_default() -> None:
    batch = parse_one(record(event_type=None, quantity=None, price=None, extra={"a": [1]}))
    assert isinstance(batch, EventBatch)
    assert batch.event_types == [DEFAULT_EVENT_TYPE]
    assert batch.quantities == [None] and batch.prices == [None]


def test_integral_float_id_becomes_decimal_string() -> None:
    batch = parse_one(record(user_id=17850.0, item_id=-3))
    assert isinstance(batch, EventBatch)
    assert batch.user_ids == ["17850"] and batch.item_ids == ["-3"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, RejectReason.NOT_JSON),
        (b"", RejectReason.NOT_JSON),
        (b"\xff\xfe{}", RejectReason.NOT_UTF8),
        ('{"user_id": "é"}'.encode("latin-1"), RejectReason.NOT_UTF8),
        ('{"a": 1}'.encode("utf-16"), RejectReason.NOT_UTF8),
        (b'{"user_id": "u1",', RejectReason.NOT_JSON),
        (b"[" * 100_000, RejectReason.NOT_JSON),
        (b"[1, 2]", RejectReason.NOT_OBJECT),
        (b'"a string"', RejectReason.NOT_OBJECT),
        (b"42", RejectReason.NOT_OBJECT),
        (b"null", RejectReason.NOT_OBJECT),
    ],
    ids=["tombstone", "empty", "bad-utf8", "latin1", "utf16", "truncated", "deep",
         "array", "string", "number", "null"],
)
def test_value_level_rejections(raw: bytes | None, reason: RejectReason) -> None:
    assert reason_of(raw) is reason


def test_tombstone_detail() -> None:
    result = parse_one(None)
    assert isinstance(result, Rejection) and result.detail == "empty value"


def test_value_over_limit_is_too_large_without_parsing() -> None:
    big = b'{"user_id": "' + b"x" * 3_000_000 + b'"}'
    assert reason_of(big) is RejectReason.TOO_LARGE
    assert reason_of(b"\xff" * 3_000_000) is RejectReason.TOO_LARGE  # size is checked first
    assert reason_of(record(), max_value_bytes=10) is RejectReason.TOO_LARGE


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"user_id": ...}, RejectReason.MISSING_USER_ID),
        ({"item_id": ...}, RejectReason.MISSING_ITEM_ID),
        ({"user_id": None}, RejectReason.MISSING_USER_ID),
        ({"item_id": None}, RejectReason.MISSING_ITEM_ID),
        ({"user_id": ""}, RejectReason.EMPTY_ID),
        ({"item_id": " \t\n"}, RejectReason.EMPTY_ID),
        ({"user_id": True}, RejectReason.BAD_ID_TYPE),
        ({"item_id": False}, RejectReason.BAD_ID_TYPE),
        ({"user_id": ["u1"]}, RejectReason.BAD_ID_TYPE),
        ({"item_id": {"id": 1}}, RejectReason.BAD_ID_TYPE),
        ({"user_id": 1.5}, RejectReason.BAD_ID_TYPE),
        ({"item_id": float("nan")}, RejectReason.BAD_ID_TYPE),
        ({"user_id": "x" * 10_000}, RejectReason.ID_TOO_LONG),
        ({"item_id": 10**300}, RejectReason.ID_TOO_LONG),
        ({"user_id": "\ud800"}, RejectReason.BAD_ID_TEXT),
    ],
)
def test_id_rejections(fields: dict[str, object], reason: RejectReason) -> None:
    assert reason_of(record(**fields)) is reason


def test_id_at_max_length_is_accepted() -> None:
    batch = parse_one(record(user_id="é" * MAX_ID_LENGTH))
    assert isinstance(batch, EventBatch) and batch.user_ids == ["é" * MAX_ID_LENGTH]


@pytest.mark.parametrize(
    "timestamp",
    [
        1_700_000_000,
        1_700_000_000.0,
        1_700_000_000_000,
        "1700000000",
        " 1700000000000 ",
        "2023-11-14T22:13:20Z",
        "2023-11-14T22:13:20.000z",
        "2023-11-14T22:13:20+00:00",
        "2023-11-15T07:13:20+09:00",
        "2023-11-14T17:13:20-05:00",
        "2023-11-14T22:13:20",
        "2023-11-14 22:13:20",
    ],
)
def test_timestamp_forms_give_same_epoch(timestamp: object) -> None:
    batch = parse_one(record(timestamp=timestamp))
    assert isinstance(batch, EventBatch)
    assert batch.timestamps == [NOW]


def test_date_only_timestamp_is_midnight_utc() -> None:
    batch = parse_one(record(timestamp="2011-12-01"))
    assert isinstance(batch, EventBatch)
    assert batch.timestamps == [1_322_697_600.0]


def test_millisecond_fraction_is_kept() -> None:
    batch = parse_one(record(timestamp=1_600_000_000_250))
    assert isinstance(batch, EventBatch) and batch.timestamps == [1_600_000_000.25]


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [
        (..., RejectReason.MISSING_TIMESTAMP),
        (None, RejectReason.MISSING_TIMESTAMP),
        (True, RejectReason.BAD_TIMESTAMP),
        ([1_700_000_000], RejectReason.BAD_TIMESTAMP),
        ("yesterday", RejectReason.BAD_TIMESTAMP),
        ("", RejectReason.BAD_TIMESTAMP),
        ("1_700_000_000", RejectReason.BAD_TIMESTAMP),
        ("2023-13-01T00:00:00Z", RejectReason.BAD_TIMESTAMP),
        (float("nan"), RejectReason.NON_FINITE_TIMESTAMP),
        (float("inf"), RejectReason.NON_FINITE_TIMESTAMP),
        (float("-inf"), RejectReason.NON_FINITE_TIMESTAMP),
        ("NaN", RejectReason.NON_FINITE_TIMESTAMP),
        (631_151_999, RejectReason.TIMESTAMP_TOO_OLD),
        ("1989-12-31T23:59:59Z", RejectReason.TIMESTAMP_TOO_OLD),
        (0, RejectReason.TIMESTAMP_TOO_OLD),
        (-1_700_000_000_000, RejectReason.TIMESTAMP_TOO_OLD),
        ("0001-01-01T00:00:00+09:00", RejectReason.TIMESTAMP_TOO_OLD),
        (NOW + FUTURE_TOLERANCE_S + 1, RejectReason.TIMESTAMP_IN_FUTURE),
        ("2100-01-01T00:00:00Z", RejectReason.TIMESTAMP_IN_FUTURE),
        (99_999_999_999, RejectReason.TIMESTAMP_IN_FUTURE),
        (10**400, RejectReason.TIMESTAMP_IN_FUTURE),
    ],
)
def test_timestamp_rejections(timestamp: object, reason: RejectReason) -> None:
    assert reason_of(record(timestamp=timestamp)) is reason


def test_nan_and_infinity_literals() -> None:
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        raw = b'{"user_id": "u", "item_id": "i", "timestamp": ' + literal + b"}"
        assert reason_of(raw) is RejectReason.NON_FINITE_TIMESTAMP
        raw = record()[:-1] + b', "quantity": ' + literal + b"}"
        assert reason_of(raw) is RejectReason.BAD_QUANTITY
        raw = record()[:-1] + b', "price": ' + literal + b"}"
        assert reason_of(raw) is RejectReason.BAD_PRICE


def test_future_tolerance_boundary() -> None:
    assert isinstance(parse_one(record(timestamp=NOW + FUTURE_TOLERANCE_S)), EventBatch)


def test_now_defaults_to_wall_clock() -> None:
    batch, rejections = parse_values([record(timestamp="2999-01-01"), record()])
    assert [r.reason for r in rejections] == [RejectReason.TIMESTAMP_IN_FUTURE]
    assert batch.positions == [1]


@pytest.mark.parametrize("event_type", ["refund", "", 3, ["pv"], True, {"t": "pv"}])
def test_unknown_event_type(event_type: object) -> None:
    assert reason_of(record(event_type=event_type)) is RejectReason.UNKNOWN_EVENT_TYPE


def test_every_event_type_is_accepted_in_any_case() -> None:
    names = sorted(EVENT_TYPES)
    batch, rejections = parse_values([record(event_type=n.upper()) for n in names], now=NOW)
    assert not rejections and batch.event_types == names


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"quantity": -1}, RejectReason.BAD_QUANTITY),
        ({"quantity": 0}, RejectReason.BAD_QUANTITY),
        ({"quantity": "2"}, RejectReason.BAD_QUANTITY),
        ({"quantity": True}, RejectReason.BAD_QUANTITY),
        ({"quantity": 10**400}, RejectReason.BAD_QUANTITY),
        ({"price": -0.01}, RejectReason.BAD_PRICE),
        ({"price": "2.55"}, RejectReason.BAD_PRICE),
        ({"price": False}, RejectReason.BAD_PRICE),
    ],
)
def test_amount_rejections(fields: dict[str, object], reason: RejectReason) -> None:
    assert reason_of(record(**fields)) is reason


def test_zero_price_is_accepted() -> None:
    batch = parse_one(record(price=0, quantity=0.5))
    assert isinstance(batch, EventBatch) and batch.prices == [0.0] and batch.quantities == [0.5]


def test_first_problem_found_wins() -> None:
    everything_wrong = {"user_id": None, "item_id": True, "timestamp": "x", "quantity": -1}
    assert reason_of(encode(everything_wrong)) is RejectReason.MISSING_USER_ID
    assert reason_of(record(item_id="", timestamp=None)) is RejectReason.EMPTY_ID
    assert reason_of(record(timestamp=0, event_type="x")) is RejectReason.TIMESTAMP_TOO_OLD
    assert reason_of(record(event_type="x", quantity=-1)) is RejectReason.UNKNOWN_EVENT_TYPE
    assert reason_of(record(quantity=-1, price=-1)) is RejectReason.BAD_QUANTITY


def test_mixed_batch_keeps_input_order_and_positions() -> None:
    values = [
        record(user_id="a"),
        b"not json",
        record(user_id="b", timestamp="2020-01-01T00:00:00Z"),
        None,
        record(user_id="c", quantity=-2),
        record(user_id="d", event_type="cart", quantity=1, price=9.5),
        b"[]",
    ]
    batch, rejections = parse_values(values, now=NOW)
    assert batch.user_ids == ["a", "b", "d"]
    assert batch.positions == [0, 2, 5]
    assert batch.event_types == ["purchase", "purchase", "cart"]
    assert batch.quantities == [None, None, 1.0] and batch.prices == [None, None, 9.5]
    assert [(r.position, r.reason) for r in rejections] == [
        (1, RejectReason.NOT_JSON),
        (3, RejectReason.NOT_JSON),
        (4, RejectReason.BAD_QUANTITY),
        (6, RejectReason.NOT_OBJECT),
    ]
    columns = (batch.user_ids, batch.item_ids, batch.timestamps, batch.event_types,
               batch.quantities, batch.prices, batch.positions)
    assert all(len(column) == len(batch) for column in columns)


def test_dead_letter_round_trip() -> None:
    raw = b"\xff\x00 not json \xe9"
    value = dead_letter_value(
        raw, topic="interactions", partition=3, offset=1234, reason=RejectReason.NOT_UTF8,
        detail="bad byte " * 100, timestamp_ms=1_700_000_000_000,
    )
    letter = json.loads(value.decode("utf-8"))
    assert letter["reason"] == "not_utf8"
    assert RejectReason(letter["reason"]) is RejectReason.NOT_UTF8
    assert 0 < len(letter["detail"]) <= 200
    source = {"topic": "interactions", "partition": 3, "offset": 1234}
    assert letter["source"] == {**source, "timestamp_ms": 1_700_000_000_000}
    assert base64.b64decode(letter["raw_b64"]) == raw
    assert letter["raw_size"] == len(raw) and letter["raw_truncated"] is False
    rejected_at = datetime.fromisoformat(letter["rejected_at"])
    assert rejected_at.utcoffset() is not None and rejected_at.utcoffset().total_seconds() == 0


def test_dead_letter_of_tombstone_and_oversized_value() -> None:
    letter = json.loads(dead_letter_value(
        None, topic="t", partition=0, offset=0, reason=RejectReason.NOT_JSON, detail="empty"
    ))
    assert letter["raw_b64"] is None and letter["raw_size"] == 0
    assert letter["source"]["timestamp_ms"] is None
    big = b"x" * 3_000_000
    letter = json.loads(dead_letter_value(
        big, topic="t", partition=0, offset=1, reason=RejectReason.TOO_LARGE, detail="big",
        max_raw_bytes=1000,
    ))
    assert base64.b64decode(letter["raw_b64"]) == big[:1000]
    assert letter["raw_size"] == len(big) and letter["raw_truncated"] is True


def _random_fragment(rng: random.Random) -> object:
    choices = [
        None, True, False, 0, -1, 1.5, 17850.0, 10**30, math.nan, math.inf, "", " ", "u1",
        "1700000000", "2023-11-14T22:13:20Z", "2023-11-15", "pv", "CART", "\ud800", "x" * 300,
        [], [1], {}, {"a": None}, 1_700_000_000, 1_700_000_000_000, 5e11, -5, 2.0,
    ]
    return rng.choice(choices)


def _random_value(rng: random.Random) -> bytes | None:
    kind = rng.random()
    if kind < 0.05:
        return None
    if kind < 0.3:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))
    keys = ["user_id", "item_id", "timestamp", "event_type", "quantity", "price", "other"]
    obj = {key: _random_fragment(rng) for key in keys if rng.random() < 0.8}
    text = json.dumps(obj if kind < 0.9 else _random_fragment(rng))
    if kind > 0.97:  # cut the JSON text somewhere
        text = text[: rng.randrange(0, len(text) + 1)]
    return text.encode("utf-8", "surrogatepass")


def _mutated_record(rng: random.Random) -> bytes:
    data = bytearray(record(event_type="pv", quantity=2, price=1.25))
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(data))
        action = rng.random()
        if action < 0.4:
            data[at] = rng.getrandbits(8)
        elif action < 0.7:
            del data[at]
        else:
            data.insert(at, rng.choice(b'{}[]",:0123456789eE.-+ \\xu\xc3\xff'))
    return bytes(data)


def test_random_values_never_raise_and_are_accounted_once() -> None:
    rng = random.Random(20240601)
    values = [_random_value(rng) for _ in range(3_000)]
    values += [_mutated_record(rng) for _ in range(2_000)]
    rng.shuffle(values)
    batch, rejections = parse_values(values, now=NOW, max_value_bytes=200)
    positions = batch.positions + [rejection.position for rejection in rejections]
    assert sorted(positions) == list(range(len(values)))
    assert batch.positions == sorted(batch.positions)
    assert len(batch) > 0 and len(rejections) > 0
    assert all(isinstance(r.reason, RejectReason) and len(r.detail) <= 200 for r in rejections)
    assert all(MIN_TIMESTAMP <= t <= NOW + FUTURE_TOLERANCE_S for t in batch.timestamps)
    assert all(0 < len(u) <= MAX_ID_LENGTH for u in batch.user_ids + batch.item_ids)
    assert set(batch.event_types) <= EVENT_TYPES
