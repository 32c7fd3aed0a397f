"""Broker, topic creation and the replay producer against a real Kafka-protocol broker."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from kafka import KafkaConsumer, TopicPartition

from infra import broker as broker_mod
from infra.broker import BrokerError, free_port, start_broker, stop_broker
from infra.topics import TopicSpec, ensure_topics, partition_counts, topic_configs
from streams import replay as replay_mod
from streams.datasets import INTERACTION_SCHEMA, default_data_dir, load_dataset
from streams.replay import ReplayError, encode_events, replay

DATA = default_data_dir()
integration = pytest.mark.integration


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 20) -> list:
    """Every record of partition 0 from the beginning; stops once `expected` arrived and a
    short extra poll found nothing more."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", group_id=None)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        for batch in consumer.poll(timeout_ms=300).values():
            records.extend(batch)
    finally:
        consumer.close()
    return records


def expected_value(row: dict) -> dict:
    return {k: v for k, v in row.items() if v is not None}


def test_encode_events_leaves_out_missing_fields() -> None:
    table = pa.table({"user_id": ["u1", "ü2"], "item_id": ["i", "j"],
                      "timestamp": [1.5, 2.0], "event_type": ["buy", "pv"],
                      "quantity": [None, 2.0], "price": [float("nan"), 0.0]},
                     schema=INTERACTION_SCHEMA)
    pairs = list(encode_events(table))
    assert pairs[0] == (
        b"u1", b'{"user_id":"u1","item_id":"i","timestamp":1.5,"event_type":"buy"}')
    assert pairs[1][0] == "ü2".encode()
    assert json.loads(pairs[1][1]) == {"user_id": "ü2", "item_id": "j", "timestamp": 2.0,
                                       "event_type": "pv", "quantity": 2.0, "price": 0.0}


def test_replay_cli_reports_an_unreachable_broker(capsys: pytest.CaptureFixture) -> None:
    code = replay_mod.main(["--dataset", "diginetica-sample", "--limit", "5", "--no-progress",
                            "--bootstrap", f"127.0.0.1:{free_port()}"])
    assert code == 1
    assert "error:" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--since", "notadate"], "--since: 'notadate' is neither epoch seconds nor an ISO"),
    (["--until", "2011-13-45"], "--until: '2011-13-45' is neither"),
    (["--rate", "-5"], "--rate: '-5' is not a positive number"),
    (["--rate", "inf"], "--rate: 'inf' is not a positive number"),
])
def test_replay_cli_refuses_bad_bounds_and_rates_with_a_usage_error(
        args, message, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        replay_mod.main(["--dataset", "diginetica-sample", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@integration
@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")
def test_replay_online_retail_round_trip(kafka_bootstrap: str,
                                         unique_name: Callable[[str], str]) -> None:
    topic = unique_name("interactions")
    assert ensure_topics(kafka_bootstrap, [TopicSpec(topic, partitions=1)]) == [topic]
    assert ensure_topics(kafka_bootstrap, [TopicSpec(topic, partitions=1)]) == []
    assert partition_counts(kafka_bootstrap, [topic, unique_name("absent")]) == {topic: 1}

    table = load_dataset("online-retail-uci", limit=3000)
    report = replay(table, bootstrap=kafka_bootstrap, topic=topic, progress=False)
    assert report.sent == 3000 and report.events_per_s > 0

    records = consume_all(kafka_bootstrap, topic, 3000)
    assert len(records) == 3000
    assert [r.offset for r in records] == list(range(3000))
    rows = table.to_pylist()
    assert [r.key for r in records] == [row["user_id"].encode() for row in rows]
    assert [json.loads(r.value) for r in records] == [expected_value(row) for row in rows]


@integration
def test_replay_extra_rows_and_rate(kafka_bootstrap: str,
                                    unique_name: Callable[[str], str]) -> None:
    topic = unique_name("paced")
    ensure_topics(kafka_bootstrap, [TopicSpec(topic)])
    table = pa.table({"user_id": [f"u{i}" for i in range(300)],
                      "item_id": ["i"] * 300, "timestamp": [float(i) for i in range(300)],
                      "event_type": ["purchase"] * 300, "quantity": [None] * 300,
                      "price": [None] * 300}, schema=INTERACTION_SCHEMA)
    report = replay(table, bootstrap=kafka_bootstrap, topic=topic, rate=1000, progress=False,
                    extra_rows=[b"not json"])
    assert report.sent == 301
    assert report.seconds >= 0.25  # 301 events at 1000/s, paced in rounds of 100
    records = consume_all(kafka_bootstrap, topic, 301)
    assert len(records) == 301
    assert (records[-1].key, records[-1].value) == (None, b"not json")


@integration
def test_replay_raises_when_a_send_fails(kafka_bootstrap: str,
                                         unique_name: Callable[[str], str]) -> None:
    topic = unique_name("too-large")
    ensure_topics(kafka_bootstrap, [TopicSpec(topic)])
    table = pa.table({"user_id": ["u"], "item_id": ["x" * 2_000_000], "timestamp": [1.0],
                      "event_type": ["view"], "quantity": [None], "price": [None]},
                     schema=INTERACTION_SCHEMA)
    with pytest.raises(ReplayError, match="MessageSizeTooLarge"):
        replay(table, bootstrap=kafka_bootstrap, topic=topic, progress=False)


@integration
def test_topic_config_compaction_is_recorded(kafka_bootstrap: str,
                                             unique_name: Callable[[str], str]) -> None:
    topic = unique_name("recommendations")
    spec = TopicSpec(topic, partitions=4, config={"cleanup.policy": "compact"})
    assert ensure_topics(kafka_bootstrap, [spec]) == [topic]
    assert partition_counts(kafka_bootstrap, [topic]) == {topic: 4}
    assert topic_configs(kafka_bootstrap, topic).get("cleanup.policy") == "compact"


def test_ensure_topics_times_out_without_a_broker() -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="no Kafka broker"):
        ensure_topics(f"127.0.0.1:{free_port()}", [TopicSpec("t")], timeout_s=1.5)
    assert time.monotonic() - start < 10


@integration
def test_broker_start_and_stop_leave_no_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "broker.pid"
    with start_broker(free_port(), pid_file=pid_file) as broker:
        assert broker.alive()
        assert broker_mod.read_pid_file(pid_file)["pid"] == str(broker.pid)
        ensure_topics(broker.bootstrap, [TopicSpec("probe")])
        workdir = broker.workdir
    assert not broker.alive()
    assert not os.path.exists(f"/proc/{broker.pid}")
    assert workdir is not None and not workdir.exists() and not pid_file.exists()
    assert stop_broker(broker.pid) is False


@integration
def test_broker_cli_start_status_stop(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pid_file, log = tmp_path / "b.pid", tmp_path / "b.log"
    port = str(free_port())
    assert broker_mod.main(["start", "--port", port, "--pid-file", str(pid_file),
                            "--log", str(log)]) == 0
    pid = int(broker_mod.read_pid_file(pid_file)["pid"])
    try:
        assert f"127.0.0.1:{port}" in capsys.readouterr().out
        assert broker_mod.main(["status", "--pid-file", str(pid_file)]) == 0
    finally:
        assert broker_mod.main(["stop", "--pid-file", str(pid_file)]) == 0
    assert not os.path.exists(f"/proc/{pid}")
    assert broker_mod.main(["status", "--pid-file", str(pid_file)]) == 1
    assert "ready in" in log.read_text()


def test_broker_refuses_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(BrokerError, match="already accepts connections"):
            start_broker(busy.getsockname()[1], wait_s=2)
