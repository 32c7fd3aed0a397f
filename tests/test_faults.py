"""Bad input, numerical faults, damaged checkpoints, slow windows and secrets, end to end."""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest
import torch
from kafka import KafkaConsumer, KafkaProducer

from infra.broker import free_port
from infra.worker import start_worker
from streams.app import build_app
from streams.checkpoint import CheckpointStore
from streams.job import StreamTrainer
from streams.security import aiokafka_kwargs, kafka_python_kwargs
from streams.settings import Settings
from tests.conftest import run_job, worker_env

pytestmark = pytest.mark.integration

T = 1_322_733_600  # 2011-12-01T10:00:00Z
BIG = "x" * 10_000


def _event(user: object, item: object = "85123A", ts: object = T, **extra: object) -> bytes:
    return json.dumps({"user_id": user, "item_id": item, "timestamp": ts, **extra}).encode()


# (bad value, expected dead-letter reason); each is followed by a good event.
CATALOGUE = [
    (b"\xc3\x28 invalid utf-8", "not_utf8"),
    (b"[1, 2]", "not_object"),
    (b'"just a string"', "not_object"),
    (b"{not json", "not_json"),
    (None, "not_json"),  # a tombstone
    (b'{"item_id": "1", "timestamp": 1322733600}', "missing_user_id"),
    (_event(""), "empty_id"),
    (_event(None), "missing_user_id"),
    (_event("u", None), "missing_item_id"),
    (_event(True), "bad_id_type"),
    (_event(["u"]), "bad_id_type"),
    (_event(1.5), "bad_id_type"),
    (_event(BIG), "id_too_long"),
    (b'{"user_id": "u", "item_id": "i", "timestamp": 1322733600, "pad": "'
     + b"y" * 3_000_000 + b'"}', "too_large"),
    (_event("u", ts=4_102_444_800), "timestamp_in_future"),  # 2100
    (_event("u", ts=86_400), "timestamp_too_old"),  # 1970
    (b'{"user_id": "u", "item_id": "i", "timestamp": NaN}', "non_finite_timestamp"),
    (b'{"user_id": "u", "item_id": "i", "timestamp": Infinity}', "non_finite_timestamp"),
    (_event("u", ts="yesterday"), "bad_timestamp"),
    (_event("u", quantity=-3), "bad_quantity"),
    (_event("u", event_type="refund"), "unknown_event_type"),
]
# Valid forms: the same instant in seconds, milliseconds and ISO-8601 with zones.
VALID_TIMES = [T, T * 1000, "2011-12-01T10:00:00Z", "2011-12-01T19:00:00+09:00",
               "2011-12-01 10:00:00"]


def _settings(bootstrap: str, unique_name, tmp_path, **overrides) -> Settings:
    env = worker_env(bootstrap, unique_name, str(tmp_path / "data"))
    return Settings.from_env(env, device="cpu", **overrides)


def _consume(bootstrap: str, topic: str, n: int) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000, fetch_max_bytes=16 * 1024 * 1024,
                             max_partition_fetch_bytes=16 * 1024 * 1024)
    out = []
    deadline = time.monotonic() + 20
    while len(out) < n and time.monotonic() < deadline:
        out += list(consumer)
    consumer.close()
    return out


def test_bad_input_catalogue_each_dead_lettered_and_the_next_event_trained(
        kafka_bootstrap, unique_name, tmp_path):
    settings = _settings(kafka_bootstrap, unique_name, tmp_path, window_size=4)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=8_000_000)
    asyncio.run(run_job(StreamTrainer(settings), lambda job: True))  # creates the topics
    goods = []
    for n, (bad, _) in enumerate(CATALOGUE):
        producer.send(settings.input_topic, bad, key=b"tombstone" if bad is None else None)
        goods.append(f"good-{n}")
        producer.send(settings.input_topic, _event(goods[-1], f"item-{n}", VALID_TIMES[n % 5]))
    for n in range(4):  # a window made only of one user
        producer.send(settings.input_topic, _event("only-user", f"item-{n}"))
    producer.send(settings.input_topic, _event("brand-new-user", "brand-new-item"))
    producer.send(settings.input_topic, _event("🛒 ع user", 42))  # unicode, integer item id
    producer.flush()
    producer.close()
    total_good = len(goods) + 6

    job = StreamTrainer(settings)
    asyncio.run(run_job(job, lambda j: j.counters["events_trained"] == total_good
                     and j.buffer.opened_at is None))

    assert job.counters["dead_letters"] == len(CATALOGUE)
    dead = [json.loads(m.value) for m in _consume(kafka_bootstrap, settings.dlq_topic,
                                                   len(CATALOGUE))]
    dead.sort(key=lambda d: d["source"]["offset"])
    assert [d["reason"] for d in dead] == [reason for _, reason in CATALOGUE]
    assert [d["source"]["offset"] for d in dead] == [2 * n for n in range(len(CATALOGUE))]
    for d in dead:
        assert len(d["detail"]) <= 200 and BIG not in json.dumps(d)
    users = job.recommender.users
    assert all(u in users for u in goods + ["only-user", "brand-new-user", "🛒 ع user"])
    assert "42" in job.recommender.items
    assert job.recommend("brand-new-user")["items"]
    assert job.recommender.windows == math.ceil(total_good / 4)


