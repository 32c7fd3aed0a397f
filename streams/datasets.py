"""Interaction dataset readers (pyarrow only) with presets for the shared data files.

Every reader returns a table in INTERACTION_SCHEMA, sorted by timestamp with a stable sort (file
order breaks ties). Filtering and casting are vectorised with pyarrow.compute.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

INTERACTION_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("item_id", pa.string()),
    ("timestamp", pa.float64()),  # epoch seconds, UTC
    ("event_type", pa.string()),
    ("quantity", pa.float64()),  # nullable
    ("price", pa.float64()),  # nullable
])
DATA_DIR_ENV = "MBNMRN_SHARED_DATA"
TAOBAO_WINDOW = (1511539200.0, 1512316800.0)  # 2017-11-25 to 2017-12-04 00:00 China time
TIME_UNITS = ("auto", "s", "ms", "iso")
TimeBound = float | int | str | dt.datetime | dt.date


class DatasetError(ValueError):
    """A dataset file or a reader argument cannot be used."""


def read_interactions(
    path: str | Path,
    *,
    user_col: str,
    item_col: str,
    time_col: str,
    fmt: str | None = None,
    event_col: str | None = None,
    quantity_col: str | None = None,
    price_col: str | None = None,
    has_header: bool = True,
    delimiter: str = ",",
    column_names: list[str] | None = None,
    time_unit: str = "auto",
    time_zone: str = "UTC",
    event_type_default: str = "purchase",
    drop_null_ids: bool = True,
    since: TimeBound | None = None,
    until: TimeBound | None = None,
    event_types: Iterable[str] | None = None,
    limit: int | None = None,
) -> pa.Table:
    """Read a CSV or Parquet file of interactions, mapping its columns to the schema.

    `fmt` defaults to the file suffix. A CSV without header and without `column_names` has
    columns f0, f1, ... `time_unit`: "s" or "ms" for epoch numbers, "iso" for date/time text,
    "auto" to decide from the column. Naive times are read in `time_zone`. Rows that do not
    parse (such as a truncated last line) are skipped with a warning.
    """
    raw = read_raw(path, fmt=fmt, has_header=has_header, delimiter=delimiter,
                   column_names=column_names, id_cols=(user_col, item_col))
    table = to_interactions(raw, user_col=user_col, item_col=item_col, time_col=time_col,
                            event_col=event_col, quantity_col=quantity_col, price_col=price_col,
                            time_unit=time_unit, time_zone=time_zone,
                            event_type_default=event_type_default, drop_null_ids=drop_null_ids)
    return filter_interactions(sort_stable(table), since=since, until=until,
                               event_types=event_types, limit=limit)


def read_raw(
    path: str | Path,
    *,
    fmt: str | None = None,
    has_header: bool = True,
    delimiter: str = ",",
    column_names: list[str] | None = None,
    id_cols: Iterable[str] = (),
) -> pa.Table:
    """Read a file as it is. CSV id columns are read as text (so "007" stays "007"), and
    "NA", "null", "" and the like are read as missing in every column."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if not path.is_file():
        raise DatasetError(f"no such file: {path}")
    if fmt in ("parquet", "pq"):
        table = pq.read_table(path)
        return table.rename_columns(column_names) if column_names else table
    if fmt not in ("csv", "tsv", "txt"):
        raise DatasetError(f"cannot tell the format of {path}; pass fmt='csv' or 'parquet'")
    skipped: list[str] = []

    def skip(row: pcsv.InvalidRow) -> str:
        skipped.append(row.text or "")
        return "skip"

    named = bool(column_names)
    read = pcsv.ReadOptions(column_names=column_names, skip_rows=int(has_header and named),
                            autogenerate_column_names=not (has_header or named))
    table = pcsv.read_csv(
        path, read_options=read,
        parse_options=pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=skip),
        convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in id_cols},
                                            strings_can_be_null=True))
    if skipped:
        logger.warning("%s: skipped %d malformed row(s), the first: %r", path, len(skipped),
                       skipped[0][:80])
    return table


