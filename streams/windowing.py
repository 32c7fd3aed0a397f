"""Windows of H interactions in arrival order, each with the stream position it covers."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from streams.dedup import digest
from streams.records import EventBatch


@dataclass
class Window:
    """A window of valid events and, per partition, the next offset once it is trained.

    `offsets` covers every record consumed up to the window's last event, including
    dead-lettered and skipped records between its events.
    """

    user_ids: list[str]
    item_ids: list[str]
    timestamps: list[float]
    offsets: dict[str, int]
    opened_at: float  # monotonic time its first event was buffered
    tails: dict[str, int] = field(default_factory=dict)  # digest of the record at offset - 1

    def __len__(self) -> int:
        return len(self.user_ids)


def partition_key(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


class WindowBuffer:
    """Collects valid events and cuts them into windows of `size`.

    `feed` takes one partition's consumed records in order; `flush` cuts the partial
    window. The buffer also tracks, per partition, the next offset consumed, so a
    window's `offsets` is exactly the stream position once it is trained.
    """

    def __init__(self, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        if size < 1:
            raise ValueError("window size must be >= 1")
        self.size = size
        self.clock = clock
        self.consumed: dict[str, int] = {}
        self.tails: dict[str, int] = {}  # digest of the last consumed record, per partition
        self._reset()

    def _reset(self) -> None:
        self._users: list[str] = []
        self._items: list[str] = []
        self._times: list[float] = []
        self._opened: float | None = None

    def __len__(self) -> int:
        return len(self._users)

    @property
    def opened_at(self) -> float | None:
        return self._opened

    def feed(
        self,
        key: str,
        offsets: Sequence[int],
        events: EventBatch,
        values: Sequence[bytes | None] | None = None,
    ) -> list[Window]:
        """Add the valid `events` of one partition's records; return the windows they fill.

        offsets: the offset of every consumed record (valid or not), in order;
        events.positions index into it. values: the records' values, to remember a digest
        of the last record each window covers (a restart checks the topic still has it).
        """
        if not offsets:
            return []
        windows = []
        start, n = 0, len(events)
        while start < n:
            if self._opened is None:
                self._opened = self.clock()
            take = min(self.size - len(self._users), n - start)
            stop = start + take
            self._users += events.user_ids[start:stop]
            self._items += events.item_ids[start:stop]
            self._times += events.timestamps[start:stop]
            start = stop
            if len(self._users) == self.size:
                last = events.positions[stop - 1]
                tails = dict(self.tails)
                if values is not None:
                    tails[key] = digest(values[last] or b"")
                windows.append(self._cut({**self.consumed, key: offsets[last] + 1}, tails))
        self.consumed[key] = offsets[-1] + 1
        if values is not None:
            self.tails[key] = digest(values[-1] or b"")
        return windows

    def postpone(self, seconds: float) -> None:
        """Move the partial window's start forward, e.g. by time spent training, so the
        flush bound counts time spent waiting for events, not time spent busy."""
        if self._opened is not None:
            self._opened += seconds

    def due(self, flush_seconds: float) -> bool:
        """Whether the partial window has waited `flush_seconds` since its first event."""
        return self._opened is not None and self.clock() - self._opened >= flush_seconds

    def flush(self) -> Window | None:
        """Cut the partial window, if any; it covers everything consumed so far."""
        if not self._users:
            return None
        return self._cut(dict(self.consumed), dict(self.tails))

    def _cut(self, offsets: dict[str, int], tails: dict[str, int]) -> Window:
        opened = self.clock() if self._opened is None else self._opened
        window = Window(self._users, self._items, self._times, offsets, opened, tails)
        self._reset()
        return window


def select(events: EventBatch, keep: Callable[[str], bool]) -> EventBatch:
    """The events whose event type passes `keep`, positions preserved."""
    return subset(events, [i for i, t in enumerate(events.event_types) if keep(t)])


def subset(events: EventBatch, idx: Sequence[int]) -> EventBatch:
    """The events at indices `idx` (ascending), positions preserved."""
    if len(idx) == len(events):
        return events
    return EventBatch(
        user_ids=[events.user_ids[i] for i in idx],
        item_ids=[events.item_ids[i] for i in idx],
        timestamps=[events.timestamps[i] for i in idx],
        event_types=[events.event_types[i] for i in idx],
        quantities=[events.quantities[i] for i in idx],
        prices=[events.prices[i] for i in idx],
        positions=[events.positions[i] for i in idx],
    )
