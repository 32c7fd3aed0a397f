"""LightGCN (He et al. 2020): propagation over the normalised user-item graph, BPR loss."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from model.negatives import PairSet, sample_negatives


def normalised_adjacency(users: np.ndarray, items: np.ndarray, n_users: int,
                         n_items: int) -> Tensor:
    """D^-1/2 A D^-1/2 of the bipartite graph of distinct training pairs, (N+M) x (N+M)."""
    keys = np.unique(users.astype(np.int64) * n_items + items)
    u, i = keys // n_items, keys % n_items + n_users
    rows, cols = np.concatenate([u, i]), np.concatenate([i, u])
    deg = np.bincount(rows, minlength=n_users + n_items).astype(np.float64)
    val = 1.0 / np.sqrt(deg[rows] * deg[cols])
    idx = torch.from_numpy(np.stack([rows, cols]))
    n = n_users + n_items
    return torch.sparse_coo_tensor(idx, torch.from_numpy(val).float(), (n, n),
                                   check_invariants=False).coalesce()


class LightGCN:
    """Embeddings E0 (N+M, r); E = mean(E0, A E0, ..., A^K E0); score = <e_u, e_i>."""

    name = "LightGCN"

    def __init__(
        self, dim: int = 32, layers: int = 3, lr: float = 1e-3, epochs: int = 50,
        batch: int = 2048, weight_decay: float = 1e-4, init_std: float = 0.1, seed: int = 0,
    ) -> None:
        self.dim, self.layers, self.lr, self.epochs = dim, layers, lr, epochs
        self.batch, self.weight_decay = batch, weight_decay
        self.init_std, self.seed = init_std, seed
        self.n_users = 0
        self.final: Tensor | None = None

    def _propagate(self, adj: Tensor, emb: Tensor) -> Tensor:
        out, layer = emb, emb
        for _ in range(self.layers):
            layer = torch.sparse.mm(adj, layer)
            out = out + layer
        return out / (self.layers + 1)

    def fit(
        self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
        on_epoch: Callable[[int], None] | None = None,
    ) -> "LightGCN":
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.n_users = n_users
        adj = normalised_adjacency(users, items, n_users, n_items)
        emb = torch.nn.Parameter(torch.randn(n_users + n_items, self.dim) * self.init_std)
        opt = torch.optim.Adam([emb], lr=self.lr)
        pairs = PairSet(users, items, n_items)
        for epoch in range(1, self.epochs + 1):
            order = rng.permutation(users.size)
            for lo in range(0, users.size, self.batch):
                # propagate, sample negatives, BPR step with L2 on the batch's E0 rows
                idx = order[lo : lo + self.batch]
                u = torch.from_numpy(users[idx])
                pos = torch.from_numpy(items[idx]) + n_users
                neg = torch.from_numpy(sample_negatives(rng, users[idx], pairs)[:, 0]) + n_users
                final = self._propagate(adj, emb)
                s_pos = (final[u] * final[pos]).sum(-1)
                s_neg = (final[u] * final[neg]).sum(-1)
                reg = (emb[u].square().sum() + emb[pos].square().sum()
                       + emb[neg].square().sum()) / (2 * idx.size)
                loss = -torch.nn.functional.logsigmoid(s_pos - s_neg).mean()
                loss = loss + self.weight_decay * reg
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                self.final = self._propagate(adj, emb)
            if on_epoch is not None:
                on_epoch(epoch)
        return self

    @torch.no_grad()
    def score(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """users (U,), candidates (U, C) -> (U, C) inner products."""
        assert self.final is not None, "fit() first"
        e_u = self.final[torch.from_numpy(users)]  # U x r
        e_i = self.final[torch.from_numpy(candidates) + self.n_users]  # U x C x r
        return (e_i * e_u[:, None, :]).sum(-1).numpy()
