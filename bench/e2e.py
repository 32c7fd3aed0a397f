"""End-to-end throughput on one private bundled broker: raw aiokafka consumer, a bare Faust
counting agent, and the full job (StreamTrainer in-process, this process's event loop), on the
Taobao stream and on a synthetic Zipf-ish stream; then a paced run that samples lag.

`python -m bench.e2e` (full sizes) or e.g. `python -m bench.e2e --synthetic-n 20000
--inputs synthetic --paced-seconds 5` (smoke). Lag is counted from what the job reports it
consumed and trained, never from the broker's end offsets (wrong on tansu, BROKER.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, load, machine, produce, synthetic_values, table_values, write_results

PHASES = ("train", "rank", "publish", "checkpoint", "commit")  # StreamTrainer.phase_seconds


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---- (a) raw consumer ---------------------------------------------------------------------

async def raw_consumer(bootstrap: str, topic: str, n: int, timeout_s: float = 120) -> dict:
    """Read n records with getmany from offset 0 (no group); events/s from the first poll."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 * 1024 * 1024,
                                fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got, start = 0, time.monotonic()
        while got < n and time.monotonic() - start < timeout_s:
            batches = await consumer.getmany(timeout_ms=500, max_records=20_000)
            got += sum(map(len, batches.values()))
        seconds = time.monotonic() - start
    finally:
        await consumer.stop()
    return {"stage": "raw aiokafka getmany", "events": got, "seconds": seconds,
            "events_per_s": got / seconds}


# ---- (b) bare Faust agent -----------------------------------------------------------------

