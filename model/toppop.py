"""Top-Pop: every user gets the items bought most often in the training stream."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class TopPop:
    """Score = training interaction count of the item; the same list for every user."""

    name = "Top-Pop"

    def __init__(self, seed: int = 0, epochs: int = 1) -> None:
        self.seed = seed  # unused: Top-Pop is deterministic; kept for the shared contract
        self.counts = np.zeros(0)

    def fit(
        self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
        on_epoch: Callable[[int], None] | None = None,
    ) -> "TopPop":
        self.counts = np.bincount(items, minlength=n_items).astype(np.float64)
        if on_epoch is not None:
            on_epoch(1)
        return self

    def score(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """users (U,), candidates (U, C) -> (U, C) popularity counts."""
        return self.counts[candidates]
