"""Dataset readers: the presets against their PROVENANCE.md figures, and the generic reader."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from streams import datasets
from streams.datasets import (
    INTERACTION_SCHEMA,
    DatasetError,
    filter_interactions,
    load_dataset,
    read_interactions,
    to_epoch,
)

DATA = datasets.default_data_dir()
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")


def distinct(table: pa.Table, column: str) -> int:
    return len(pc.unique(table[column]))


def is_sorted(table: pa.Table) -> bool:
    ts = table["timestamp"].to_numpy()
    return bool((ts[1:] >= ts[:-1]).all())


@pytest.fixture(scope="module")
def retail() -> pa.Table:
    return load_dataset("online-retail-uci")


@pytest.fixture(scope="module")
def stream() -> pa.Table:
    return load_dataset("taobao-userbehavior-stream")


def test_online_retail_purchase_rows_match_provenance(retail: pa.Table) -> None:
    assert retail.schema == INTERACTION_SCHEMA
    assert retail.num_rows == 397_924
    assert distinct(retail, "user_id") == 4_339
    assert distinct(retail, "item_id") == 3_665
    assert pc.all(pc.greater(retail["quantity"], 0)).as_py()
    assert pc.unique(retail["event_type"]).to_pylist() == ["purchase"]
    assert is_sorted(retail)


def test_online_retail_ids_are_text_and_dates_read_as_utc(retail: pa.Table) -> None:
    first = retail.slice(0, 1).to_pylist()[0]
    assert first == {"user_id": "17850", "item_id": "85123A", "event_type": "purchase",
                     "timestamp": dt.datetime(2010, 12, 1, 8, 26, tzinfo=dt.timezone.utc)
                     .timestamp(), "quantity": 6.0, "price": 2.55}
    assert not pc.any(pc.match_substring(retail["user_id"], ".")).as_py()


def test_online_retail_keeps_file_order_within_equal_timestamps(retail: pa.Table) -> None:
    # the file is in time order, so a stable sort must give back the purchase rows as filed
    raw = pq.read_table(DATA / "online-retail-uci" / "online_retail.parquet")
    keep = pc.and_(pc.and_(pc.is_valid(raw["CustomerID"]),
                           pc.invert(pc.starts_with(raw["InvoiceNo"], "C"))),
                   pc.greater(raw["Quantity"], 0))
    assert retail["item_id"].to_pylist() == raw.filter(keep)["StockCode"].to_pylist()


def test_online_retail_from_november_2011() -> None:
    table = load_dataset("online-retail-uci", since="2011-11-01")
    assert (table.num_rows, distinct(table, "user_id"), distinct(table, "item_id")) == (
        81_849, 1_909, 2_771)
    assert pc.min(table["timestamp"]).as_py() >= to_epoch("2011-11-01")


def test_taobao_head_drops_truncated_row_and_outliers(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="streams.datasets"):
        table = load_dataset("taobao-userbehavior-head")
    assert "skipped 1 malformed row" in caplog.text
    # 84,475 complete rows, less the 35 outside the nine days (all of them page views)
    assert table.num_rows == 84_440
    assert distinct(table, "user_id") == 815
    kinds = pc.value_counts(table["event_type"]).to_pylist()
    counts = {d["values"]: d["counts"] for d in kinds}
    assert counts == {"pv": 75_837, "cart": 4_497, "fav": 2_356, "buy": 1_750}
    lo, hi = datasets.TAOBAO_WINDOW
    assert pc.min(table["timestamp"]).as_py() >= lo and pc.max(table["timestamp"]).as_py() < hi
    assert is_sorted(table)


def test_taobao_stream_rows_in_file_order(stream: pa.Table) -> None:
    assert stream.num_rows == 110_300
    assert distinct(stream, "user_id") == 66_454
    assert is_sorted(stream)
    raw = pcsv.read_csv(DATA / "taobao-userbehavior-stream" / "UserBehavior.csv",
                        read_options=pcsv.ReadOptions(autogenerate_column_names=True))
    assert stream["item_id"].to_pylist() == [str(x) for x in raw["f1"].to_pylist()]
    assert stream["user_id"][0].as_py() == "543462"


def test_diginetica_drops_anonymous_views_and_orders_by_session() -> None:
    table = load_dataset("diginetica-sample")
    assert table.num_rows == 4_710
    assert distinct(table, "user_id") == 1_270
    assert "NA" not in table["user_id"].to_pylist()
    assert pc.unique(table["event_type"]).to_pylist() == ["view"]
    assert is_sorted(table)
    assert pc.all(pc.equal(pc.divide(table["timestamp"], 86400.0),
                           pc.floor(pc.divide(table["timestamp"], 86400.0)))).as_py()


def test_filters_event_types_until_and_limit(stream: pa.Table) -> None:
    buys = load_dataset("taobao-userbehavior-stream", event_types=["buy"])
    assert buys.num_rows == 2_493
    first = filter_interactions(stream, limit=10)
    assert first.to_pylist() == stream.slice(0, 10).to_pylist()
    early = filter_interactions(stream, until=1511658000 + 60)
    assert 0 < early.num_rows < stream.num_rows
    assert pc.max(early["timestamp"]).as_py() < 1511658060


def test_data_dir_from_env_and_argument(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "taobao-userbehavior-stream"
    folder.mkdir()
    (folder / "UserBehavior.csv").write_text("7,70,1,pv,1511658001\n8,80,1,buy,1511658000\n")
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path))
    table = load_dataset("taobao-userbehavior-stream")
    assert table["user_id"].to_pylist() == ["8", "7"]
    assert load_dataset("taobao-userbehavior-stream", data_dir=DATA).num_rows == 110_300
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("no-such-set")


CSV = """uid;sku;when;kind;qty;amount
u1;007;1700000010;view;;
u2;008;1700000000;buy;2;3.5
;009;1700000005;view;1;1
u3;010;1700000000;cart;1;
"""


def test_generic_csv_with_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(CSV)
    table = read_interactions(path, user_col="uid", item_col="sku", time_col="when",
                              event_col="kind", quantity_col="qty", price_col="amount",
                              delimiter=";", time_unit="s")
    assert table.schema == INTERACTION_SCHEMA
    # the row without a user is dropped; the two rows at 1700000000 keep their file order
    assert table.to_pylist() == [
        {"user_id": "u2", "item_id": "008", "timestamp": 1700000000.0, "event_type": "buy",
         "quantity": 2.0, "price": 3.5},
        {"user_id": "u3", "item_id": "010", "timestamp": 1700000000.0, "event_type": "cart",
         "quantity": 1.0, "price": None},
        {"user_id": "u1", "item_id": "007", "timestamp": 1700000010.0, "event_type": "view",
         "quantity": None, "price": None},
    ]


@pytest.mark.parametrize("unit, values", [
    ("ms", ["1700000000500", "1700000001000"]),
    ("auto", ["1700000000500", "1700000001000"]),
    ("iso", ["2023-11-14T22:13:20.5Z", "2023-11-15T06:13:21+08:00"]),
])
def test_generic_time_units(tmp_path: Path, unit: str, values: list[str]) -> None:
    path = tmp_path / "t.csv"
    path.write_text("".join(f"u,i{n},{v}\n" for n, v in enumerate(values)))
    table = read_interactions(path, user_col="a", item_col="b", time_col="c",
                              has_header=False, column_names=["a", "b", "c"], time_unit=unit)
    assert table["timestamp"].to_pylist() == [1700000000.5, 1700000001.0]
    assert table["event_type"].to_pylist() == ["purchase", "purchase"]


def test_generic_naive_iso_in_a_time_zone_and_parquet(tmp_path: Path) -> None:
    raw = pa.table({"who": [17850.0, 13047.0, None], "what": ["85123A", "71053", "x"],
                    "at": ["2011-07-01 09:00:00", "2011-12-01 09:00:00",
                           "2011-12-01 10:00:00"]})
    path = tmp_path / "r.parquet"
    pq.write_table(raw, path)
    table = read_interactions(path, user_col="who", item_col="what", time_col="at",
                              time_zone="Europe/London", event_type_default="view")
    summer = dt.datetime(2011, 7, 1, 8, tzinfo=dt.timezone.utc).timestamp()  # BST is UTC+1
    winter = dt.datetime(2011, 12, 1, 9, tzinfo=dt.timezone.utc).timestamp()
    assert table["timestamp"].to_pylist() == [summer, winter]
    assert table["user_id"].to_pylist() == ["17850", "13047"]
    assert table["event_type"].to_pylist() == ["view", "view"]


def test_generic_reader_errors(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("a,b,c\nu,i,1\n")
    with pytest.raises(DatasetError, match="not in"):
        read_interactions(path, user_col="a", item_col="b", time_col="missing")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DatasetError, match="format"):
        read_interactions(tmp_path / "x.json", user_col="a", item_col="b", time_col="c")
    with pytest.raises(DatasetError, match="numbers"):
        read_interactions(path, user_col="a", item_col="b", time_col="c", time_unit="iso")