def faust_counter(bootstrap: str, topic: str, n: int, max_s: float = 120,
                  start_timeout_s: float = 90) -> dict:
    """Run bench.faust_counter as a worker; events/s between its first and its last counted
    event (start-up and group join excluded). Stops at n events or after max_s counting."""
    from infra.worker import faust_command

    work = Path(tempfile.mkdtemp(prefix="bench-faust-"))
    done = work / "count.json"
    env = {**os.environ, "BROKER_URL": f"kafka://{bootstrap}", "BENCH_APP_ID": _name("counter"),
           "BENCH_TOPIC": topic, "BENCH_N": str(n), "BENCH_DONE_FILE": str(done),
           "BENCH_DATADIR": str(work / "data"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", ""))
                                         if p)}
    log = open(work / "worker.log", "wb")
    proc = subprocess.Popen(faust_command() + ["-A", "bench.faust_counter", "worker", "-l",
                                               "warn", "--without-web"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    launched, first_seen, info = time.monotonic(), None, {}
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"faust counter exited {proc.returncode}: "
                                   f"{(work / 'worker.log').read_text()[-2000:]}")
            if done.exists():
                info = json.loads(done.read_text())
                first_seen = first_seen or time.monotonic()
                if info["done"] or time.monotonic() - first_seen > max_s:
                    break
            elif time.monotonic() - launched > start_timeout_s + (max_s if first_seen else 0):
                break
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    count = info.get("count", 0)
    seconds = (info["last"] - info["first"]) if info else float("nan")
    return {"stage": "bare Faust agent (count only)", "events": count, "seconds": seconds,
            "events_per_s": (count - 1) / seconds if count > 1 and seconds > 0 else None,
            "capped": bool(info) and not info.get("done")}


# ---- (c) the full job ---------------------------------------------------------------------

def _trainer_class():
    from streams.job import StreamTrainer

    class TimedTrainer(StreamTrainer):
        """Records (time, size) of each window and (time, events accounted for) of each
        publish; the job is unchanged."""

        bench_windows: list
        bench_publishes: list

        async def _train_one(self, window: Any) -> None:
            await super()._train_one(window)
            self.bench_windows.append((time.monotonic(), len(window)))

        async def _publish(self) -> None:
            await super()._publish()
            self.bench_publishes.append((time.monotonic(), _accounted(self)))

    return TimedTrainer


def _timed_job(settings: Any) -> Any:
    job = _trainer_class()(settings)
    job.bench_windows, job.bench_publishes = [], []
    return job


def job_settings(bootstrap: str, topic: str, data_dir: Path, window: int, flush_s: float,
                 **extra: Any):
    """Settings of a job with fresh topic and group names, on CPU."""
    from streams.settings import Settings

    return Settings.from_env({}, kafka_bootstrap_servers=bootstrap, input_topic=topic,
                             dlq_topic=_name("dlq"), recommendations_topic=_name("recs"),
                             metrics_topic=_name("metrics"), group_id=_name("trainer"),
                             app_id=_name("app"), data_dir=data_dir, window_size=window,
                             flush_seconds=flush_s, device="cpu", **extra)


def _accounted(job: Any) -> int:
    c = job.counters
    return c["events_trained"] + c["dead_letters"] + c["duplicates_skipped"] + c["filtered"]


async def full_job(bootstrap: str, topic: str, n: int, window: int = 2048, flush_s: float = 1.0,
                   max_s: float = 300, **settings: Any) -> dict:
    """StreamTrainer in-process on a pre-filled topic: events/s = events accounted for
    (trained, dead-lettered, dropped as duplicates) when the last lists were published /
    time from the start of consumption to then."""
    data = Path(tempfile.mkdtemp(prefix="bench-job-"))
    job = _timed_job(job_settings(bootstrap, topic, data, window, flush_s, **settings))
    await job.start()
    start = time.monotonic()
    task = asyncio.create_task(job.run())
    try:
        while sum(job.checkpointed_offsets.values()) < n and time.monotonic() - start < max_s:
            if task.done():
                task.result()
                break
            await asyncio.sleep(0.05)
    finally:
        await job.stop()
        await job.wait_stopped(120)
        await task
        await job.close()
        shutil.rmtree(data, ignore_errors=True)
    ws, pubs = job.bench_windows, job.bench_publishes
    done_at, events = pubs[-1] if pubs else (float("nan"), 0)
    seconds = done_at - start
    phases = {p: job.phase_seconds.get(p, 0.0) / len(ws) for p in PHASES} if ws else {}
    per_window = seconds / len(ws) if ws else float("nan")
    return {"stage": f"full job H={window} (StreamTrainer in-process)", "events": events,
            "seconds": seconds, "events_per_s": events / seconds if pubs else None,
            "windows": len(ws), "full_windows": sum(1 for w in ws if w[1] == window),
            "publishes": job.phase_counts.get("publish", 0),
            "checkpoints": job.phase_counts.get("checkpoint", 0),
            "capped": events < n,
            "events_trained": job.counters["events_trained"],
            "duplicates_skipped": job.counters["duplicates_skipped"],
            "dead_letters": job.counters["dead_letters"],
            "wall_s_per_window": per_window,
            "phase_s_per_window": phases,
            "other_s_per_window": per_window - sum(phases.values()) if ws else None}


# ---- paced run ----------------------------------------------------------------------------

async def paced(bootstrap: str, keys: list, values: list, rate: float, seconds: float,
                window: int = 2048, flush_s: float = 1.0, drain_s: float = 15) -> dict:
    """Produce at `rate` for `seconds` while the job consumes; sample lag every 0.5 s:
    produced - (trained + dead letters + duplicates + filtered)."""
    n = min(len(values), int(rate * seconds))
    topic = _name("paced")
    data = Path(tempfile.mkdtemp(prefix="bench-paced-"))
    job = _timed_job(job_settings(bootstrap, topic, data, window, flush_s))
    await job.start()
    task = asyncio.create_task(job.run())
    produced = [0]
    samples: list[dict] = []
    start = time.monotonic()

    async def sampler(stop: asyncio.Event) -> None:
        while not stop.is_set():
            samples.append({"t": time.monotonic() - start, "produced": produced[0],
                            "accounted": _accounted(job),
                            "consumed": sum(job.buffer.consumed.values())})
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass

    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler(stop))
    try:
        prod = await produce(bootstrap, topic, keys[:n], values[:n], rate=rate,
                             on_round=lambda s: produced.__setitem__(0, s))
        end_production = time.monotonic() - start
        lag_at_end = n - _accounted(job)
        drain_start = time.monotonic()
        while _accounted(job) < n and time.monotonic() - drain_start < drain_s:
            await asyncio.sleep(0.1)
        drained_s = time.monotonic() - drain_start if _accounted(job) >= n else None
    finally:
        stop.set()
        await sampling
        await job.stop()
        await job.wait_stopped(120)
        await task
        await job.close()
        shutil.rmtree(data, ignore_errors=True)
    lags = [s["produced"] - s["accounted"] for s in samples if s["t"] <= end_production]
    half = [s for s in samples if end_production / 2 <= s["t"] <= end_production]
    slope = None
    if len(half) >= 3:
        t = np.array([s["t"] for s in half])
        lag = np.array([s["produced"] - s["accounted"] for s in half])
        slope = float(np.polyfit(t, lag, 1)[0])
    ws = job.bench_windows
    return {"rate_target": rate, "rate_achieved": prod["events_per_s"], "events": n,
            "seconds": end_production, "max_lag": max(lags) if lags else None,
            "lag_at_end_of_production": lag_at_end,
            "lag_slope_second_half_per_s": slope,
            "lag": "growing" if slope is not None and slope > 0.05 * rate else "bounded",
            "drained_after_s": drained_s, "windows": len(ws),
            "mean_window_size": float(np.mean([w[1] for w in ws])) if ws else None,
            "samples": samples}


