"""NMRN (Wang et al. 2018) as the paper describes it: memory written after every interaction.

Eq. 1-4 read the memory, Eq. 5-7 give the WARP loss with rank ~ floor((M - 1) / n), and
Eq. 8-11 write the interaction's own item. Each interaction waits for the previous write,
so training is a Python loop over interactions; that serial loop is what MB-NMRN removes.
Negatives are uniform (the generator is not used here: see bench/results/paper/README.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from model.memory import MemoryWriter
from model.negatives import PairSet, sample_negatives


class NMRN:
    """Interaction-wise NMRN with WARP loss; the value memory is carried across epochs."""

    name = "NMRN"

    def __init__(
        self, dim: int = 32, slots: int = 64, candidates: int = 100, margin: float = 5.0,
        lr: float = 1e-3, epochs: int = 1, init_std: float = 0.01, seed: int = 0,
        max_interactions: int | None = None,
    ) -> None:
        self.dim, self.slots, self.candidates, self.margin = dim, slots, candidates, margin
        self.lr, self.epochs, self.init_std, self.seed = lr, epochs, init_std, seed
        self.max_interactions = max_interactions  # speed runs: stop an epoch early
        self.values: Tensor | None = None
        self.steps_per_epoch: list[int] = []

    def _build(self, n_users: int, n_items: int) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        r, slots, std = self.dim, self.slots, self.init_std
        self.users = nn.Parameter(torch.randn(n_users, r, generator=gen) * std)  # A
        self.items = nn.Parameter(torch.randn(n_items, r, generator=gen) * std)  # B
        self.keys = nn.Parameter(torch.randn(slots, r, generator=gen) * std)  # M^k
        self.writer = MemoryWriter(r)
        with torch.no_grad():
            for p in self.writer.parameters():
                p.normal_(0.0, std, generator=gen)
        self.values = torch.randn(slots, r, generator=gen) * std  # M^v_0
        params = [self.users, self.items, self.keys, *self.writer.parameters()]
        self.opt = torch.optim.Adam(params, lr=self.lr)

    def _attention(self, user: Tensor) -> Tensor:
        return torch.softmax(-torch.linalg.vector_norm(self.keys - user, dim=-1), dim=0)  # L

    def fit(
        self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
        on_epoch: Callable[[int], None] | None = None,
    ) -> "NMRN":
        rng = np.random.default_rng(self.seed)
        self._build(n_users, n_items)
        pairs = PairSet(users, items, n_items)
        n = users.size if self.max_interactions is None else min(users.size,
                                                                 self.max_interactions)
        log_rank = torch.tensor([math.log(math.floor((n_items - 1) / k) + 1)
                                 for k in range(1, self.candidates + 1)])
        prev: tuple[Tensor, int, int] | None = None  # (M^v_{t-1} detached, user, item)
        for epoch in range(1, self.epochs + 1):
            negs = torch.from_numpy(sample_negatives(rng, users[:n], pairs, self.candidates))
            u_all, i_all = torch.from_numpy(users[:n]), torch.from_numpy(items[:n])
            steps = 0
            for t in range(n):
                u, v = int(u_all[t]), int(i_all[t])
                # read memory: M^v_t, with the gradient through the write that produced it
                if prev is None:
                    values = self.values
                else:
                    base, pu, pv = prev
                    values = self.writer(base, self.items[pv], self._attention(self.users[pu]))
                w = self._attention(self.users[u])
                p = w @ values  # r

                # WARP: first violating draw among J uniform negatives (Eq. 5-7)
                d_pos = torch.linalg.vector_norm(p - self.items[v])
                d_neg = torch.linalg.vector_norm(p - self.items[negs[t]], dim=-1)  # J
                hinge = self.margin + d_pos - d_neg
                viol = torch.nonzero(hinge.detach() > 0)
                if viol.numel():
                    first = int(viol[0])
                    loss = log_rank[first] * hinge[first]
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                    self.opt.step()
                    steps += 1

                # write memory with the interaction's own item (Eq. 8-11)
                prev = (values.detach(), u, v)
            self.steps_per_epoch.append(steps)
            self._finish(prev)
            if on_epoch is not None:
                on_epoch(epoch)
        return self

    @torch.no_grad()
    def _finish(self, prev: tuple[Tensor, int, int] | None) -> None:
        """Apply the last pending write, so scoring sees the memory after training."""
        if prev is not None:
            base, pu, pv = prev
            self.values = self.writer(base, self.items[pv], self._attention(self.users[pu]))

    @torch.no_grad()
    def score(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """users (U,), candidates (U, C) -> (U, C) negative distances -||p - v||."""
        assert self.values is not None, "fit() first"
        u = self.users[torch.from_numpy(users)]  # U x r
        w = torch.softmax(-torch.cdist(u, self.keys), dim=-1)  # U x L
        p = w @ self.values  # U x r
        v = self.items[torch.from_numpy(candidates)]  # U x C x r
        return (-torch.linalg.vector_norm(p[:, None, :] - v, dim=-1)).numpy()
