"""Shared fixtures: one Kafka-protocol broker per test session, and fresh topic/group names."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator

import pytest

logger = logging.getLogger(__name__)

BOOTSTRAP_ENV = "MBNMRN_TEST_BOOTSTRAP"  # use this running broker instead of starting one


def _docker_kafka() -> type | None:
    """testcontainers' KafkaContainer when it is installed and a Docker engine answers."""
    try:
        import docker
        from testcontainers.kafka import KafkaContainer
    except ImportError:
        return None
    try:
        docker.from_env(timeout=3).ping()
    except Exception:  # no engine, no socket, no permission: all mean "not usable here"
        return None
    return KafkaContainer


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a broker that lives for the whole session.

    $MBNMRN_TEST_BOOTSTRAP if set; else a testcontainers Kafka if Docker answers; else the
    bundled tansu broker on a free port. Topics persist for the session: use `unique_name`.
    """
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        yield external
        return
    container_cls = _docker_kafka()
    if container_cls is not None:
        with container_cls() as kafka:
            yield kafka.get_bootstrap_server()
        return
    from infra.broker import free_port, start_broker

    broker = start_broker(free_port())
    logger.info("session broker %s (pid %d)", broker.bootstrap, broker.pid)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """A factory of fresh topic or group names: unique_name("orders") -> "orders-3f2a..."."""

    def make(prefix: str = "test") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make


def worker_env(bootstrap: str, unique_name: Callable[[str], str], data_dir: str,
               **settings: str) -> dict[str, str]:
    """Environment for a worker with fresh topic, group and app names."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "MBNMRN_INPUT_TOPIC": unique_name("interactions"),
        "MBNMRN_DLQ_TOPIC": unique_name("dlq"),
        "MBNMRN_RECOMMENDATIONS_TOPIC": unique_name("recs"),
        "MBNMRN_METRICS_TOPIC": unique_name("metrics"),
        "MBNMRN_GROUP_ID": unique_name("trainer"),
        "MBNMRN_APP_ID": unique_name("app"),
        "MBNMRN_DATA_DIR": data_dir,
        "MBNMRN_FLUSH_SECONDS": "1",
        "MBNMRN_EVAL_CANDIDATES": "200",
    }
    env.update({f"MBNMRN_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def distinct_events(table) -> int:
    """How many of a replayed table's events are distinct, i.e. trained (exact duplicates,
    as a producer's retry would write them, are dropped by the trainer)."""
    from streams.replay import encode_events

    return len({value for _, value in encode_events(table)})


async def run_job(job, until: Callable, timeout_s: float = 60, settle_s: float = 0.0) -> None:
    """Start a StreamTrainer, run it until `until(job)` holds (then `settle_s` longer), and
    stop and close it; fails with its status if it takes longer than `timeout_s`."""
    import asyncio
    import time

    await job.start()
    task = asyncio.create_task(job.run())
    deadline = time.monotonic() + timeout_s
    try:
        while not until(job):
            assert not task.done(), task.result()
            assert time.monotonic() < deadline, job.status()
            await asyncio.sleep(0.05)
        await asyncio.sleep(settle_s)
    finally:
        await job.stop()
        await asyncio.wait_for(task, 30)
        await job.close()


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    """Restore torch's thread count after each test: results of float reductions depend on
    it, and a later test comparing an in-process run with a worker process needs both to
    use the default."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
