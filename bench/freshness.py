"""Freshness: time from an event's production to the publication of a top-K list that
reflects it, on a quiet stream, against the flush bound (MBNMRN_FLUSH_SECONDS) and H.

Per configuration the job (StreamTrainer in-process) first trains a warm-up prefix of the
Taobao stream; then events of users never seen before are sent one at a time at a low rate,
each with its send time; a consumer of the recommendations topic matches each such user to
the first list published for it (a new user has no list before its event is trained).
Latency = time the list was read back - send time (end to end, consumer poll included);
`generated_at` - send time is reported too.

`python -m bench.freshness` or, small, `python -m bench.freshness --configs 1:256 --events 3`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import load, machine, percentiles, table_values, write_results
from bench.e2e import _name, job_settings


async def _one(bootstrap: str, flush_s: float, window: int, warm_keys: list, warm_values: list,
               events: int, rate: float, items: list[str], tail_s: float) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from bench.common import produce
    from streams.job import StreamTrainer

    topic = _name("fresh")
    data = Path(tempfile.mkdtemp(prefix="bench-fresh-"))
    settings = job_settings(bootstrap, topic, data, window, flush_s)
    job = StreamTrainer(settings)
    await job.start()
    task = asyncio.create_task(job.run())
    consumer = producer = None
    try:
        # warm-up: a realistic catalogue, fully checkpointed before the quiet stream starts
        await produce(bootstrap, topic, warm_keys, warm_values)
        deadline = time.monotonic() + 300
        while sum(job.checkpointed_offsets.values()) < len(warm_values):
            if time.monotonic() > deadline or task.done():
                raise RuntimeError("warm-up did not finish")
            await asyncio.sleep(0.05)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        tps = [TopicPartition(settings.recommendations_topic, p)
               for p in range(settings.output_partitions)]
        consumer.assign(tps)
        for tp in tps:
            await consumer.seek_to_beginning(tp)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0,
                                    enable_idempotence=False)
        await producer.start()
        tag = _name("q")
        sent: dict[str, float] = {}
        seen: dict[str, tuple[float, float]] = {}

        async def read() -> None:
            while True:
                batches = await consumer.getmany(timeout_ms=50)
                now = time.time()
                for records in batches.values():
                    for r in records:
                        v = json.loads(r.value)
                        u = v["user_id"]
                        if u in sent and u not in seen:
                            gen = datetime.fromisoformat(v["generated_at"]).timestamp()
                            seen[u] = (now, gen)

        reader = asyncio.create_task(read())
        start = time.monotonic()
        for i in range(events):
            user = f"{tag}-{i}"
            value = json.dumps({"user_id": user, "item_id": items[i % len(items)],
                                "timestamp": time.time(), "event_type": "buy"}).encode()
            sent[user] = time.time()
            await producer.send_and_wait(topic, value, key=user.encode())
            await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
        deadline = time.monotonic() + tail_s
        while len(seen) < events and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        reader.cancel()
        try:
            await reader
        except asyncio.CancelledError:
            pass
    finally:
        for client in (producer, consumer):
            if client is not None:
                await client.stop()
        await job.stop()
        await job.wait_stopped(120)
        await task
        await job.close()
        shutil.rmtree(data, ignore_errors=True)
    e2e = [seen[u][0] - sent[u] for u in seen]
    gen = [seen[u][1] - sent[u] for u in seen]
    p, g = percentiles(e2e), percentiles(gen)
    return {"flush_s": flush_s, "H": window, "events": events, "matched": len(seen),
            "rate_per_s": rate, "p50_s": p["p50"], "p95_s": p["p95"], "p99_s": p["p99"],
            "max_s": p["max"], "generated_at_p99_s": g["p99"],
            "p99_over_flush": p["p99"] / flush_s if p["p99"] is not None else None,
            "target_p99_under_2s": (p["p99"] is not None and p["p99"] < 2.0
                                    and len(seen) == events) if flush_s == 1 else None,
            "load": load()}


def run_freshness(configs: tuple[tuple[float, int], ...] = ((1, 256), (1, 2048), (5, 256),
                                                             (5, 2048)),
                  events: int = 30, rate: float = 2.0, warmup: int = 5000,
                  bootstrap: str | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    """One row per (flush bound, H): latency percentiles of the quiet stream's events."""
    from streams.datasets import load_dataset

    info = machine()
    table = load_dataset("taobao-userbehavior-stream").slice(0, warmup)
    keys, values = table_values(table)
    items = table["item_id"].to_pylist()[:1000] or ["i0"]
    broker = None
    if bootstrap is None:
        from infra.broker import free_port, start_broker

        broker = start_broker(free_port())
        bootstrap = broker.bootstrap
    rows = []
    try:
        for flush_s, window in configs:
            rows.append(asyncio.run(_one(bootstrap, flush_s, window, keys, values, events,
                                         rate, items, tail_s=flush_s * 2 + 15)))
    finally:
        if broker is not None:
            broker.stop()
    result = {"machine": info, "warmup_events": warmup, "rows": rows}
    write_results("freshness", result, {"Event to published list (quiet stream)": rows}, notes=[
        f"quiet stream: {events} events of new users, one at a time at {rate}/s, after a"
        f" {warmup}-event Taobao warm-up; StreamTrainer in-process on CPU, private tansu",
        "latency = wall time the list was read from the recommendations topic - send time",
        "target: flush bound 1 s, quiet stream, p99 < 2 s on CPU",
    ], out_dir=out_dir)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.freshness", description=__doc__)
    p.add_argument("--configs", default="1:256,1:2048,5:256,5:2048", help="FLUSH_S:H,...")
    p.add_argument("--events", type=int, default=30)
    p.add_argument("--rate", type=float, default=2.0)
    p.add_argument("--warmup", type=int, default=5000)
    p.add_argument("--bootstrap")
    p.add_argument("--out-dir", type=Path)
    a = p.parse_args(argv)
    configs = tuple((float(c.split(":")[0]), int(c.split(":")[1])) for c in a.configs.split(","))
    return run_freshness(configs, a.events, a.rate, a.warmup, a.bootstrap, a.out_dir)


if __name__ == "__main__":
    main()
