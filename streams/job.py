"""The trainer: consume, validate, window, train, publish, checkpoint, acknowledge.

It is the single writer of the model. It reads the input topic with its own batched
aiokafka consumer (manually assigned to every partition, so no group rebalance can
interrupt a window) because Faust's per-event stream path tops out near 5k events/s
here (../shared/BROKER.md). Per window:

1. score the window with the model as it stands (online test-then-train metrics),
2. one discriminator/generator step and one memory write.

Then, after every window while the consumer is caught up (at most every
`publish_interval_s` while it is behind):

3. rank every user trained since the last publish with the newest model, publish their
   lists, the pending windows' metrics and dead letters, and wait until the broker has
   them;

and at most every `checkpoint_interval_s`, whenever the stream is idle, and on stop,
right after such a publish:

4. write one atomic checkpoint: model, optimisers, memory, vocabularies, offsets,
5. commit the offsets to the consumer group (monitoring only: the checkpoint is the
   source of truth, and on restart records below its offsets are skipped).

A crash anywhere retrains the windows after the last checkpoint on restart with the same
seeds, so the model ends as if nothing had happened; their lists and dead letters may be
published twice (at least once, identical contents).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.topics import TopicSpec, ensure_topics
from model.recommender import Recommender
from model.trainer import WindowReport
from streams.checkpoint import Checkpoint, CheckpointStore
from streams.counters import StreamCounters
from streams.dedup import RecentEvents, digest
from streams.faults import Failpoints, Stopping, retry
from streams.publisher import Publisher, list_value, now_iso
from streams.records import parse_values
from streams.security import aiokafka_kwargs, kafka_python_kwargs
from streams.settings import Settings
from streams.windowing import Window, WindowBuffer, partition_key, select, subset

log = logging.getLogger(__name__)

_CHECKPOINT_SHARE = 10  # checkpoint at most every 10x the last checkpoint's duration


class StreamTrainer:
    """The stream job without Faust: usable from tests, benchmarks and the Faust service."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = settings.torch_device()
        self.recommender = Recommender(settings.model_config(), settings.seed, self.device)
        self.buffer = WindowBuffer(settings.window_size)
        self.recent = RecentEvents(settings.dedup_horizon)
        self.counters = StreamCounters()
        self.last_report: WindowReport | None = None
        self.started_at = time.time()
        self._lock = threading.Lock()  # guards the recommender: trainer thread vs queries
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mbnmrn-train")
        self._last_position_save = 0.0
        self.failpoints = Failpoints(settings.crash_at)
        self.publisher = Publisher(settings, self.failpoints)
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._run_started = False
        self._trainable = settings.train_event_types.__contains__
        self.store: CheckpointStore | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self._last_info = 0.0
        self.checkpointed_offsets: dict[str, int] = {}
        self.state = "starting"  # starting -> running -> stopping -> stopped
        # seconds per phase (train, rank, publish, checkpoint, commit) since start
        self.phase_seconds: dict[str, float] = {}
        self.phase_counts: dict[str, int] = {}  # how often each phase ran
        self._unpublished_users: dict[str, None] = {}  # trained since the last publish
        self._unpublished_metrics: list[dict[str, Any]] = []  # one per window
        self._uncheckpointed: Window | None = None  # newest window trained since a checkpoint
        self._published_at = self._checkpointed_at = time.monotonic()
        self._checkpoint_s = 0.0  # how long the last checkpoint took

    # ---- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Restore the newest checkpoint, then (retrying until the broker answers) create
        missing topics, connect and seek."""
        s = self.settings
        loop = asyncio.get_running_loop()
        self.store = CheckpointStore(s.checkpoint_dir, keep=s.checkpoint_keep)
        await loop.run_in_executor(self._pool, self._restore)
        stopping = self._stopping
        await retry("creating topics", lambda: loop.run_in_executor(None, self.ensure_topics),
                    stopping=stopping)
        await retry("starting the producer", self.publisher.start, stopping=stopping)
        await retry("starting the consumer", self._start_consumer, stopping=stopping)
        self.state = "running"

    async def _start_consumer(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap_servers, group_id=s.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
            **aiokafka_kwargs(s),
        )
        try:
            await consumer.start()
            self.consumer = consumer
            await self._assign()
        except BaseException:
            self.consumer = None
            await consumer.stop()
            raise

    def ensure_topics(self) -> None:
        s = self.settings
        specs = [
            TopicSpec(s.input_topic, partitions=s.input_partitions),
            TopicSpec(s.dlq_topic, partitions=s.output_partitions),
            TopicSpec(s.recommendations_topic, partitions=s.output_partitions),
            TopicSpec(s.metrics_topic, partitions=1),
        ]
        created = ensure_topics(s.kafka_bootstrap_servers, specs, timeout_s=10,
                                client_kwargs=kafka_python_kwargs(s))
        if created:
            log.info("created topics %s", ", ".join(created))

    def _restore(self) -> None:
        assert self.store is not None
        ckpt = self.store.load_latest()
        if ckpt is None:
            log.info("no checkpoint in %s: starting a new model", self.store.path)
            return
        self.recommender = Recommender.from_state(
            ckpt.tensors, ckpt.meta, ckpt.blobs, device=self.device
        )
        self.buffer.consumed = dict(ckpt.offsets)
        self.buffer.tails = dict(ckpt.tails)
        self.checkpointed_offsets = dict(ckpt.offsets)
        digests = ckpt.tensors.get("job/recent_digests")
        if digests is not None:
            self.recent = RecentEvents.from_tensor(self.settings.dedup_horizon, digests)
        self.counters.restore(ckpt.counters)
        log.info(
            "restored checkpoint: window %d, %d users, %d items, offsets %s",
            ckpt.window, len(self.recommender.users), len(self.recommender.items), ckpt.offsets,
        )

    async def _assign(self) -> None:
        assert self.consumer is not None
        topic = self.settings.input_topic
        await self.consumer.topics()
        partitions = sorted(self.consumer.partitions_for_topic(topic) or ())
        if not partitions:
            raise RuntimeError(f"topic {topic!r} has no partitions")
        tps = [TopicPartition(topic, p) for p in partitions]
        self.consumer.assign(tps)
        for tp in tps:
            await self._verify_tail(tp)
        for tp in tps:
            offset = self.buffer.consumed.get(partition_key(tp.topic, tp.partition))
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)
        log.info("trainer assigned %s partitions %s; resuming at %s", topic, partitions,
                 self.buffer.consumed or "the beginning")

    async def _verify_tail(self, tp: TopicPartition) -> None:
        """Check that the record just below the checkpointed offset is still the one the
        checkpoint saw; if not, the topic was recreated or truncated, and say so loudly."""
        assert self.consumer is not None
        key = partition_key(tp.topic, tp.partition)
        offset, tail = self.buffer.consumed.get(key), self.buffer.tails.get(key)
        if not offset or tail is None:
            return
        self.consumer.seek(tp, offset - 1)
        got = await self.consumer.getmany(tp, timeout_ms=5000, max_records=1)
        records = got.get(tp, [])
        if records and records[0].offset == offset - 1 and digest(records[0].value or b"") == tail:
            return
        found = f"offset {records[0].offset}" if records else "no record"
        log.warning(
            "the checkpoint is at offset %d of %s but the record before it is not the one it "
            "trained on (%s found): the topic was recreated or truncated (the bundled broker "
            "forgets every topic on restart). Records below offset %d will be skipped; to "
            "start over, stop the worker and delete %s", offset, key, found, offset,
            self.settings.checkpoint_dir)

    async def stop(self) -> None:
        """Ask the loop to stop after the window in progress."""
        self.state = "stopping"
        self._stopping.set()

    async def wait_stopped(self, timeout_s: float) -> bool:
        """Wait for run() to return; False if it is still busy after `timeout_s`."""
        if not self._run_started:
            return True
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        await self.publisher.stop()
        self._pool.shutdown(wait=True)
        if self.store is not None:
            self.store.close()
        self.state = "stopped"

    # ---- main loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until stop() is called; trains each window as it fills or times out."""
        assert self.consumer is not None
        flush_s, size = self.settings.flush_seconds, self.settings.window_size
        self._run_started = True
        try:
            while not self._stopping.is_set():
                timeout = 0.5
                if self.buffer.opened_at is not None:
                    left = flush_s - (time.monotonic() - self.buffer.opened_at)
                    timeout = min(timeout, max(left, 0.01))
                batches = await self.consumer.getmany(
                    timeout_ms=int(timeout * 1000), max_records=size
                )
                polled = sum(map(len, batches.values()))
                # The time bound is for a quiet stream: while the consumer is behind (the
                # last poll came back full) windows keep filling, whatever our own speed.
                caught_up = polled < size
                windows: list[Window] = []
                for tp, records in batches.items():
                    windows += self._ingest(tp, records)
                await self.publisher.send_dead_letters(self._stopping)
                busy = time.monotonic()
                for i, window in enumerate(windows):
                    later = sum(len(w) for w in windows[i + 1 :]) + len(self.buffer)
                    await self._train_one(window)
                    await self._settle(later, caught_up and i == len(windows) - 1)
                self.buffer.postpone(time.monotonic() - busy)  # our own time is not waiting
                flushed = self.buffer.flush() if caught_up and self.buffer.due(flush_s) else None
                if flushed is not None:
                    await self._train_one(flushed)
                    await self._settle(0, caught_up=True)
                if not windows and flushed is None:  # a quiet poll, or only untrainable records
                    await self._settle(len(self.buffer), caught_up, idle=not polled)
            # stopped: what was trained is published and checkpointed before run() returns
            await self._settle(len(self.buffer), caught_up=True, idle=True)
        except Stopping as exc:
            log.info("stopped while retrying %s; windows since the last checkpoint will be "
                     "trained again on restart", exc)
        finally:
            self._stopped.set()

    def _ingest(self, tp: TopicPartition, records: list[Any]) -> list[Window]:
        """Validate one partition's records; dead-letter the bad ones; buffer the rest."""
        key = partition_key(tp.topic, tp.partition)
        floor = self.buffer.consumed.get(key, 0)
        fresh = [r for r in records if r.offset >= floor]
        self.counters.redelivered(len(records) - len(fresh))
        if not fresh:
            return []
        values = [r.value for r in fresh]
        events, rejections = parse_values(values)
        for rej in rejections:
            rec = fresh[rej.position]
            self.publisher.dead_letter(rec, rej.reason, rej.detail)
            self.counters.dead_letter(key, rec.offset, rej.reason.value)
        trainable = select(events, self._trainable)
        if len(trainable) < len(events):
            kept = set(trainable.positions)
            for p in events.positions:
                if p not in kept:
                    self.counters.skipped(key, fresh[p].offset, "filtered")
        fresh_values = self.recent.accept([values[p] for p in trainable.positions])
        if not all(fresh_values):
            for p, new in zip(trainable.positions, fresh_values):
                if not new:
                    self.counters.skipped(key, fresh[p].offset, "duplicates_skipped")
            trainable = subset(trainable, [i for i, new in enumerate(fresh_values) if new])
        return self.buffer.feed(key, [r.offset for r in fresh], trainable, values)

    async def _train_one(self, window: Window) -> None:
        """Train one window; its users' lists and its metrics wait for the next publish."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        report = await loop.run_in_executor(self._pool, self._train, window)
        self.failpoints.reach("trained", report.window)
        self._unpublished_users.update(dict.fromkeys(window.user_ids))
        self._unpublished_metrics.append(self.metrics(report, train_s=time.perf_counter() - t0))
        self._uncheckpointed = window
        self._phase("train", time.perf_counter() - t0)
        self._log_window(report, window)

    async def _settle(self, later: int, caught_up: bool, idle: bool = False) -> None:
        """Publish and checkpoint what was trained, when it is time to.

        Lists (and the metrics of the windows they cover) are published after every
        window while the consumer is caught up, otherwise at most every
        `publish_interval_s`. A checkpoint is taken at most every `checkpoint_interval_s`
        (or ten times as long as the last one took, if that is longer) and whenever the
        stream is idle, always right after a publish, so that it never covers a window
        whose lists are not out. `later` events were accepted after the last trained
        window (they will be read again after a restart from this checkpoint). With
        nothing trained since the last checkpoint, only the position may be saved.
        """
        s, now = self.settings, time.monotonic()
        if self._uncheckpointed is None:
            await self._save_position()
            return
        interval = s.checkpoint_interval_s
        if interval:  # a big model: checkpoints spend at most ~1/10 of the time
            interval = max(interval, _CHECKPOINT_SHARE * self._checkpoint_s)
        checkpoint_due = idle or now - self._checkpointed_at >= interval
        if self._unpublished_metrics and (
            caught_up or checkpoint_due or now - self._published_at >= s.publish_interval_s
        ):
            await self._publish()
        if checkpoint_due:
            window, self._uncheckpointed = self._uncheckpointed, None
            loop = asyncio.get_running_loop()
            t0 = time.perf_counter()
            await loop.run_in_executor(self._pool, self._checkpoint, window, later)
            self._checkpointed_at = time.monotonic()
            self._checkpoint_s = time.perf_counter() - t0
            self.failpoints.reach("checkpointed", self.recommender.windows - 1)
            t1 = time.perf_counter()
            await self._commit(window)
            self.failpoints.reach("committed", self.recommender.windows - 1)
            self._phase("checkpoint", t1 - t0)
            self._phase("commit", time.perf_counter() - t1)

    async def _publish(self) -> None:
        """Rank every user trained since the last publish with the newest model; send their
        lists and the pending windows' metrics, and wait until the broker has them."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        users = list(self._unpublished_users)
        lists, version = await loop.run_in_executor(self._pool, self._rank, users)
        metrics = self._unpublished_metrics
        metrics[-1]["lists_published"] = len(lists)
        t1 = time.perf_counter()
        await self.publisher.publish(version, lists, metrics, self._stopping)
        self.failpoints.reach("published", version - 1)
        self._unpublished_users.clear()
        self._unpublished_metrics = []
        self._published_at = time.monotonic()
        self._phase("rank", t1 - t0)
        self._phase("publish", time.perf_counter() - t1)

    def _phase(self, name: str, seconds: float) -> None:
        self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + seconds
        self.phase_counts[name] = self.phase_counts.get(name, 0) + 1

    def _train(self, window: Window) -> WindowReport:
        s = self.settings
        if s.slow_window_s:
            time.sleep(s.slow_window_s)
        with self._lock:
            report = self.recommender.train_window(
                window.user_ids, window.item_ids, eval_candidates=s.eval_candidates,
                eval_k=s.eval_k, eval_sample=s.eval_sample or None,
            )
        self.last_report = report
        if report.rolled_back:
            log.warning("window %d rolled back: its loss or gradients were not finite",
                        report.window)
        self.counters.trained(report)
        return report

    def _rank(self, users: list[str]) -> tuple[dict[str, list], int]:
        s = self.settings
        with self._lock:
            lists = self.recommender.recommend(users, s.top_k, s.exclude_purchased)
            return lists, self.recommender.windows

    def _checkpoint(self, window: Window, later: int) -> None:
        assert self.store is not None
        with self._lock:
            tensors, meta, blobs = self.recommender.state()
        # Digests of events the checkpoint covers; the `later` ones will be read again.
        tensors["job/recent_digests"] = self.recent.to_tensor(exclude_newest=later)
        counters = self.counters.covered(window.offsets)
        self.store.save(Checkpoint(
            window=self.recommender.windows, offsets=dict(window.offsets), tensors=tensors,
            meta=meta, blobs=blobs, counters=counters, tails=dict(window.tails),
        ))
        self.checkpointed_offsets = dict(window.offsets)

    async def _save_position(self) -> None:
        """Checkpoint the position when only untrainable records arrived since the last
        checkpoint (nothing buffered): otherwise a restart would read them again."""
        consumed = self.buffer.consumed
        if (len(self.buffer) or consumed == self.checkpointed_offsets
                or time.monotonic() - self._last_position_save < self.settings.flush_seconds):
            return
        self._last_position_save = time.monotonic()
        window = Window([], [], [], dict(consumed), time.monotonic(),
                        tails=dict(self.buffer.tails))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._checkpoint, window, 0)
        await self._commit(window)
        log.debug("position checkpoint at %s (no window to train)", window.offsets)

    async def _commit(self, window: Window) -> None:
        assert self.consumer is not None
        offsets = {}
        for key, offset in window.offsets.items():
            topic, _, partition = key.rpartition("/")
            offsets[TopicPartition(topic, int(partition))] = offset
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:  # the checkpoint already holds these offsets
            log.warning("offset commit failed (%s); the checkpoint still covers them", exc)

    # ---- reporting ----------------------------------------------------------------------

    def metrics(self, report: WindowReport, train_s: float) -> dict[str, Any]:
        """One window's metrics; `lists_published` is set on the window a publish follows."""
        c, k = self.counters, self.settings.eval_k
        return {
            "window": report.window,
            "model_version": self.recommender.windows,
            "size": report.size,
            "d_loss": report.d_loss,
            "rolled_back": report.rolled_back,
            "g_loss": report.g_loss,
            "evaluated": report.evaluated,
            f"hr@{k}": report.hit_rate if report.evaluated else None,
            f"ndcg@{k}": report.mean_ndcg if report.evaluated else None,
            "cumulative": c.online(k),
            "events_trained": c["events_trained"],
            "dead_letters": c["dead_letters"],
            "lists_published": 0,
            "train_seconds": report.seconds,
            "window_seconds": train_s,  # train_seconds plus mapping ids and hand-over
            "phase_seconds_total": dict(self.phase_seconds),
            "generated_at": now_iso(),
        }

    def status(self) -> dict[str, Any]:
        c, k = self.counters, self.settings.eval_k
        return {
            "state": self.state,
            "model_version": self.recommender.windows,
            "windows_trained": self.recommender.windows,
            "events_trained": c["events_trained"],
            "dead_letters": c["dead_letters"],
            "dead_letter_reasons": dict(c.reasons),
            "redelivered_skipped": c["redelivered_skipped"],
            "duplicates_skipped": c["duplicates_skipped"],
            "filtered_event_types": c["filtered"],
            "windows_rolled_back": c["windows_rolled_back"],
            "buffered": len(self.buffer),
            "last_trained_offsets": self._last_trained_offsets(),
            "users": len(self.recommender.users),
            "items": len(self.recommender.items),
            "online": c.online(k),
            "phase_seconds": dict(self.phase_seconds),  # totals since start, per phase
            "phase_counts": dict(self.phase_counts),
            "device": self.device,
            "uptime_s": time.time() - self.started_at,
        }

    def _last_trained_offsets(self) -> dict[str, int]:
        # The checkpoint holds the next offset to consume; the last trained record is one less.
        return {k: v - 1 for k, v in self.checkpointed_offsets.items()}

    def recommend(self, user_id: str) -> dict[str, Any] | None:
        """The current model's list for one user (thread-safe), or None if unknown."""
        s = self.settings
        user_id = user_id.strip()  # ids are stripped at ingest too
        with self._lock:
            lists = self.recommender.recommend([user_id], s.top_k, s.exclude_purchased)
            version = self.recommender.windows
        if user_id not in lists:
            return None
        return list_value(user_id, lists[user_id], version, version - 1, now_iso())

    def _log_window(self, report: WindowReport, window: Window) -> None:
        now = time.monotonic()
        level = logging.INFO if now - self._last_info >= 10 else logging.DEBUG
        if level == logging.INFO:
            self._last_info = now
        log.log(
            level, "window %d trained: %d events in %.3fs, loss %.4f, online hr@%d %s, offsets %s",
            report.window, report.size, report.seconds, report.d_loss, self.settings.eval_k,
            f"{report.hit_rate:.3f}" if report.evaluated else "n/a", window.offsets,
        )
