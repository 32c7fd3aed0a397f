"""The demo: the whole job on a slice of the real Online Retail log, start to stop.

Starts the bundled broker (unless KAFKA_BOOTSTRAP_SERVERS points at one), runs
`faust -A topology worker`, replays a slice of purchases plus a few malformed
events, waits until every event is trained or dead-lettered, prints some users'
recommendation lists and the online metrics, and stops everything.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from infra.broker import free_port, start_broker
from infra.worker import start_worker
from streams.datasets import default_data_dir, load_dataset, products_only
from streams.replay import replay

log = logging.getLogger(__name__)

MALFORMED = [
    b'{"user_id": "12345", "item_id": "85123A"}',  # no timestamp
    b'{"user_id": "", "item_id": "85123A", "timestamp": 1320000000}',
    b'{"user_id": "12345", "item_id": "85123A", "timestamp": 1320000000, "quantity": -6}',
    b"\x89PNG not an event",
    b'["a", "list"]',
]


@dataclass
class DemoReport:
    sent: int
    windows: int
    events_trained: int
    dead_letters: int
    seconds: float  # from the first event sent to the last window checkpointed
    events_per_s: float
    online: dict[str, Any]
    lists: dict[str, Any]


def _descriptions(data_dir: Path) -> dict[str, str]:
    """StockCode -> product name, for showing lists; empty if the file is not there."""
    import pyarrow.parquet as pq

    path = data_dir / "online-retail-uci" / "online_retail.parquet"
    if not path.exists():
        return {}
    t = pq.read_table(path, columns=["StockCode", "Description"])
    return dict(zip(t.column("StockCode").to_pylist(), t.column("Description").to_pylist()))


def run_demo(
    *,
    since: str = "2011-11-01",
    until: str | None = "2011-12-09",
    limit: int | None = None,
    window: int = 2048,
    flush_seconds: float = 2.0,
    show_users: int = 3,
    bootstrap: str | None = None,
    workdir: Path | None = None,
    progress: bool = True,
) -> DemoReport:
    """Run the demo end to end and return what it measured."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="mbnmrn-demo-"))
    broker = None
    if bootstrap is None:
        broker = start_broker(free_port(), log_path=workdir / "broker.log")
        bootstrap = broker.bootstrap
        print(f"broker: bundled tansu at {bootstrap} (pid {broker.pid})")
    topic = os.environ.get("MBNMRN_INPUT_TOPIC", "interactions")
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "MBNMRN_DATA_DIR": str(workdir / "data"),
           "MBNMRN_WINDOW_SIZE": str(window), "MBNMRN_FLUSH_SECONDS": str(flush_seconds)}
    worker = start_worker(env, workdir / "worker.log", free_port())
    try:
        worker.wait_until(lambda s: s.get("state") == "running", timeout_s=120)
        print(f"worker: faust -A topology worker, pid {worker.proc.pid}, {worker.url}")

        table = products_only(load_dataset("online-retail-uci", since=since, until=until))
        table = table.slice(0, limit) if limit is not None else table
        users = table.column("user_id").to_pylist()
        print(f"replaying {table.num_rows:,} Online Retail product purchases from {since} "
              f"({len(set(users)):,} customers) plus {len(MALFORMED)} malformed events")
        start = time.monotonic()
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        for value in MALFORMED[:2]:
            producer.send(topic, value)
        producer.flush()
        sent = replay(table, bootstrap=bootstrap, topic=topic, progress=progress).sent
        for value in MALFORMED[2:]:
            producer.send(topic, value)
        producer.flush()
        producer.close()
        total = sent + len(MALFORMED)
        status = worker.wait_until(
            lambda s: s["buffered"] == 0
            and sum(o + 1 for o in s["last_trained_offsets"].values()) >= total,
            timeout_s=600,
        )
        seconds = time.monotonic() - start

        shown = {}
        for user, _ in Counter(users).most_common(show_users):
            shown[user] = worker.get(f"/recommendations/{user}")[1]
        report = DemoReport(
            sent=sent, windows=status["windows_trained"], events_trained=status["events_trained"],
            dead_letters=status["dead_letters"], seconds=seconds,
            events_per_s=status["events_trained"] / seconds, online=status["online"],
            lists=shown,
        )
        _print_report(report, status, _metrics(bootstrap), _descriptions(default_data_dir()))
        return report
    finally:
        code = worker.stop()
        print(f"worker stopped (exit code {code}); log: {worker.log_path}")
        if broker is not None:
            broker.stop()
            print("broker stopped")


def _metrics(bootstrap: str) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(
        os.environ.get("MBNMRN_METRICS_TOPIC", "metrics"), bootstrap_servers=bootstrap,
        auto_offset_reset="earliest", consumer_timeout_ms=2000, enable_auto_commit=False,
    )
    try:
        return [json.loads(m.value) for m in consumer]
    finally:
        consumer.close()


def _print_report(r: DemoReport, status: dict, metrics: list[dict], names: dict[str, str]) -> None:
    print()
    print(f"trained {r.events_trained:,} events in {r.windows} windows, "
          f"{r.events_per_s:,.0f} events/s end to end; dead letters: {r.dead_letters} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(status['dead_letter_reasons'].items()))}); "
          f"exact duplicates dropped: {status['duplicates_skipped']:,}")
    online = r.online
    hr = next((v for k, v in online.items() if k.startswith("hr@")), None)
    ndcg = next((v for k, v in online.items() if k.startswith("ndcg@")), None)
    print(f"online test-then-train over {online['evaluated']:,} known-user interactions: "
          f"HR@10 {hr:.4f}, NDCG@10 {ndcg:.4f} (1000 sampled candidates; random ~0.010)")
    phases, windows = status.get("phase_seconds") or {}, status["windows_trained"]
    if phases and windows:
        print("mean seconds per window: "
              + ", ".join(f"{k} {v / windows:.3f}" for k, v in phases.items()))
    print("\nmetrics topic (every 5th window):")
    print(f"  {'window':>6} {'size':>5} {'loss':>7} {'HR@10':>7} {'cum HR@10':>9}")
    for m in metrics[::5] + ([metrics[-1]] if len(metrics) % 5 != 1 else []):
        hr_w, cum = m.get("hr@10"), m["cumulative"].get("hr@10")
        print(f"  {m['window']:>6} {m['size']:>5} {m['d_loss']:>7.4f} "
              f"{'-' if hr_w is None else format(hr_w, '.4f'):>7} "
              f"{'-' if cum is None else format(cum, '.4f'):>9}")
    for user, value in r.lists.items():
        print(f"\nGET /recommendations/{user}  (model version {value['model_version']})")
        for rank, item in enumerate(value["items"], 1):
            name = names.get(item["item_id"]) or ""
            print(f"  {rank:>2}. {item['item_id']:<8} {name[:40]:<40} {item['score']:.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.demo", description=__doc__)
    parser.add_argument("--since", default="2011-11-01")
    parser.add_argument("--until", default="2011-12-09",
                        help="exclusive (default: the last full day)")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--flush-seconds", type=float, default=2.0)
    parser.add_argument("--workdir", type=Path, help="keep logs and checkpoints here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mbnmrn-demo-"))
    run_demo(since=args.since, until=args.until, limit=args.limit, window=args.window,
             flush_seconds=args.flush_seconds, bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
             workdir=workdir, progress=not args.no_progress)
    print(f"logs and checkpoints: {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
