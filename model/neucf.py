"""NeuCF (He et al. 2017): GMF and an MLP fused by one output layer (NeuMF)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from model.negatives import PairSet, sample_negatives


class NeuMF(nn.Module):
    """Separate GMF and MLP embeddings; the output layer sees [GMF product, MLP top]."""

    def __init__(self, n_users: int, n_items: int, dim: int, layers: tuple[int, ...]) -> None:
        super().__init__()
        self.gmf_u, self.gmf_i = nn.Embedding(n_users, dim), nn.Embedding(n_items, dim)
        self.mlp_u = nn.Embedding(n_users, layers[0] // 2)
        self.mlp_i = nn.Embedding(n_items, layers[0] // 2)
        blocks: list[nn.Module] = []
        for a, b in zip(layers[:-1], layers[1:]):
            blocks += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*blocks)
        self.out = nn.Linear(dim + layers[-1], 1)

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        """Logits for user rows and item rows of the same shape."""
        gmf = self.gmf_u(users) * self.gmf_i(items)  # ... x r
        mlp = self.mlp(torch.cat([self.mlp_u(users), self.mlp_i(items)], dim=-1))
        return self.out(torch.cat([gmf, mlp], dim=-1)).squeeze(-1)


class NeuCF:
    """NeuMF trained with BCE on each interaction and `negatives` sampled non-interactions
    (loss="bce", the paper of He et al.) or with BPR on one negative (loss="bpr")."""

    name = "NeuCF"

    def __init__(
        self, dim: int = 32, layers: tuple[int, ...] = (64, 32, 16), lr: float = 1e-3,
        epochs: int = 10, batch: int = 1024, negatives: int = 4, loss: str = "bce",
        init_std: float = 0.01, seed: int = 0,
    ) -> None:
        if loss not in ("bce", "bpr"):
            raise ValueError(f"loss must be 'bce' or 'bpr', got {loss!r}")
        self.dim, self.layers, self.lr, self.epochs = dim, layers, lr, epochs
        self.batch, self.negatives, self.loss, self.init_std = batch, negatives, loss, init_std
        self.seed = seed
        self.net: NeuMF | None = None

    def fit(
        self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
        on_epoch: Callable[[int], None] | None = None,
    ) -> "NeuCF":
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.net = NeuMF(n_users, n_items, self.dim, self.layers)
        for emb in (self.net.gmf_u, self.net.gmf_i, self.net.mlp_u, self.net.mlp_i):
            nn.init.normal_(emb.weight, 0.0, self.init_std)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        pairs = PairSet(users, items, n_items)
        k = self.negatives if self.loss == "bce" else 1
        for epoch in range(1, self.epochs + 1):
            order = rng.permutation(users.size)
            for lo in range(0, users.size, self.batch):
                # sample negatives, then one Adam step
                idx = order[lo : lo + self.batch]
                u = torch.from_numpy(users[idx])
                pos = torch.from_numpy(items[idx])
                neg = torch.from_numpy(sample_negatives(rng, users[idx], pairs, k))  # b x k
                s_pos = self.net(u, pos)  # b
                s_neg = self.net(u[:, None].expand_as(neg), neg)  # b x k
                if self.loss == "bce":
                    bce = nn.functional.binary_cross_entropy_with_logits
                    loss = bce(s_pos, torch.ones_like(s_pos)) * (1 / (k + 1)) + bce(
                        s_neg, torch.zeros_like(s_neg)) * (k / (k + 1))
                else:
                    loss = -nn.functional.logsigmoid(s_pos - s_neg[:, 0]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if on_epoch is not None:
                on_epoch(epoch)
        return self

    @torch.no_grad()
    def score(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """users (U,), candidates (U, C) -> (U, C) logits."""
        assert self.net is not None, "fit() first"
        u = torch.from_numpy(users)[:, None].expand(candidates.shape)
        return self.net(u, torch.from_numpy(candidates)).numpy()
