"""Decode and validate raw interaction records from the input topic, a batch at a time.

Each record value is a JSON object ``{"user_id", "item_id", "timestamp", "event_type"?,
"quantity"?, "price"?}``. :func:`parse_values` turns a batch of raw values into columnar valid
interactions plus one :class:`Rejection` per bad value; it never raises on any value.

Checks run in this order, and a rejected value gets the reason of the first check it fails:

1. the value itself: tombstone or empty (``NOT_JSON``), over ``max_value_bytes`` (``TOO_LARGE``,
   not parsed), not UTF-8 (``NOT_UTF8``), not JSON (``NOT_JSON``), not a JSON object
   (``NOT_OBJECT``);
2. ``user_id``, then ``item_id``: a string (stripped) or an integer, or a float with an integral
   value; at most :data:`MAX_ID_LENGTH` characters;
3. ``timestamp``: a number or numeric string in epoch seconds, or in epoch milliseconds when its
   absolute value is at least 1e11 (1e11 s is the year 5138, 1e11 ms is March 1973), or else an
   ISO-8601 string (a trailing ``Z`` is UTC, no zone means UTC, a date alone is midnight UTC);
   then between :data:`MIN_TIMESTAMP` and ``now + FUTURE_TOLERANCE_S``;
4. ``event_type``, optional: one of :data:`EVENT_TYPES`, case-insensitive, stripped;
5. ``quantity``, optional: a finite number > 0; ``price``, optional: a finite number >= 0.

A JSON ``null`` in an optional field means the field is absent. Unknown keys are ignored.
"""

from __future__ import annotations

import base64
import enum
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

_log = logging.getLogger(__name__)

EVENT_TYPES: frozenset[str] = frozenset(
    {"purchase", "buy", "pv", "view", "click", "cart", "fav"}  # pv, cart, fav, buy: Taobao
)
DEFAULT_EVENT_TYPE = "purchase"
MAX_ID_LENGTH = 256
MIN_TIMESTAMP = 631_152_000.0  # 1990-01-01T00:00:00Z in epoch seconds
FUTURE_TOLERANCE_S = 86_400.0
MS_THRESHOLD = 1e11  # numeric timestamps with abs value >= this are epoch milliseconds
MAX_DETAIL_CHARS = 200

_CANONICAL_EVENT_TYPE = {name: name for name in EVENT_TYPES}
_ABSENT = object()


class RejectReason(str, enum.Enum):
    """Stable machine-readable code saying why a record value was rejected."""

    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    TOO_LARGE = "too_large"
    MISSING_USER_ID = "missing_user_id"
    MISSING_ITEM_ID = "missing_item_id"
    EMPTY_ID = "empty_id"
    ID_TOO_LONG = "id_too_long"
    BAD_ID_TYPE = "bad_id_type"
    BAD_ID_TEXT = "bad_id_text"  # a string id that cannot be encoded as UTF-8 (lone surrogate)
    MISSING_TIMESTAMP = "missing_timestamp"
    BAD_TIMESTAMP = "bad_timestamp"
    NON_FINITE_TIMESTAMP = "non_finite_timestamp"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    BAD_QUANTITY = "bad_quantity"
    BAD_PRICE = "bad_price"


@dataclass(slots=True)
class EventBatch:
    """Valid interactions of one input batch as columns, in input order.

    ``timestamps`` are epoch seconds; ``positions`` are indices into the input batch.
    """

    user_ids: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    event_types: list[str] = field(default_factory=list)
    quantities: list[float | None] = field(default_factory=list)
    prices: list[float | None] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.positions)


@dataclass(slots=True, frozen=True)
class Rejection:
    """One rejected value: its index in the input batch, the reason and a short detail."""

    position: int
    reason: RejectReason
    detail: str


