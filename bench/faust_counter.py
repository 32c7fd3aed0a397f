"""A bare Faust agent that only counts events: the ceiling of a per-event Faust design.

Run as `faust -A bench.faust_counter worker --without-web`; configured by environment:
BENCH_APP_ID, BENCH_TOPIC, BENCH_N (events to count), BENCH_DONE_FILE (JSON written when the
N-th event is counted, with the wall times of the first and the N-th event), BROKER_URL.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import faust

app = faust.App(
    os.environ.get("BENCH_APP_ID", "bench-counter"),
    broker=os.environ.get("BROKER_URL", "kafka://127.0.0.1:9092"),
    broker_session_timeout=6,
    broker_heartbeat_interval=1,
    consumer_auto_offset_reset="earliest",
    topic_allow_declare=False,
    autodiscover=False,
    web_enabled=False,
    datadir=os.environ.get("BENCH_DATADIR", "/tmp/bench-faust-counter"),
)
topic = app.topic(os.environ.get("BENCH_TOPIC", "bench-events"), value_serializer="raw")
N = int(os.environ.get("BENCH_N", "1000"))
DONE = Path(os.environ.get("BENCH_DONE_FILE", "/tmp/bench-faust-counter.json"))
state = {"count": 0, "first": None}


@app.agent(topic)
async def count(stream) -> None:
    """Count events; write DONE once N have been seen (and every 10,000 for progress)."""
    async for _ in stream:
        state["count"] += 1
        if state["first"] is None:
            state["first"] = time.time()
        c = state["count"]
        if c == N or c % 10_000 == 0:
            tmp = DONE.with_suffix(".tmp")
            tmp.write_text(json.dumps({"count": c, "first": state["first"], "last": time.time(),
                                       "done": c >= N}))
            tmp.replace(DONE)
