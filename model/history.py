"""Which (user, item) pairs have been seen: a sorted tensor of packed keys.

Used to keep a user's own items out of negative candidates, evaluation candidates
and, when asked, out of published top-K lists. Membership and per-user look-ups are
binary searches, so they stay vectorised over a whole window.
"""

from __future__ import annotations

import torch
from torch import Tensor

_SHIFT = 32  # key = user << 32 | item; ids are row numbers, far below 2^31


def pack(users: Tensor, items: Tensor) -> Tensor:
    return (users.long() << _SHIFT) | items.long()


class InteractionHistory:
    """Set of (user, item) pairs as a sorted int64 tensor."""

    def __init__(self, keys: Tensor | None = None, device: torch.device | str = "cpu") -> None:
        self.keys = (
            keys.to(device) if keys is not None else torch.empty(0, dtype=torch.long, device=device)
        )

    def __len__(self) -> int:
        return int(self.keys.numel())

    def add(self, users: Tensor, items: Tensor) -> None:
        self.keys = torch.unique(torch.cat([self.keys, pack(users, items)]))

    def contains(self, users: Tensor, items: Tensor) -> Tensor:
        """Boolean mask of the pairs' membership; users and items broadcast."""
        query = pack(*torch.broadcast_tensors(users, items))
        if self.keys.numel() == 0:
            return torch.zeros_like(query, dtype=torch.bool)
        idx = torch.searchsorted(self.keys, query).clamp_(max=self.keys.numel() - 1)
        return self.keys[idx] == query

    def items_of(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """(row, item) pairs for every seen item of each user in `users` (U,).

        row indexes into `users`; useful to mask a U x M score matrix.
        """
        lo = torch.searchsorted(self.keys, users.long() << _SHIFT)
        hi = torch.searchsorted(self.keys, (users.long() + 1) << _SHIFT)
        counts = hi - lo
        rows = torch.repeat_interleave(torch.arange(users.numel(), device=users.device), counts)
        starts = torch.repeat_interleave(lo, counts)
        offsets = torch.arange(rows.numel(), device=users.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts
        )
        items = self.keys[starts + offsets] & ((1 << _SHIFT) - 1)
        return rows, items
