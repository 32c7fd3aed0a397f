"""The trainer job against a real broker and a real RocksDB: lists, dead letters, resume."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from streams.datasets import load_dataset
from streams.job import StreamTrainer
from streams.replay import replay
from streams.settings import Settings
from tests.conftest import distinct_events, run_job

pytestmark = pytest.mark.integration

EVENTS = 3000
WINDOW = 512
BAD_VALUES = [
    b"\xff\xfe not utf-8",
    b"[1, 2, 3]",
    b'{"item_id": "85123A", "timestamp": 1320000000}',
    b'{"user_id": "", "item_id": "85123A", "timestamp": 1320000000}',
    b'{"user_id": "1", "item_id": "85123A", "timestamp": NaN}',
    b'{"user_id": "1", "item_id": "85123A", "timestamp": 1320000000, "event_type": "refund"}',
    b'{"user_id": "1", "item_id": "85123A", "timestamp": 1320000000, "quantity": -2}',
    b"not json at all",
]


@pytest.fixture(scope="module")
def retail_events():
    return load_dataset("online-retail-uci", since="2011-11-01", limit=EVENTS)


def _settings(bootstrap: str, unique_name, data_dir: Path, **overrides) -> Settings:
    return Settings.from_env(
        {},
        kafka_bootstrap_servers=bootstrap,
        input_topic=unique_name("interactions"),
        dlq_topic=unique_name("dlq"),
        recommendations_topic=unique_name("recs"),
        metrics_topic=unique_name("metrics"),
        group_id=unique_name("trainer"),
        window_size=WINDOW,
        flush_seconds=1.0,
        eval_candidates=200,
        data_dir=data_dir,
        device="cpu",
        **overrides,
    )


async def _start_and_close(job: StreamTrainer) -> None:
    await job.start()
    await job.close()


def _read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 20) -> list:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        consumer_timeout_ms=2000, enable_auto_commit=False,
    )
    out, deadline = [], time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            out += list(consumer)
    finally:
        consumer.close()
    return out


def test_trains_publishes_dead_letters_and_resumes(kafka_bootstrap, unique_name, tmp_path,
                                                   retail_events):
    settings = _settings(kafka_bootstrap, unique_name, tmp_path / "data")
    asyncio.run(_start_and_close(StreamTrainer(settings)))  # creates the topics

    # Bad events interleaved with a few thousand real purchases.
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for value in BAD_VALUES[:4]:
        producer.send(settings.input_topic, value)
    producer.flush()
    replay(retail_events, bootstrap=kafka_bootstrap, topic=settings.input_topic, progress=False)
    for value in BAD_VALUES[4:]:
        producer.send(settings.input_topic, value)
    producer.flush()
    producer.close()

    job = StreamTrainer(settings)
    trained = distinct_events(retail_events)  # exact duplicate rows are dropped
    asyncio.run(run_job(job, lambda j: j.counters["events_trained"] >= trained
                        and j.buffer.opened_at is None))
    assert job.counters["events_trained"] == trained
    assert job.counters["duplicates_skipped"] == EVENTS - trained
    assert job.counters["dead_letters"] == len(BAD_VALUES)
    windows = job.recommender.windows
    assert windows == -(-trained // WINDOW)  # full windows plus the flushed partial one
    assert job.checkpointed_offsets == {f"{settings.input_topic}/0": EVENTS + len(BAD_VALUES)}

    # Dead letters: each bad record with its reason and its raw bytes.
    dead = [json.loads(m.value) for m in _read_all(kafka_bootstrap, settings.dlq_topic, 8)]
    reasons = sorted(d["reason"] for d in dead)
    assert reasons == sorted(["not_utf8", "not_object", "missing_user_id", "empty_id",
                              "non_finite_timestamp", "unknown_event_type", "bad_quantity",
                              "not_json"])
    assert all(d["source"]["topic"] == settings.input_topic for d in dead)

    # Recommendation lists: every user of the replay, K distinct known items each.
    users = set(retail_events.column("user_id").to_pylist())
    items = set(retail_events.column("item_id").to_pylist())
    lists = {}
    for m in _read_all(kafka_bootstrap, settings.recommendations_topic, len(users)):
        value = json.loads(m.value)
        assert m.key.decode() == value["user_id"]
        lists[value["user_id"]] = value
    assert set(lists) == users
    for value in lists.values():
        ids = [r["item_id"] for r in value["items"]]
        assert len(ids) == settings.top_k == len(set(ids))
        assert set(ids) <= items
        scores = [r["score"] for r in value["items"]]
        assert scores == sorted(scores, reverse=True)

    metrics = [json.loads(m.value) for m in _read_all(kafka_bootstrap, settings.metrics_topic,
                                                       windows)]
    assert [m["window"] for m in metrics] == list(range(windows))
    assert metrics[-1]["cumulative"]["evaluated"] > 0

    # Restart: the checkpoint is restored and scores are identical.
    sample = sorted(users)[:20]
    before = {u: job.recommend(u) for u in sample}
    resumed = StreamTrainer(settings)
    asyncio.run(_start_and_close(resumed))
    assert resumed.recommender.windows == windows
    assert resumed.counters["events_trained"] == trained
    for u in sample:
        assert resumed.recommend(u)["items"] == before[u]["items"]
    assert resumed.recommend("no-such-user") is None
