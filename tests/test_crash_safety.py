"""Kill the worker anywhere, restart it: the model ends bit-identical to an unbroken run.

Real broker, real worker processes (`faust -A topology worker`), real RocksDB.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from kafka import KafkaProducer

from infra.broker import free_port, start_broker
from infra.worker import start_worker
from streams.checkpoint import CheckpointStore
from streams.datasets import load_dataset
from streams.job import StreamTrainer
from streams.replay import replay
from streams.settings import Settings
from tests.conftest import distinct_events, run_job, worker_env

pytestmark = pytest.mark.integration

WINDOW = 256
# The first 1,811 purchases hold 1,792 distinct events: exactly 7 full windows. A partial
# window is cut by the flush time bound, so its boundary depends on timing (the one named
# source of non-determinism); with full windows only, and a bound that cannot expire, an
# interrupted run must end bit-identical to an unbroken one (with the same torch thread
# count: float reductions depend on it; the reference is a worker process like the others).
EVENTS = 1811
WINDOWS = 7
NO_FLUSH = "600"
BAD = [b"not json %d" % n for n in range(5)]


@pytest.fixture(scope="module")
def events():
    return load_dataset("online-retail-uci", since="2011-11-01", limit=EVENTS)


@pytest.fixture(scope="module")
def trained(events):
    return distinct_events(events)  # exact duplicate rows are dropped


def _settings_of(env: dict[str, str]) -> Settings:
    return Settings.from_env(env, device="cpu")


def _reference(env: dict[str, str], data_dir: Path) -> None:
    """The same job, never killed: a worker process of its own, like the ones it is compared
    with (not this test process, whose earlier tests may have left state behind), on the
    same input topic, with its own data directory, group and app."""
    ref = {**env, "MBNMRN_DATA_DIR": str(data_dir), "MBNMRN_CRASH_AT": "",
           "MBNMRN_GROUP_ID": env["MBNMRN_GROUP_ID"] + "-reference",
           "MBNMRN_APP_ID": env["MBNMRN_APP_ID"] + "-reference"}
    worker = start_worker(ref, data_dir.parent / "reference.log", free_port())
    try:
        worker.wait_until(_finished, timeout_s=120)
    finally:
        assert worker.stop() == 0, worker.tail()


def _assert_same_checkpoint(a: Path, b: Path, trained: int) -> None:
    with CheckpointStore(a) as sa, CheckpointStore(b) as sb:
        ca, cb = sa.load_latest(), sb.load_latest()
    assert ca is not None and cb is not None
    assert ca.window == cb.window == WINDOWS
    assert ca.offsets == cb.offsets
    assert ca.counters["events_trained"] == cb.counters["events_trained"] == trained
    assert ca.blobs == cb.blobs  # id vocabularies
    assert ca.meta == cb.meta
    assert ca.tensors.keys() == cb.tensors.keys()
    # weights, both Adam states, value memory, history; on failure, say which and how far
    differ = {name: float((ca.tensors[name].double() - cb.tensors[name].double()).abs().max())
              for name in ca.tensors if not torch.equal(ca.tensors[name], cb.tensors[name])}
    assert not differ, f"tensors differ (max abs difference): {differ}"


def _finished(s: dict) -> bool:
    return s["windows_trained"] == WINDOWS and s["buffered"] == 0


def test_killed_anywhere_the_model_ends_as_if_never_killed(kafka_bootstrap, unique_name,
                                                           tmp_path, events,
                                                                trained):
    # Lists and a checkpoint after every window, so each failpoint hits its own window.
    env = worker_env(kafka_bootstrap, unique_name, str(tmp_path / "killed"),
                     window_size=WINDOW, flush_seconds=NO_FLUSH, publish_interval_s=0,
                     checkpoint_interval_s=0)
    topic = env["MBNMRN_INPUT_TOPIC"]
    asyncio.run(_create_topics(_settings_of(env)))
    # Bad records inside windows 3 and 4, whose windows are killed and replayed.
    replay(events.slice(0, 800), bootstrap=kafka_bootstrap, topic=topic, progress=False)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for value in BAD:
        producer.send(topic, value)
    producer.flush()
    producer.close()
    replay(events.slice(800), bootstrap=kafka_bootstrap, topic=topic, progress=False)

    # A failpoint per phase of a window, then a SIGKILL at a random moment in a window.
    for n, phase in enumerate(["trained", "publishing", "published", "checkpointed"], 1):
        worker = start_worker({**env, "MBNMRN_CRASH_AT": f"{phase}:{n}"},
                              tmp_path / f"worker-{n}.log", free_port())
        assert worker.proc.wait(120) == -signal.SIGKILL, worker.tail()
        assert f"failpoint {phase}:{n} reached" in worker.tail(50)
    worker = start_worker({**env, "MBNMRN_SLOW_WINDOW_S": "0.4"}, tmp_path / "worker-5.log",
                          free_port())
    worker.wait_until(lambda s: s["state"] == "running", timeout_s=90)
    time.sleep(random.Random(os.getpid()).uniform(0.1, 0.8))  # inside window 5's training
    worker.kill()
    worker = start_worker(env, tmp_path / "worker-6.log", free_port())
    try:
        end = {f"{topic}/0": EVENTS + len(BAD) - 1}
        status = worker.wait_until(
            lambda s: _finished(s) and s["last_trained_offsets"] == end, timeout_s=120)
        assert status["events_trained"] == trained
        # Counted once each, though some were read again after restarts.
        assert status["dead_letters"] == len(BAD)
        assert status["dead_letter_reasons"] == {"not_json": len(BAD)}
        assert status["duplicates_skipped"] == EVENTS - trained
    finally:
        assert worker.stop() == 0, worker.tail()

    _reference(env, tmp_path / "reference")
    _assert_same_checkpoint(tmp_path / "killed" / "checkpoint",
                            tmp_path / "reference" / "checkpoint", trained)


def test_killed_between_checkpoints_retrains_from_the_older_one_to_the_same_model(
        kafka_bootstrap, unique_name, tmp_path, events, trained):
    # Default publish/checkpoint cadence, slowed so that several windows pass between
    # checkpoints: the kill loses trained windows, which the restart trains again.
    env = worker_env(kafka_bootstrap, unique_name, str(tmp_path / "killed"),
                     window_size=WINDOW, flush_seconds=NO_FLUSH, checkpoint_interval_s=1,
                     slow_window_s=0.3)
    asyncio.run(_create_topics(_settings_of(env)))
    replay(events, bootstrap=kafka_bootstrap, topic=env["MBNMRN_INPUT_TOPIC"], progress=False)
    worker = start_worker({**env, "MBNMRN_CRASH_AT": "trained:5"}, tmp_path / "worker-1.log",
                          free_port())
    assert worker.proc.wait(120) == -signal.SIGKILL, worker.tail()
    with CheckpointStore(tmp_path / "killed" / "checkpoint") as store:
        older = store.load_latest()
    assert older is not None and 1 <= older.window < 6  # windows 5 and more were lost

    worker = start_worker(env, tmp_path / "worker-2.log", free_port())
    try:
        status = worker.wait_until(_finished, timeout_s=120)
        assert status["events_trained"] == trained
    finally:
        assert worker.stop() == 0, worker.tail()
    assert f"restored checkpoint: window {older.window}," in worker.tail(400)
    _reference(env, tmp_path / "reference")
    _assert_same_checkpoint(tmp_path / "killed" / "checkpoint",
                            tmp_path / "reference" / "checkpoint", trained)


async def _create_topics(settings: Settings) -> None:
    job = StreamTrainer(settings)
    await job.start()
    await job.close()


def test_redelivered_records_are_skipped_not_trained_twice(kafka_bootstrap, unique_name,
                                                           tmp_path, events,
                                                                trained):
    env = worker_env(kafka_bootstrap, unique_name, str(tmp_path / "data"), window_size=WINDOW)
    settings = _settings_of(env)
    asyncio.run(_create_topics(settings))
    replay(events, bootstrap=kafka_bootstrap, topic=settings.input_topic, progress=False)

    async def scenario() -> StreamTrainer:
        job = StreamTrainer(settings)
        await job.start()
        task = asyncio.create_task(job.run())
        try:
            while job.recommender.windows < WINDOWS or job.buffer.opened_at is not None:
                await asyncio.sleep(0.05)
            # As after a rebalance: the consumer is sent back to the start of the topic.
            job.consumer.seek(next(iter(job.consumer.assignment())), 0)
            deadline = time.monotonic() + 30
            while job.counters["redelivered_skipped"] < EVENTS:
                assert time.monotonic() < deadline, job.status()
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)  # longer than the flush bound
        finally:
            await job.stop()
            await asyncio.wait_for(task, 30)
            await job.close()
        return job

    job = asyncio.run(scenario())
    assert job.counters["redelivered_skipped"] == EVENTS
    assert job.recommender.windows == WINDOWS
    assert job.counters["events_trained"] == trained


def test_broker_paused_then_resumed_and_unreachable_at_start_up(unique_name, tmp_path, events,
                                                                trained):
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    env = worker_env(bootstrap, unique_name, str(tmp_path / "paused"), window_size=WINDOW,
                     slow_window_s="0.3", flush_seconds=NO_FLUSH)
    worker = start_worker(env, tmp_path / "worker.log", free_port())  # no broker yet
    broker = None
    try:
        deadline = time.monotonic() + 60
        while "ECONNREFUSED" not in worker.tail(10_000):  # it tried, and found no broker
            assert worker.proc.poll() is None and time.monotonic() < deadline, worker.tail()
            time.sleep(0.2)
        time.sleep(2)
        assert worker.proc.poll() is None, worker.tail()
        broker = start_broker(port, log_path=tmp_path / "broker.log")
        worker.wait_until(lambda s: s["state"] == "running", timeout_s=90)
        replay(events, bootstrap=bootstrap, topic=env["MBNMRN_INPUT_TOPIC"], progress=False)
        worker.wait_until(lambda s: s["windows_trained"] >= 2, timeout_s=60)
        os.kill(broker.pid, signal.SIGSTOP)  # longer than the 6 s session timeout
        time.sleep(8)
        os.kill(broker.pid, signal.SIGCONT)
        end = {f"{env['MBNMRN_INPUT_TOPIC']}/0": EVENTS - 1}
        status = worker.wait_until(
            lambda s: _finished(s) and s["last_trained_offsets"] == end, timeout_s=120)
        assert status["events_trained"] == trained
    finally:
        code = worker.stop()
        if broker is not None:
            os.kill(broker.pid, signal.SIGCONT)
    assert code == 0, worker.tail()
    try:
        _reference(env, tmp_path / "reference")
        _assert_same_checkpoint(tmp_path / "paused" / "checkpoint",
                                tmp_path / "reference" / "checkpoint", trained)
    finally:
        broker.stop()


def test_a_producer_retry_is_not_trained_twice(kafka_bootstrap, unique_name, tmp_path, events,
                                               trained):
    env = worker_env(kafka_bootstrap, unique_name, str(tmp_path / "data"), window_size=WINDOW)
    settings = _settings_of(env)
    asyncio.run(_create_topics(settings))
    head = events.slice(0, 600)
    replay(head, bootstrap=kafka_bootstrap, topic=settings.input_topic, progress=False)
    # A producer that believed its last 300 sends failed sends them again.
    replay(head.slice(300), bootstrap=kafka_bootstrap, topic=settings.input_topic,
           progress=False)
    job = StreamTrainer(settings)
    distinct = distinct_events(head)
    asyncio.run(run_job(job, lambda j: j.counters["events_trained"] == distinct
                        and j.buffer.opened_at is None
                        and j.counters["duplicates_skipped"] == 900 - distinct, settle_s=1.5))
    assert job.counters["events_trained"] == distinct
    assert job.counters["duplicates_skipped"] == 900 - distinct