def test_non_finite_windows_are_rolled_back_and_never_checkpointed(
        kafka_bootstrap, unique_name, tmp_path):
    # A margin that overflows float32 makes every hinge infinite.
    settings = _settings(kafka_bootstrap, unique_name, tmp_path, window_size=8, margin=1e39)
    asyncio.run(run_job(StreamTrainer(settings), lambda job: True))
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for n in range(16):
        producer.send(settings.input_topic, _event(f"u{n % 5}", f"i{n % 7}"))
    producer.flush()
    producer.close()
    job = StreamTrainer(settings)
    asyncio.run(run_job(job, lambda j: j.recommender.windows == 2 and j.buffer.opened_at is None))

    assert job.counters["windows_rolled_back"] == 2
    with CheckpointStore(settings.checkpoint_dir) as store:
        ckpt = store.load_latest()
    assert ckpt.window == 2 and ckpt.counters["windows_rolled_back"] == 2
    for name, t in ckpt.tensors.items():
        assert torch.isfinite(t.float()).all(), name
    assert "memory/base_values" not in ckpt.tensors  # no memory write happened


def test_damaged_checkpoint_is_detected_and_the_previous_one_used(
        kafka_bootstrap, unique_name, tmp_path, caplog):
    settings = _settings(kafka_bootstrap, unique_name, tmp_path, window_size=4,
                         checkpoint_interval_s=0)  # a checkpoint per window
    asyncio.run(run_job(StreamTrainer(settings), lambda job: True))
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for n in range(12):
        producer.send(settings.input_topic, _event(f"u{n % 5}", f"i{n % 7}"))
    producer.flush()
    producer.close()
    asyncio.run(run_job(StreamTrainer(settings), lambda j: j.recommender.windows == 3))

    import rocksdict

    db = rocksdict.Rdict(str(settings.checkpoint_dir), rocksdict.Options(raw_mode=True))
    key = next(k for k in db.keys() if k.startswith(b"ckpt/000000000002/t/d/users"))
    value = db[key]
    db[key] = bytes(b ^ 0xFF for b in value[:8]) + value[8:]  # same size, other bytes
    db.close()

    job = StreamTrainer(settings)
    with caplog.at_level("WARNING"):
        asyncio.run(run_job(job, lambda j: j.recommender.windows == 3))
    assert "checkpoint 2" in caplog.text and "damaged" in caplog.text
    # It resumed from checkpoint 1 (two windows) and retrained the third window.
    assert job.checkpointed_offsets == {f"{settings.input_topic}/0": 12}
    assert job.counters["events_trained"] == 12


def test_slow_windows_do_not_get_the_worker_kicked_out(kafka_bootstrap, unique_name, tmp_path):
    # Each window takes longer than the 6 s session timeout.
    env = worker_env(kafka_bootstrap, unique_name, str(tmp_path / "data"), window_size=4,
                     slow_window_s="7")
    worker = start_worker(env, tmp_path / "worker.log", free_port())
    try:
        worker.wait_until(lambda s: s["state"] == "running", timeout_s=90)
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        for n in range(8):
            producer.send(env["MBNMRN_INPUT_TOPIC"], _event(f"u{n}", f"i{n}"))
        producer.flush()
        producer.close()
        status = worker.wait_until(lambda s: s["windows_trained"] == 2, timeout_s=90)
        code, body = worker.get("/recommendations/u1")  # the web server answers meanwhile
        assert code == 200
        time.sleep(1)
    finally:
        assert worker.stop(timeout_s=60) == 0, worker.tail()
    log_text = worker.log_path.read_text()
    assert status["events_trained"] == 8
    for storm in ("CommitFailedError", "Heartbeat failed", "rebalanc"):
        assert storm not in log_text, storm


