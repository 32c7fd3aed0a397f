"""Uniform negative items for the offline baselines: items a user did not interact with."""

from __future__ import annotations

import numpy as np


class PairSet:
    """The training (user, item) pairs as sorted packed int64 keys, for fast membership."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_items: int) -> None:
        self.n_items = n_items
        self.keys = np.unique(users.astype(np.int64) * n_items + items.astype(np.int64))

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        query = users.astype(np.int64) * self.n_items + items.astype(np.int64)
        idx = np.searchsorted(self.keys, query).clip(max=self.keys.size - 1)
        return self.keys[idx] == query


def sample_negatives(
    rng: np.random.Generator, users: np.ndarray, pairs: PairSet, k: int = 1, tries: int = 5
) -> np.ndarray:
    """(n, k) uniform items not in the user's training pairs (a few rejection rounds;
    a user who has bought almost everything may keep a positive, which is rare)."""
    u = np.repeat(users, k).reshape(-1, k) if k > 1 else users[:, None]
    neg = rng.integers(0, pairs.n_items, size=u.shape)
    for _ in range(tries):
        bad = pairs.contains(u, neg)
        if not bad.any():
            break
        neg[bad] = rng.integers(0, pairs.n_items, size=int(bad.sum()))
    return neg
