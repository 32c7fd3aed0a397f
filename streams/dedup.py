"""Recently trained events by content, so a producer's retry does not train twice.

A producer that retries a send it believes failed (without Kafka's idempotent
producer) writes the same bytes again at a new offset; the offset-based skip rule
cannot see that. The trainer keeps the 64-bit digests of the last `horizon` events it
accepted and drops an event whose exact value it has already accepted. The digests are
part of the checkpoint, in arrival order, so a restart remembers the same events.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor


def digest(value: bytes) -> int:
    """A stable signed 64-bit digest of a record value."""
    return int.from_bytes(hashlib.blake2b(value, digest_size=8).digest(), "little", signed=True)


class RecentEvents:
    """The digests of the last `horizon` accepted events, oldest first."""

    def __init__(self, horizon: int) -> None:
        if horizon < 0:
            raise ValueError("horizon must be >= 0")
        self.horizon = horizon
        self._seen: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def accept(self, values: Sequence[bytes]) -> list[bool]:
        """For each value, whether it is new (and now remembered) or a recent duplicate."""
        if self.horizon == 0:
            return [True] * len(values)
        seen, out = self._seen, []
        for value in values:
            d = digest(value)
            if d in seen:
                out.append(False)
                continue
            seen[d] = None
            out.append(True)
        while len(seen) > self.horizon:
            seen.popitem(last=False)
        return out

    def to_tensor(self, exclude_newest: int = 0) -> Tensor:
        """The digests, oldest first, leaving out the `exclude_newest` most recent ones."""
        keys = list(self._seen)
        if exclude_newest:
            keys = keys[: max(len(keys) - exclude_newest, 0)]
        return torch.tensor(keys, dtype=torch.int64)

    @classmethod
    def from_tensor(cls, horizon: int, digests: Tensor) -> "RecentEvents":
        recent = cls(horizon)
        for d in digests.tolist()[-horizon:] if horizon else []:
            recent._seen[d] = None
        return recent
