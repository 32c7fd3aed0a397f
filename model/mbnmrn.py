"""MB-NMRN (conv or attn aggregator) offline: the stream job's WindowTrainer, many epochs.

Each epoch replays the training stream in strict chronological order, window by window.
Memory across epochs: the value memory is *carried on* (epoch e+1's first window reads the
memory written by epoch e's last window), as if the stream were replayed after itself; the
interaction history (negatives exclude a user's items) keeps growing the same way. Test
users are scored with the memory as it stands after the last training window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from model.config import ModelConfig
from model.trainer import WindowTrainer


class MBNMRN:
    """Fit = `epochs` chronological passes of WindowTrainer.train_window; score = -d(u, v)."""

    def __init__(
        self, aggregator: str = "attn", window: int = 2048, lr: float = 1e-3, epochs: int = 10,
        use_generator: bool = True, seed: int = 0, **config: object,
    ) -> None:
        self.config = replace(ModelConfig(), aggregator=aggregator, window=window, lr=lr,
                              use_generator=use_generator, **config)
        self.name = f"MB-NMRN-{aggregator}"
        self.epochs, self.seed = epochs, seed
        self.trainer: WindowTrainer | None = None
        self.losses: list[float] = []  # mean hinge loss per epoch

    def fit(
        self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
        on_epoch: Callable[[int], None] | None = None,
    ) -> "MBNMRN":
        self.trainer = WindowTrainer(self.config, seed=self.seed)
        self.trainer.grow(n_users, n_items)
        u_all, i_all = torch.from_numpy(users), torch.from_numpy(items)
        h = self.config.window
        for epoch in range(1, self.epochs + 1):
            total = 0.0
            for lo in range(0, users.size, h):
                rep = self.trainer.train_window(u_all[lo : lo + h], i_all[lo : lo + h],
                                                eval_candidates=0)
                total += rep.d_loss * rep.size
            self.losses.append(total / max(users.size, 1))
            if on_epoch is not None:
                on_epoch(epoch)
        return self

    @torch.no_grad()
    def score(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """users (U,), candidates (U, C) -> (U, C) negative distances, memory after training."""
        assert self.trainer is not None, "fit() first"
        d = self.trainer.d
        p, _ = d.read_users(torch.from_numpy(users), self.trainer.memory())  # U x r
        v = d.items[torch.from_numpy(candidates)]  # U x C x r
        return (-torch.linalg.vector_norm(p[:, None, :] - v, dim=-1)).numpy()

    @torch.no_grad()
    def hinge_loss(self, users: np.ndarray, items: np.ndarray, negatives: np.ndarray) -> float:
        """Mean hinge (Eq. 21) on held-out pairs with given negatives: the plateau signal."""
        assert self.trainer is not None, "fit() first"
        d = self.trainer.d
        p, _ = d.read_users(torch.from_numpy(users), self.trainer.memory())
        pos = d.distances(p, torch.from_numpy(items))
        neg = d.distances(p, torch.from_numpy(negatives))
        return float(torch.relu(self.config.margin + pos - neg).mean())