def to_interactions(
    raw: pa.Table,
    *,
    user_col: str,
    item_col: str,
    time_col: str,
    event_col: str | None = None,
    quantity_col: str | None = None,
    price_col: str | None = None,
    time_unit: str = "auto",
    time_zone: str = "UTC",
    event_type_default: str = "purchase",
    drop_null_ids: bool = True,
) -> pa.Table:
    """Map the columns of a raw table to the interaction schema; the row order is kept."""
    wanted = (user_col, item_col, time_col, event_col, quantity_col, price_col)
    missing = [c for c in wanted if c is not None and c not in raw.column_names]
    if missing:
        raise DatasetError(f"columns {missing} are not in {raw.column_names}")
    n = raw.num_rows
    events = (pa.repeat(pa.scalar(event_type_default, pa.string()), n) if event_col is None
              else pc.fill_null(_as_text(raw[event_col]), event_type_default))
    table = pa.table([
        _as_id(raw[user_col]),
        _as_id(raw[item_col]),
        to_epoch_seconds(raw[time_col], unit=time_unit, time_zone=time_zone),
        events,
        _as_float(raw[quantity_col] if quantity_col else None, n),
        _as_float(raw[price_col] if price_col else None, n),
    ], schema=INTERACTION_SCHEMA)
    if drop_null_ids:
        keep = pc.and_(_present(table["user_id"]), _present(table["item_id"]))
        table = table.filter(pc.and_(keep, pc.is_valid(table["timestamp"])))
    return table


def to_epoch_seconds(col: pa.ChunkedArray, *, unit: str = "auto",
                     time_zone: str = "UTC") -> pa.ChunkedArray:
    """A time column (numbers, text, dates or timestamps) as float64 epoch seconds."""
    if unit not in TIME_UNITS:
        raise DatasetError(f"time_unit must be one of {TIME_UNITS}, not {unit!r}")
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        numeric = unit in ("s", "ms") or (unit == "auto" and _looks_numeric(col))
        col = pc.cast(col, pa.float64()) if numeric else _parse_iso(col)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        if unit == "iso":
            raise DatasetError("time_unit='iso' given but the time column holds numbers")
        secs = pc.cast(col, pa.float64())
        if unit == "ms" or (unit == "auto" and _looks_like_ms(secs)):
            secs = pc.divide(secs, 1000.0)
        return secs
    if pa.types.is_date(col.type):
        col = pc.cast(col, pa.timestamp("s"))
    if not pa.types.is_timestamp(col.type):
        raise DatasetError(f"cannot read times of type {col.type}")
    if col.type.tz is None:
        col = pc.assume_timezone(col, time_zone, ambiguous="earliest", nonexistent="earliest")
    micros = pc.cast(pc.cast(col, pa.timestamp("us", "UTC")), pa.int64())
    return pc.divide(pc.cast(micros, pa.float64()), 1e6)


def sort_stable(table: pa.Table) -> pa.Table:
    """Sort by timestamp; the row number as second key keeps ties in file order."""
    rows = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    return table.take(pc.sort_indices(rows, sort_keys=[("timestamp", "ascending"),
                                                       ("__row", "ascending")]))


def filter_interactions(
    table: pa.Table,
    *,
    since: TimeBound | None = None,
    until: TimeBound | None = None,
    event_types: Iterable[str] | None = None,
    limit: int | None = None,
) -> pa.Table:
    """Rows with since <= timestamp < until and an event type in `event_types`, then the first
    `limit` of them. Bounds are epoch seconds, dates or ISO strings (naive ones are UTC)."""
    conds = []
    if since is not None:
        conds.append(pc.greater_equal(table["timestamp"], to_epoch(since)))
    if until is not None:
        conds.append(pc.less(table["timestamp"], to_epoch(until)))
    if event_types is not None:
        kinds = pa.array(list(event_types), pa.string())
        conds.append(pc.is_in(table["event_type"], value_set=kinds))
    if conds:
        mask = conds[0]
        for cond in conds[1:]:
            mask = pc.and_(mask, cond)
        table = table.filter(mask)
    return table if limit is None else table.slice(0, limit)


def to_epoch(bound: TimeBound) -> float:
    """Epoch seconds of a number, a numeric or ISO date/time string, a date or a datetime."""
    if isinstance(bound, (int, float)):
        return float(bound)
    if isinstance(bound, str):
        try:
            return float(bound)
        except ValueError:
            bound = dt.datetime.fromisoformat(bound)
    if not isinstance(bound, dt.datetime):
        bound = dt.datetime(bound.year, bound.month, bound.day)
    if bound.tzinfo is None:
        bound = bound.replace(tzinfo=dt.timezone.utc)
    return bound.timestamp()


