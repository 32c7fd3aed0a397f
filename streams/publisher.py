"""Everything the trainer writes to Kafka: lists, metrics and dead letters, acknowledged."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from model.recommender import Recommendation
from streams.faults import Failpoints, retry
from streams.records import RejectReason, dead_letter_value
from streams.security import aiokafka_kwargs
from streams.settings import Settings

log = logging.getLogger(__name__)

_BATCH_BYTES = 1024 * 1024  # records per produce batch, by size


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def list_value(user: str, recs: list[Recommendation], version: int, window: int,
               generated_at: str) -> dict[str, Any]:
    """The wire format of one user's top-K list (topic and HTTP alike)."""
    return {
        "user_id": user,
        "items": [{"item_id": r.item_id, "score": r.score} for r in recs],
        "model_version": version,
        "window": window,
        "generated_at": generated_at,
    }


class Publisher:
    """The trainer's producer. Every send is awaited until the broker acknowledges it."""

    def __init__(self, settings: Settings, failpoints: Failpoints) -> None:
        self.settings = settings
        self.failpoints = failpoints
        self.producer: AIOKafkaProducer | None = None
        self._dead_letters: list[tuple[bytes, bytes | None]] = []  # (value, key) not yet sent
        self._partitioner = DefaultPartitioner()

    async def start(self) -> None:
        s = self.settings
        producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap_servers, acks="all", linger_ms=5,
            max_batch_size=_BATCH_BYTES, max_request_size=4 * _BATCH_BYTES,
            **aiokafka_kwargs(s),
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self.producer = producer

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    def dead_letter(self, rec: Any, reason: RejectReason, detail: str) -> None:
        """Queue a dead letter for consumed record `rec`; `send_dead_letters` sends it."""
        value = dead_letter_value(
            rec.value, topic=rec.topic, partition=rec.partition, offset=rec.offset,
            reason=reason, detail=detail, timestamp_ms=rec.timestamp,
        )
        self._dead_letters.append((value, rec.key))
        log.debug("dead letter %s/%d@%d: %s", rec.topic, rec.partition, rec.offset, reason.value)

    async def send_dead_letters(self, stopping: asyncio.Event) -> None:
        """Send the queued dead letters and wait until the broker has them (retrying)."""
        if not self._dead_letters:
            return

        async def attempt() -> None:
            assert self.producer is not None
            topic = self.settings.dlq_topic
            sends = [self.producer.send(topic, value, key=key) for value, key in self._dead_letters]
            await asyncio.gather(*await asyncio.gather(*sends))

        await retry("sending dead letters", attempt, stopping=stopping)
        self._dead_letters.clear()

    async def publish(self, version: int, lists: dict[str, list[Recommendation]],
                      metrics: list[dict[str, Any]], stopping: asyncio.Event) -> None:
        """Send lists made by model `version` (trained through window `version - 1`) and
        the metrics of the windows they cover, retrying the whole set until acknowledged.
        Records are encoded once; a retry sends the same bytes."""
        s, window, now = self.settings, version - 1, now_iso()
        lists_out = [
            (user.encode(), json.dumps(list_value(user, recs, version, window, now)).encode())
            for user, recs in lists.items()
        ]
        metrics_out: list[tuple[bytes | None, bytes]] = [
            (None, json.dumps(m).encode()) for m in metrics
        ]

        async def attempt() -> None:
            futures = await self._send(s.recommendations_topic, lists_out)
            futures += await self._send(s.metrics_topic, metrics_out)
            await asyncio.gather(*futures[: len(futures) // 2])
            self.failpoints.reach("publishing", window)  # about half of it delivered
            await asyncio.gather(*futures)

        await retry(f"publishing window {window}", attempt, stopping=stopping)

    async def _send(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> list[Any]:
        """Hand records to the producer as whole batches, one partition each (keys are
        partitioned as the Java client does; keyless records go round-robin); returns
        the batches' delivery futures. Per-record `send` calls cost more than the
        encoding itself at thousands of lists a second."""
        assert self.producer is not None
        partitions = sorted(await self.producer.partitions_for(topic))
        by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
        for n, (key, value) in enumerate(records):
            p = (self._partitioner(key, partitions, partitions) if key is not None
                 else partitions[n % len(partitions)])
            by_partition.setdefault(p, []).append((key, value))
        futures = []
        for partition, recs in by_partition.items():
            batch = self.producer.create_batch()
            for key, value in recs:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await self.producer.send_batch(batch, topic,
                                                                  partition=partition))
                    batch = self.producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"a record of {len(value)} bytes exceeds a batch")
            futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        return futures