class _Reject(Exception):
    """Raised inside this module to abandon one value; never escapes :func:`parse_values`."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def _clip(text: str) -> str:
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."


_JSON_TYPES = {type(None): "null", bool: "boolean", int: "number", float: "number",
               str: "string", list: "array", dict: "object"}


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _decode(raw: object, max_value_bytes: int) -> dict[str, object]:
    """Return the JSON object held by one raw value."""
    if raw is None:
        raise _Reject(RejectReason.NOT_JSON, "empty value")
    if type(raw) is not bytes:
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            detail = f"value has type {type(raw).__name__}, not bytes"
            raise _Reject(RejectReason.NOT_JSON, detail)
        raw = bytes(raw)
    if len(raw) > max_value_bytes:
        detail = f"value has {len(raw)} bytes (max {max_value_bytes})"
        raise _Reject(RejectReason.TOO_LARGE, detail)
    if not raw:
        raise _Reject(RejectReason.NOT_JSON, "empty value")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Reject(RejectReason.NOT_UTF8, _clip(str(exc))) from None
    try:
        obj = json.loads(text)
    except RecursionError:
        raise _Reject(RejectReason.NOT_JSON, "JSON nested too deeply") from None
    except ValueError as exc:
        raise _Reject(RejectReason.NOT_JSON, _clip(str(exc))) from None
    if type(obj) is not dict:
        detail = f"top-level JSON is {_json_type(obj)}, not object"
        raise _Reject(RejectReason.NOT_OBJECT, detail)
    return obj


def _id(value: object, name: str, missing: RejectReason) -> str:
    """Return a user or item id as a stripped string."""
    kind = type(value)
    if kind is str:
        text = value.strip()
        if not text:
            raise _Reject(RejectReason.EMPTY_ID, f"{name} is empty")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                detail = f"{name} holds a lone surrogate"
                raise _Reject(RejectReason.BAD_ID_TEXT, detail) from None
    elif kind is int:
        text = str(value)
    elif kind is float and value.is_integer():
        text = str(int(value))
    elif value is _ABSENT:
        raise _Reject(missing, f"{name} is missing")
    elif value is None:
        raise _Reject(missing, f"{name} is null")
    else:
        detail = f"{name} is a {_json_type(value)}" + (f" ({value!r})" if kind is float else "")
        raise _Reject(RejectReason.BAD_ID_TYPE, detail)
    if len(text) > MAX_ID_LENGTH:
        raise _Reject(
            RejectReason.ID_TOO_LONG, f"{name} has {len(text)} characters (max {MAX_ID_LENGTH})"
        )
    return text


def _number_seconds(value: int | float) -> float:
    """Return epoch seconds for a number in epoch seconds or milliseconds."""
    try:
        seconds = float(value)
    except OverflowError:
        too_old = value < 0
        reason = RejectReason.TIMESTAMP_TOO_OLD if too_old else RejectReason.TIMESTAMP_IN_FUTURE
        raise _Reject(reason, "timestamp out of float range") from None
    if not math.isfinite(seconds):
        raise _Reject(RejectReason.NON_FINITE_TIMESTAMP, f"timestamp is {seconds!r}")
    return seconds / 1000.0 if abs(seconds) >= MS_THRESHOLD else seconds


def _string_seconds(value: str) -> float:
    """Return epoch seconds for a numeric string or an ISO-8601 string."""
    text = value.strip()
    if "_" not in text:  # float() would accept digit separators such as "1_700"
        try:
            return _number_seconds(float(text))
        except ValueError:
            pass
    iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    try:
        moment = datetime.fromisoformat(iso)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    except (ValueError, OverflowError, OSError):
        detail = _clip(f"timestamp {value!r} is neither a number nor ISO-8601")
        raise _Reject(RejectReason.BAD_TIMESTAMP, detail) from None


def _timestamp(value: object, latest: float) -> float:
    """Return epoch seconds for a timestamp field, between MIN_TIMESTAMP and ``latest``."""
    kind = type(value)
    if kind is int or kind is float:
        seconds = _number_seconds(value)  # type: ignore[arg-type]
    elif kind is str:
        seconds = _string_seconds(value)  # type: ignore[arg-type]
    elif value is _ABSENT or value is None:
        raise _Reject(RejectReason.MISSING_TIMESTAMP, "timestamp is missing or null")
    else:
        raise _Reject(RejectReason.BAD_TIMESTAMP, f"timestamp is a {_json_type(value)}")
    if seconds < MIN_TIMESTAMP:
        raise _Reject(RejectReason.TIMESTAMP_TOO_OLD, f"timestamp {seconds!r} is before 1990")
    if seconds > latest:
        raise _Reject(
            RejectReason.TIMESTAMP_IN_FUTURE, f"timestamp {seconds!r} is after {latest!r}"
        )
    return seconds


def _event_type(value: object) -> str:
    """Return the canonical event type name."""
    if type(value) is str:
        name = _CANONICAL_EVENT_TYPE.get(value.strip().lower())
        if name is not None:
            return name
        detail = _clip(f"event_type {value!r} is unknown")
        raise _Reject(RejectReason.UNKNOWN_EVENT_TYPE, detail)
    raise _Reject(RejectReason.UNKNOWN_EVENT_TYPE, f"event_type is a {_json_type(value)}")


def _amount(value: object, name: str, reason: RejectReason, allow_zero: bool) -> float:
    """Return a finite quantity (> 0) or price (>= 0) as a float."""
    kind = type(value)
    if kind is not int and kind is not float:
        raise _Reject(reason, f"{name} is a {_json_type(value)}")
    try:
        amount = float(value)  # type: ignore[arg-type]
    except OverflowError:
        raise _Reject(reason, f"{name} out of float range") from None
    if not math.isfinite(amount) or amount < 0.0 or (amount == 0.0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise _Reject(reason, f"{name} {amount!r} is not a finite number {bound}")
    return amount


def parse_values(
    values: Sequence[bytes | None],
    *,
    now: float | None = None,
    max_value_bytes: int = 1_000_000,
) -> tuple[EventBatch, list[Rejection]]:
    """Split a batch of raw record values into valid interactions and rejections.

    ``now`` is the wall clock in epoch seconds (default ``time.time()``); timestamps later than
    ``now + FUTURE_TOLERANCE_S`` are rejected. Every input position ends up either in
    ``EventBatch.positions`` or in exactly one :class:`Rejection`.
    """
    latest = (time.time() if now is None else now) + FUTURE_TOLERANCE_S
    batch = EventBatch()
    rejections: list[Rejection] = []
    add_user, add_item = batch.user_ids.append, batch.item_ids.append
    add_time, add_type = batch.timestamps.append, batch.event_types.append
    add_quantity, add_price = batch.quantities.append, batch.prices.append
    add_position = batch.positions.append
    get_type = _CANONICAL_EVENT_TYPE.get

    for position, raw in enumerate(values):
        try:
            # decode the value, then check fields in the documented order
            obj = _decode(raw, max_value_bytes)
            user_id = _id(obj.get("user_id", _ABSENT), "user_id", RejectReason.MISSING_USER_ID)
            item_id = _id(obj.get("item_id", _ABSENT), "item_id", RejectReason.MISSING_ITEM_ID)
            seconds = _timestamp(obj.get("timestamp", _ABSENT), latest)
            event_type = obj.get("event_type")
            if event_type is None:
                event_type = DEFAULT_EVENT_TYPE
            elif type(event_type) is not str or (canonical := get_type(event_type)) is None:
                event_type = _event_type(event_type)
            else:
                event_type = canonical
            quantity = obj.get("quantity")
            if quantity is not None:
                quantity = _amount(quantity, "quantity", RejectReason.BAD_QUANTITY, False)
            price = obj.get("price")
            if price is not None:
                price = _amount(price, "price", RejectReason.BAD_PRICE, True)
        except _Reject as rejected:
            rejections.append(Rejection(position, rejected.reason, rejected.detail))
            continue

        # keep the valid interaction
        add_user(user_id)
        add_item(item_id)
        add_time(seconds)
        add_type(event_type)
        add_quantity(quantity)
        add_price(price)
        add_position(position)

    _log.debug("parsed %d values: %d valid, %d rejected",
               len(batch) + len(rejections), len(batch), len(rejections))
    return batch, rejections


def dead_letter_value(
    raw: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    reason: RejectReason,
    detail: str,
    timestamp_ms: int | None = None,
    max_raw_bytes: int | None = 262_144,
) -> bytes:
    """Return the dead-letter record value (UTF-8 JSON) for one rejected input value.

    The raw bytes travel base64-encoded in ``raw_b64`` (null for a tombstone). At most
    ``max_raw_bytes`` of them are kept (None keeps all) so that the dead letter of an oversized
    value still fits a broker's message size limit; ``raw_truncated`` says whether any were cut
    and ``raw_size`` is always the full size.
    """
    data = None if raw is None else bytes(raw)
    size = 0 if data is None else len(data)
    truncated = data is not None and max_raw_bytes is not None and size > max_raw_bytes
    if truncated:
        data = data[:max_raw_bytes]  # type: ignore[index]
    record = {
        "reason": RejectReason(reason).value,
        "detail": _clip(str(detail)),
        "source": {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "timestamp_ms": timestamp_ms,
        },
        "raw_b64": None if data is None else base64.b64encode(data).decode("ascii"),
        "raw_size": size,
        "raw_truncated": truncated,
        "rejected_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    }
    return json.dumps(record, separators=(",", ":")).encode("utf-8")
