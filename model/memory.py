"""Key-value memory: read attention (Eq. 1-3), market aggregation (Eq. 15-19), write (Eq. 20)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def read_attention(users: Tensor, keys: Tensor, temperature: float = 1.0) -> Tensor:
    """Softmax over negative Euclidean distances to the key slots (Eq. 1-2).

    users: (B, r), keys: (L, r) -> (B, L), rows sum to one. A temperature T != 1
    (ours, not the paper's) gives softmax(sim / T): T < 1 sharpens the attention.
    """
    sim = -torch.cdist(users, keys)  # B x L
    if temperature != 1.0:
        sim = sim / temperature
    return torch.softmax(sim, dim=-1)


def read(attention: Tensor, values: Tensor) -> Tensor:
    """Memory-enhanced user vectors p = sum_i w_i M^v(i) (Eq. 3). (B, L) x (L, r) -> (B, r)."""
    return attention @ values


def squared_distances(q: Tensor, items: Tensor, item_norms: Tensor) -> Tensor:
    """||q_b - v_m||^2 for every pair by one matrix product: (B, r), (M, r), (M,) -> (B, M).

    For ranking many items at once; `item_norms` is (items * items).sum(1), computed once.
    """
    d2 = torch.addmm(item_norms, q, items.T, alpha=-2.0)
    return d2.add_((q * q).sum(dim=1, keepdim=True))


def nearest(
    q: Tensor,
    items: Tensor,
    item_norms: Tensor,
    k: int,
    block: tuple[int, int],
    seen: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """The k items nearest to each query, exactly: squared distances (U, k), ascending,
    and item rows (U, k), for q (U, r), items (M, r), item_norms (M,).

    `block` = (queries, items) scored at a time, one matrix product each; the item
    blocks' top-k are merged. ||q||^2 does not change a row's order, so it is added to the
    k kept only. `seen` = (query row, item row) pairs to leave out (distance inf).
    """
    n, m = q.shape[0], items.shape[0]
    k = min(k, m)
    step_q, step_m = block
    out_d2, out_idx = [], []
    for lo in range(0, n, step_q):
        qb = q[lo : lo + step_q]
        if seen is not None:
            mine = (seen[0] >= lo) & (seen[0] < lo + step_q)
            seen_rows, seen_items = seen[0][mine] - lo, seen[1][mine]
        best, best_idx = None, None
        for start in range(0, m, step_m):
            stop = min(start + step_m, m)
            d2 = torch.addmm(item_norms[start:stop], qb, items[start:stop].T, alpha=-2.0)
            if seen is not None:
                inside = (seen_items >= start) & (seen_items < stop)
                d2[seen_rows[inside], seen_items[inside] - start] = math.inf
            part, idx = torch.topk(d2, min(k, stop - start), dim=1, largest=False)
            idx += start
            if best is not None:
                part, pick = torch.topk(torch.cat([best, part], 1), k, dim=1, largest=False)
                idx = torch.cat([best_idx, idx], 1).gather(1, pick)
            best, best_idx = part, idx
        out_d2.append((best + (qb * qb).sum(1, keepdim=True)).clamp_(min=0.0))
        out_idx.append(best_idx)
    if not out_idx:
        empty = torch.empty(0, k, device=q.device, dtype=q.dtype)
        return empty, empty.long()
    return torch.cat(out_d2), torch.cat(out_idx)


def distance(p: Tensor, v: Tensor) -> Tensor:
    """Euclidean distance d(u, v) = ||p - v|| (Eq. 4), broadcast over leading dimensions."""
    return torch.linalg.vector_norm(p - v, dim=-1)


class MemoryWriter(nn.Module):
    """Erase/add gates of Eq. 8-11 and 20, fed with a market vector."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.erase = nn.Linear(dim, dim)
        self.add = nn.Linear(dim, dim)

    def forward(self, values: Tensor, market: Tensor, market_attention: Tensor) -> Tensor:
        """values: (L, r), market: (r,), market_attention: (L,) -> new values (L, r)."""
        e = torch.sigmoid(self.erase(market))  # r
        a = torch.tanh(self.add(market))  # r
        w = market_attention.unsqueeze(-1)  # L x 1
        return values * (1 - w * e) + w * a


class ConvAggregator(nn.Module):
    """One 1-D kernel over window positions plus a bias (Eq. 15-16).

    The kernel is aligned to the most recent interaction: a partial window of n
    interactions uses the last n weights. It starts as a mean over the window (1/H),
    an initialisation of ours: with N(0, 0.01^2) weights the market vector of a fresh
    model would be ~zero and the first writes would be pure noise.
    """

    def __init__(self, window: int) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.full((window,), 1.0 / window))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, items: Tensor, attention: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """items: (n, r), attention: (n, L), values unused -> market (r,), market attention (L,)."""
        n = items.shape[0]
        k = self.kernel[-n:]  # n, newest interaction last
        market = self.bias + k @ items  # r
        market_attention = self.bias + k @ attention  # L
        return market, market_attention


class AttnAggregator(nn.Module):
    """Value-memory guided multi-head attention over the window's items (Eq. 17-19).

    Each slot i is a head: logits w_1 . ReLU(v_h * M^v(i)) + b_1, softmax over the
    window's interactions, then the heads are averaged.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, items: Tensor, attention: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """items (n, r), attention (n, L), values (L, r) -> market (r,), market attention (L,)."""
        hidden = torch.relu(values.unsqueeze(1) * items.unsqueeze(0))  # L x n x r
        logits = self.score(hidden).squeeze(-1)  # L x n
        alpha = torch.softmax(logits, dim=-1)  # L x n, each slot's head sums to one
        mean_alpha = alpha.mean(dim=0)  # n
        market = mean_alpha @ items  # r
        market_attention = mean_alpha @ attention  # L
        return market, market_attention


def make_aggregator(kind: str, dim: int, window: int) -> nn.Module:
    if kind == "conv":
        return ConvAggregator(window)
    if kind == "attn":
        return AttnAggregator(dim)
    raise ValueError(f"unknown aggregator {kind!r}; expected 'attn' or 'conv'")
