"""Shared plumbing of the system benchmarks: machine facts, result files, tables, events."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


def load() -> str:
    """`uptime`'s load averages (1, 5, 15 min), as text."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def machine() -> dict[str, Any]:
    """nproc, CPU model, RAM, git commit, torch version, date and load, for every result file."""
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "ram_gib": ram_gib, "commit": commit,
        "torch": torch.__version__, "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_at_start": load(),
    }


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A markdown table of `rows` (floats to 4 significant digits)."""
    if not rows:
        return "(no rows)"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, (dict, list)):
            return json.dumps(v)
        return "" if v is None else str(v)

    out = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    out += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(out)


def write_results(name: str, result: dict[str, Any], sections: dict[str, list[dict]],
                  notes: list[str] = (), out_dir: Path | None = None) -> Path:
    """Print the tables and write `<name>.json` and `<name>.md`; returns the JSON path."""
    out_dir = Path(out_dir) if out_dir is not None else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    result["machine"]["load_at_end"] = load()
    m = result["machine"]
    lines = [f"# {name}", "",
             f"{m['date']}, commit {m['commit'][:10]}, {m['nproc']} x {m['cpu']}, "
             f"{m['ram_gib']} GiB RAM, torch {m['torch']}; load average at start "
             f"{m['load_at_start']}, at end {m['load_at_end']}", ""]
    for title, rows in sections.items():
        lines += [f"## {title}", "", table(rows), ""]
    lines += [f"- {n}" for n in notes]
    text = "\n".join(lines) + "\n"
    print(text)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    (out_dir / f"{name}.md").write_text(text)
    return path


def percentiles(values: list[float] | np.ndarray) -> dict[str, float | None]:
    """p50/p95/p99/max of `values` (None when empty)."""
    if len(values) == 0:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    arr = np.asarray(values, dtype=float)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(arr.max())}


def rss_mib() -> float:
    """Resident set size of this process (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---- events -------------------------------------------------------------------------------

def zipf_ids(rng: np.random.Generator, n: int, vocab: int, a: float = 1.2) -> np.ndarray:
    """n ids in [0, vocab), Zipf-ish (rank r drawn with weight ~ 1/r^a), shuffled ranks."""
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    weights = ranks ** -a
    cdf = np.cumsum(weights / weights.sum())
    draws = np.searchsorted(cdf, rng.random(n), side="right")
    perm = rng.permutation(vocab)
    return perm[np.minimum(draws, vocab - 1)]


def synthetic_values(n: int, n_users: int = 200_000, n_items: int = 100_000, seed: int = 0,
                     start_ts: float = 1_700_000_000.0) -> tuple[list[bytes], list[bytes]]:
    """(keys, values) of n synthetic purchase events: Zipf-ish users and items, increasing
    timestamps, compact JSON; ids drawn with numpy, values by bytes %-formatting, not json.dumps."""
    rng = np.random.default_rng(seed)
    users = zipf_ids(rng, n, n_users, 1.05)
    items = zipf_ids(rng, n, n_items, 1.2)
    ts = start_ts + np.arange(n, dtype=np.int64) // 10
    # a sequence number keeps every value distinct, so the trainer's dedup drops none
    values = [
        b'{"user_id":"u%d","item_id":"i%d","timestamp":%d,"event_type":"purchase","q":%d}'
        % row for row in zip(users.tolist(), items.tolist(), ts.tolist(), range(n))
    ]
    keys = [b"u%d" % u for u in users.tolist()]
    return keys, values


def table_values(table: Any) -> tuple[list[bytes], list[bytes]]:
    """(keys, values) of a dataset table, as the replay tool encodes them."""
    from streams.replay import encode_events

    pairs = list(encode_events(table))
    return [k for k, _ in pairs], [v for _, v in pairs]


async def produce(bootstrap: str, topic: str, keys: list[bytes | None], values: list[bytes],
                  rate: float | None = None, chunk: int = 20_000,
                  on_round: Any = None) -> dict[str, float]:
    """Send (key, value) pairs with aiokafka in big rounds, waiting for each round's acks;
    at `rate` events/s if given. `on_round(sent)` is called after each round."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20,
                                max_batch_size=1024 * 1024, enable_idempotence=False,
                                max_request_size=8 * 1024 * 1024, client_id="mbnmrn-bench")
    await producer.start()
    if rate is not None:
        chunk = max(1, min(chunk, int(rate / 20)))
    start, sent = time.monotonic(), 0
    try:
        for lo in range(0, len(values), chunk):
            futures = [await producer.send(topic, value=v, key=k)
                       for k, v in zip(keys[lo:lo + chunk], values[lo:lo + chunk])]
            await asyncio.gather(*futures)
            sent += len(futures)
            if on_round is not None:
                on_round(sent)
            if rate is not None:
                await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
    finally:
        await producer.stop()
    seconds = time.monotonic() - start
    return {"sent": sent, "seconds": seconds, "events_per_s": sent / seconds}
