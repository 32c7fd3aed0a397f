"""Which (user, item) pairs have been seen: sorted tensors of packed keys.

Used to keep a user's own items out of negative candidates, evaluation candidates
and, when asked, out of published top-K lists. Membership and per-user look-ups are
binary searches, so they stay vectorised over a whole window.
"""

from __future__ import annotations

import torch
from torch import Tensor

_SHIFT = 32  # key = user << 32 | item; ids are row numbers, far below 2^31
_MERGE_RATIO = 16  # the recent run is merged into the main one past 1/16 of its size
_MERGE_MIN = 65_536


def pack(users: Tensor, items: Tensor) -> Tensor:
    return (users.long() << _SHIFT) | items.long()


class InteractionHistory:
    """Set of (user, item) pairs as two sorted int64 runs, as a log-structured merge:
    windows add to a small recent run, which is merged into the main run only when it
    has grown past a fraction of it, so adding a window costs O(recent), not O(all)."""

    def __init__(self, keys: Tensor | None = None, device: torch.device | str = "cpu") -> None:
        empty = torch.empty(0, dtype=torch.long, device=device)
        self._main = keys.to(device) if keys is not None else empty
        self._recent = empty

    def __len__(self) -> int:
        return int(self._main.numel() + self._recent.numel())

    @property
    def keys(self) -> Tensor:
        """Every key, sorted and distinct (one run; merges the two if need be)."""
        if self._recent.numel():
            self._main, self._recent = _merge(self._main, self._recent), self._recent[:0]
        return self._main

    @keys.setter
    def keys(self, value: Tensor) -> None:
        self._main, self._recent = value, value[:0]

    def add(self, users: Tensor, items: Tensor) -> None:
        new = pack(users, items)
        new = new[~_member(self._main, new)]
        self._recent = torch.unique(torch.cat([self._recent, new]))
        if self._recent.numel() > max(_MERGE_MIN, self._main.numel() // _MERGE_RATIO):
            self._main, self._recent = _merge(self._main, self._recent), self._recent[:0]

    def contains(self, users: Tensor, items: Tensor) -> Tensor:
        """Boolean mask of the pairs' membership; users and items broadcast."""
        query = pack(*torch.broadcast_tensors(users, items))
        return _member(self._main, query) | _member(self._recent, query)

    def items_of(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """(row, item) pairs for every seen item of each user in `users` (U,).

        row indexes into `users`; useful to mask a U x M score matrix.
        """
        rows_a, items_a = _items_of(self._main, users)
        rows_b, items_b = _items_of(self._recent, users)
        return torch.cat([rows_a, rows_b]), torch.cat([items_a, items_b])


def _member(keys: Tensor, query: Tensor) -> Tensor:
    if keys.numel() == 0:
        return torch.zeros_like(query, dtype=torch.bool)
    idx = torch.searchsorted(keys, query).clamp_(max=keys.numel() - 1)
    return keys[idx] == query


def _merge(a: Tensor, b: Tensor) -> Tensor:
    """Two sorted runs of distinct keys, disjoint, as one sorted run."""
    return torch.sort(torch.cat([a, b])).values


def _items_of(keys: Tensor, users: Tensor) -> tuple[Tensor, Tensor]:
    lo = torch.searchsorted(keys, users.long() << _SHIFT)
    hi = torch.searchsorted(keys, (users.long() + 1) << _SHIFT)
    counts = hi - lo
    rows = torch.repeat_interleave(torch.arange(users.numel(), device=users.device), counts)
    starts = torch.repeat_interleave(lo, counts)
    offsets = torch.arange(rows.numel(), device=users.device) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts
    )
    return rows, keys[starts + offsets] & ((1 << _SHIFT) - 1)