def test_sasl_and_ssl_settings_reach_every_client_and_secrets_are_never_shown(
        kafka_bootstrap, unique_name, tmp_path):
    env = worker_env(kafka_bootstrap, unique_name, str(tmp_path / "data"))
    env.update(KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
               KAFKA_SASL_USERNAME="shop", KAFKA_SASL_PASSWORD="s3cr3t-pa55")
    settings = Settings.from_env(env)
    assert aiokafka_kwargs(settings) == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "shop", "sasl_plain_password": "s3cr3t-pa55"}
    assert kafka_python_kwargs(settings)["sasl_plain_password"] == "s3cr3t-pa55"
    app = build_app(settings)
    creds = app.conf.broker_credentials
    assert creds.username == "shop" and creds.password == "s3cr3t-pa55"
    assert "s3cr3t-pa55" not in repr(settings) + str(settings) + repr(creds)

    # A worker whose SASL handshake fails: it says so, keeps retrying, never logs the secret.
    worker = start_worker(env, tmp_path / "worker.log", free_port())
    try:
        time.sleep(8)
        assert worker.proc.poll() is None, worker.tail()
    finally:
        worker.stop(timeout_s=30)
    log_text = worker.log_path.read_text(errors="replace")
    assert "s3cr3t-pa55" not in log_text
    assert "SASL" in log_text or "sasl" in log_text


def test_a_recreated_topic_is_reported_at_start_up(unique_name, tmp_path, caplog):
    # The bundled broker forgets its topics on restart, while the checkpoint remembers.
    from infra.broker import start_broker

    port = free_port()
    broker = start_broker(port, log_path=tmp_path / "broker.log")
    settings = _settings(f"127.0.0.1:{port}", unique_name, tmp_path, window_size=4)
    try:
        asyncio.run(run_job(StreamTrainer(settings), lambda job: True))
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        for n in range(8):
            producer.send(settings.input_topic, _event(f"u{n}", f"i{n}"))
        producer.flush()
        producer.close()
        asyncio.run(run_job(StreamTrainer(settings), lambda j: j.recommender.windows == 2))
        with caplog.at_level("WARNING"):
            asyncio.run(run_job(StreamTrainer(settings), lambda job: True))
        assert "record before it is not the one" not in caplog.text  # same topic: all good
    finally:
        broker.stop()
    broker = start_broker(port, log_path=tmp_path / "broker2.log")
    try:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        producer.send(settings.input_topic, _event("someone", "else"))
        producer.flush()
        producer.close()
        caplog.clear()
        with caplog.at_level("WARNING"):
            asyncio.run(run_job(StreamTrainer(settings), lambda job: True))
        assert "the topic was recreated or truncated" in caplog.text
        assert str(settings.checkpoint_dir) in caplog.text
    finally:
        broker.stop()


def test_trained_windows_are_checkpointed_while_only_bad_records_keep_coming(
        kafka_bootstrap, unique_name, tmp_path):
    # One window, then a record every 0.1 s that does not train: no poll is ever quiet, and
    # the checkpoint must still come within its interval, not wait for the stream to idle.
    settings = _settings(kafka_bootstrap, unique_name, tmp_path, window_size=4,
                         checkpoint_interval_s=1, flush_seconds=600)
    asyncio.run(run_job(StreamTrainer(settings), lambda job: True))  # creates the topics
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for n in range(4):
        producer.send(settings.input_topic, _event(f"u{n}", f"i{n}"))
    producer.flush()

    async def scenario() -> tuple[dict, float]:
        job = StreamTrainer(settings)
        await job.start()
        task = asyncio.create_task(job.run())
        try:
            while job.recommender.windows < 1:
                assert not task.done()
                await asyncio.sleep(0.05)
            trained_at = time.monotonic()
            while not job.checkpointed_offsets and time.monotonic() - trained_at < 15:
                producer.send(settings.input_topic, b"not json")
                producer.flush()
                await asyncio.sleep(0.1)
            return dict(job.checkpointed_offsets), time.monotonic() - trained_at
        finally:
            await job.stop()
            await asyncio.wait_for(task, 30)
            await job.close()

    offsets, waited = asyncio.run(scenario())
    producer.close()
    assert offsets and offsets[f"{settings.input_topic}/0"] >= 4
    assert waited < 5