# ---- driver -------------------------------------------------------------------------------

async def _run_input(bootstrap: str, label: str, keys: list, values: list, window: int,
                     faust_n: int, faust_max_s: float, job_max_s: float) -> list[dict]:
    from infra.topics import TopicSpec, ensure_topics

    topic = _name(f"e2e-{label}")
    ensure_topics(bootstrap, [TopicSpec(topic, 1)])
    prod = await produce(bootstrap, topic, keys, values)
    n = len(values)
    rows = [{"input": label, "stage": "aiokafka producer (fill)", "events": n,
             "seconds": prod["seconds"], "events_per_s": prod["events_per_s"]}]
    rows.append({"input": label, **await raw_consumer(bootstrap, topic, n)})
    loop = asyncio.get_running_loop()
    fn = min(n, faust_n)
    rows.append({"input": label, **await loop.run_in_executor(
        None, faust_counter, bootstrap, topic, fn, faust_max_s)})
    rows.append({"input": label, **await full_job(bootstrap, topic, n, window,
                                                  max_s=job_max_s)})
    for r in rows:
        r["load"] = load()
    return rows


def run_e2e(inputs: tuple[str, ...] = ("taobao", "synthetic"), synthetic_n: int = 1_000_000,
            taobao_n: int | None = None, window: int = 2048, faust_n: int = 200_000,
            faust_max_s: float = 60, job_max_s: float = 240, paced_rate: float = 10_000,
            paced_seconds: float = 30, bootstrap: str | None = None,
            out_dir: Path | None = None) -> dict[str, Any]:
    """All stages on one broker (a private bundled one unless `bootstrap`); returns the
    result dict that is also written to bench/results/e2e.json."""
    info = machine()
    broker = None
    if bootstrap is None:
        from infra.broker import free_port, start_broker

        broker = start_broker(free_port())
        bootstrap = broker.bootstrap
    try:
        sources = {}
        if "taobao" in inputs:
            from streams.datasets import load_dataset

            tb = load_dataset("taobao-userbehavior-stream")
            if taobao_n is not None:
                tb = tb.slice(0, taobao_n)
            sources["taobao"] = table_values(tb)
        built = time.perf_counter()
        syn = synthetic_values(synthetic_n if "synthetic" in inputs else 0,
                               seed=1) if ("synthetic" in inputs or paced_seconds) else None
        build_s = time.perf_counter() - built
        if "synthetic" in inputs:
            sources["synthetic"] = syn
        rows: list[dict] = []
        for label, (keys, values) in sources.items():
            rows += asyncio.run(_run_input(bootstrap, label, keys, values, window, faust_n,
                                           faust_max_s, job_max_s))
        pace = None
        if paced_seconds:
            need = int(paced_rate * paced_seconds)
            keys, values = syn if syn and len(syn[1]) >= need else synthetic_values(need, seed=2)
            pace = asyncio.run(paced(bootstrap, keys, values, paced_rate, paced_seconds, window))
            pace["load"] = load()
    finally:
        if broker is not None:
            broker.stop()
    ratios = []
    for label in sources:
        by = {r["stage"].split(" ")[0]: r for r in rows if r["input"] == label}
        job = next(r for r in rows if r["input"] == label and r["stage"].startswith("full"))
        fa = next(r for r in rows if r["input"] == label and r["stage"].startswith("bare"))
        raw = by["raw"]
        ratios.append({"input": label, "job_events_per_s": job["events_per_s"],
                       "faust_events_per_s": fa["events_per_s"],
                       "raw_events_per_s": raw["events_per_s"],
                       "job_over_faust": (job["events_per_s"] / fa["events_per_s"]
                                          if job["events_per_s"] and fa["events_per_s"] else None),
                       "target_50k_met": bool(job["events_per_s"] and job["events_per_s"] >= 50e3)})
    phases = [{"input": r["input"], "windows": r["windows"],
               "publishes": r["publishes"], "checkpoints": r["checkpoints"],
               "wall_s_per_window": r["wall_s_per_window"], **r["phase_s_per_window"],
               "other (consume, parse, dedup, wait)": r["other_s_per_window"]}
              for r in rows if r["stage"].startswith("full")]
    result = {"machine": info, "broker": bootstrap if broker is None else "private tansu",
              "window": window, "synthetic_build_s": build_s, "throughput": rows,
              "ratios": ratios, "phases": phases, "paced": pace}
    pace_row = [{k: v for k, v in pace.items() if k != "samples"}] if pace else []
    write_results("e2e", result, {
        "Throughput": [{k: v for k, v in r.items() if k != "phase_s_per_window"} for r in rows],
        "Full job vs bare Faust": ratios,
        "Full job: mean seconds per window by phase": phases,
        "Paced run": pace_row,
    }, notes=[
        "full job = streams.job.StreamTrainer in this process (own aiokafka consumer), CPU,"
        " default settings; events/s = records accounted for when the last lists were"
        " published / time from the start of consumption to then; a capped stage stopped at"
        " its time limit; phases are job totals / windows (rank, publish and checkpoint run"
        " once per publish or checkpoint, not once per window, while the job is behind)",
        "bare Faust = `faust -A bench.faust_counter worker` (session timeout 6 s, heartbeat"
        " 1 s); events/s between its first and last counted event",
        "lag = produced - (trained + dead letters + duplicates skipped + filtered), sampled"
        " every 0.5 s; not from broker end offsets",
        f"synthetic stream built in {build_s:.2f} s (numpy ids, bytes formatting)",
    ], out_dir=out_dir)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__)
    p.add_argument("--inputs", default="taobao,synthetic")
    p.add_argument("--synthetic-n", type=int, default=1_000_000)
    p.add_argument("--taobao-n", type=int)
    p.add_argument("--window", type=int, default=2048)
    p.add_argument("--faust-n", type=int, default=200_000)
    p.add_argument("--faust-max-s", type=float, default=60)
    p.add_argument("--job-max-s", type=float, default=240)
    p.add_argument("--paced-rate", type=float, default=10_000)
    p.add_argument("--paced-seconds", type=float, default=30)
    p.add_argument("--bootstrap")
    p.add_argument("--out-dir", type=Path)
    a = p.parse_args(argv)
    return run_e2e(tuple(a.inputs.split(",")), a.synthetic_n, a.taobao_n, a.window, a.faust_n,
                   a.faust_max_s, a.job_max_s, a.paced_rate, a.paced_seconds, a.bootstrap,
                   a.out_dir)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    main()