def default_data_dir() -> Path:
    """$MBNMRN_SHARED_DATA, else ../shared/data relative to the repository root."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def preset_names() -> list[str]:
    """Names accepted by `load_dataset`."""
    return sorted(_PRESETS)


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    since: TimeBound | None = None,
    until: TimeBound | None = None,
    event_types: Iterable[str] | None = None,
    limit: int | None = None,
) -> pa.Table:
    """One of the shared data sets by preset name, cleaned as its PROVENANCE.md says."""
    if name not in _PRESETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(preset_names())}")
    folder = (Path(data_dir) if data_dir is not None else default_data_dir()) / name
    table = sort_stable(_PRESETS[name](folder))
    logger.info("dataset %s: %d interactions", name, table.num_rows)
    return filter_interactions(table, since=since, until=until, event_types=event_types,
                               limit=limit)


PRODUCT_CODE = r"^\d{5}"  # Online Retail product StockCodes: five digits, maybe a letter


def products_only(table: pa.Table, pattern: str = PRODUCT_CODE) -> pa.Table:
    """Rows whose item id matches `pattern`: drops Online Retail's non-product lines
    (POST, DOT, M, C2, BANK CHARGES, AMAZONFEE, gift vouchers...), which a shop would
    not recommend."""
    return table.filter(pc.match_substring_regex(table["item_id"], pattern))


def _online_retail(folder: Path) -> pa.Table:
    """Purchase lines: a customer id, no "C" (cancellation) invoice, a positive quantity.

    InvoiceDate is UK local time without a zone. It is read as UTC on purpose: summer times are
    one hour late, but every day boundary and the file order stay as they are.
    """
    raw = pq.read_table(folder / "online_retail.parquet")
    keep = pc.and_(pc.and_(pc.is_valid(raw["CustomerID"]),
                           pc.invert(pc.starts_with(raw["InvoiceNo"], "C"))),
                   pc.greater(raw["Quantity"], 0))
    return to_interactions(raw.filter(keep), user_col="CustomerID", item_col="StockCode",
                           time_col="InvoiceDate", quantity_col="Quantity",
                           price_col="UnitPrice", time_unit="iso")


def _taobao(folder: Path) -> pa.Table:
    """No header. The head file's truncated last line is skipped as malformed; timestamps
    outside the nine official days are dropped."""
    raw = read_raw(folder / "UserBehavior.csv", has_header=False,
                   column_names=["user_id", "item_id", "category_id", "behavior", "ts"],
                   id_cols=("user_id", "item_id"))
    table = to_interactions(raw, user_col="user_id", item_col="item_id", time_col="ts",
                            event_col="behavior", time_unit="s")
    lo, hi = TAOBAO_WINDOW
    ts = table["timestamp"]
    return table.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))


def _diginetica(folder: Path) -> pa.Table:
    """Views by logged-in users ("NA" users dropped). Only the day is absolute, so the timestamp
    is the day's midnight UTC and the order within a day is (session_id, timeframe)."""
    raw = read_raw(folder / "sample_train-item-views.csv", delimiter=";",
                   id_cols=("user_id", "item_id"))
    order = [(c, "ascending") for c in ("eventdate", "session_id", "timeframe")]
    return to_interactions(raw.take(pc.sort_indices(raw, sort_keys=order)), user_col="user_id",
                           item_col="item_id", time_col="eventdate", time_unit="iso",
                           event_type_default="view")


_PRESETS: dict[str, Callable[[Path], pa.Table]] = {
    "online-retail-uci": _online_retail,
    "taobao-userbehavior-head": _taobao,
    "taobao-userbehavior-stream": _taobao,
    "diginetica-sample": _diginetica,
}


def _as_id(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Ids as text; a float column of whole numbers (17850.0) becomes "17850"."""
    if pa.types.is_floating(col.type):
        if pc.all(pc.equal(pc.floor(col), col)).as_py() is not False:
            col = pc.cast(col, pa.int64())
    return _as_text(col)


def _as_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    return pc.cast(col, pa.string())


def _as_float(col: pa.ChunkedArray | None, n: int) -> pa.Array | pa.ChunkedArray:
    """float64 with NaN read as missing; all missing when there is no column."""
    if col is None:
        return pa.nulls(n, pa.float64())
    col = pc.cast(col, pa.float64())
    return pc.if_else(pc.is_nan(col), pa.scalar(None, pa.float64()), col)


def _present(col: pa.ChunkedArray) -> pa.ChunkedArray:
    text = pc.utf8_trim_whitespace(col)
    return pc.and_(pc.is_valid(text), pc.greater(pc.utf8_length(text), 0))


def _looks_numeric(col: pa.ChunkedArray) -> bool:
    sample = col.drop_null().slice(0, 100)
    pattern = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
    return len(sample) > 0 and bool(pc.all(pc.match_substring_regex(sample, pattern)).as_py())


def _looks_like_ms(secs: pa.ChunkedArray) -> bool:
    """Epoch seconds stay below 1e11 until the year 5138; milliseconds passed it in 1973."""
    top = pc.max(pc.abs(secs)).as_py()
    return top is not None and top >= 1e11


def _parse_iso(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """ISO 8601 text: all naive, or all with a zone offset (or Z)."""
    for target in (pa.timestamp("us"), pa.timestamp("us", "UTC")):
        try:
            return pc.cast(col, target)
        except pa.ArrowInvalid:
            continue
    raise DatasetError("times are not ISO 8601, or mix ones with and without a zone offset")
