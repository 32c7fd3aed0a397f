"""The discriminator (a key-value memory network) and the generator of MB-NMRN."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.functional import embedding  # not t[idx]: its backward sums in a fixed order

from model.config import ModelConfig
from model.memory import MemoryWriter, distance, make_aggregator, read, read_attention


def _init_normal(module: nn.Module, std: float, generator: torch.Generator) -> None:
    """N(0, std^2) for every parameter except the conv kernel and bias (see ConvAggregator).

    The discriminator's key memory uses `key_init_std` when set (users are grown later,
    see `WindowTrainer.grow`)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            s = std
            if isinstance(module, Discriminator):
                if name.startswith("aggregator.") and module.config.aggregator == "conv":
                    continue
                if name == "keys" and module.config.key_init_std is not None:
                    s = module.config.key_init_std
            p.normal_(0.0, s, generator=generator)


def _rows(index: Tensor, table: Tensor, config: ModelConfig) -> Tensor:
    """Rows of an embedding table; with `lazy_adam` its gradient is row-sparse (only the
    rows looked up), for `torch.optim.SparseAdam`."""
    return embedding(index, table, sparse=config.lazy_adam)


class Discriminator(nn.Module):
    """User/item embeddings, key memory, memory writer and market aggregator (Eq. 1-4, 15-20).

    The value memory itself is state, not a parameter: the trainer owns it and passes
    it in. `initial_values` is M^v_0, the memory before the first write.
    """

    def __init__(
        self, config: ModelConfig, users: int, items: int, generator: torch.Generator
    ) -> None:
        super().__init__()
        r, slots = config.dim, config.slots
        self.config = config
        self.users = nn.Parameter(torch.empty(users, r))  # A, N x r
        self.items = nn.Parameter(torch.empty(items, r))  # B, M x r
        self.keys = nn.Parameter(torch.empty(slots, r))  # M^k, L x r
        self.writer = MemoryWriter(r)
        self.aggregator = make_aggregator(config.aggregator, r, config.window)
        self.register_buffer("initial_values", torch.empty(slots, r))  # M^v_0, L x r
        _init_normal(self, config.init_std, generator)
        self.initial_values.normal_(0.0, config.init_std, generator=generator)

    def read_users(self, users: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Memory-enhanced vectors p (B, r) and read attention (B, L) for user rows (B,)."""
        u = _rows(users, self.users, self.config)  # B x r
        attention = read_attention(u, self.keys, self.config.read_temperature)  # B x L
        p = read(attention, values)
        if self.config.user_residual:  # ours: p' = p + u, not Eq. 3
            p = p + u
        return p, attention

    def write(self, values: Tensor, users: Tensor, items: Tensor) -> Tensor:
        """One batch-wise write of a window's interactions into the value memory (Eq. 15-20)."""
        attention = read_attention(
            _rows(users, self.users, self.config), self.keys, self.config.read_temperature
        )  # n x L
        items_v = _rows(items, self.items, self.config)
        market, market_attention = self.aggregator(items_v, attention, values)
        return self.writer(values, market, market_attention)

    def distances(self, p: Tensor, items: Tensor) -> Tensor:
        """d(u, v) for p (B, r) and item rows (B,) or (B, J) -> (B,) or (B, J)."""
        v = _rows(items, self.items, self.config)
        if items.dim() == 2:
            p = p.unsqueeze(1)
        return distance(p, v)


_MIN_SQUARED = 1e-12  # d^2 floor: rounding can make it <= 0, where sqrt has no gradient


def _distinct(index: Tensor, rows: int) -> tuple[Tensor, Tensor]:
    """torch.unique(index, return_inverse=True) for row ids below `rows`, by counting
    instead of sorting: (sorted distinct ids, where each entry of `index` is in them)."""
    present = torch.bincount(index.reshape(-1), minlength=rows) > 0
    distinct = present.nonzero().squeeze(1)
    position = torch.cumsum(present, 0) - 1
    return distinct, position[index]


class _GatherRows(torch.autograd.Function):
    """table[index] along rows; the backward adds the gradients up with index_add_ (in
    index order on CPU, so reproducible), several times cheaper than the dense
    embedding backward for the H x J candidates of a window."""

    @staticmethod
    def forward(ctx: Any, table: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.rows = table.shape[0]
        return table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[1])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (index,) = ctx.saved_tensors
        out = grad.new_zeros(ctx.rows, grad.shape[-1])
        out.index_add_(0, index.reshape(-1), grad.reshape(-1, grad.shape[-1]))
        return out, None


def _tower(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))


class Generator(nn.Module):
    """Negative sampler: own embeddings E, F, one MLP tower each, distance in tower space."""

    def __init__(
        self, config: ModelConfig, users: int, items: int, generator: torch.Generator
    ) -> None:
        super().__init__()
        r = config.dim
        self.config = config
        self.users = nn.Parameter(torch.empty(users, r))  # E
        self.items = nn.Parameter(torch.empty(items, r))  # F
        self.user_tower = _tower(r, config.generator_hidden)
        self.item_tower = _tower(r, config.generator_hidden)
        _init_normal(self, config.init_std, generator)

    def distances(self, users: Tensor, candidates: Tensor) -> Tensor:
        """d_G for user rows (H,) against candidate rows (H, J) -> (H, J).

        The item tower runs once per distinct candidate (a window's H x J candidates
        repeat items heavily), then its outputs are gathered.
        """
        u = self.user_tower(_rows(users, self.users, self.config))  # H x r
        distinct, where = _distinct(candidates, self.items.shape[0])  # D, (H x J)
        towered = self.item_tower(_rows(distinct, self.items, self.config))  # D x r
        # ||u - v||^2 = ||u||^2 + ||v||^2 - 2 u.v: no H x J x r difference tensor
        v = _GatherRows.apply(towered, where)  # H x J x r
        norms = _GatherRows.apply((towered * towered).sum(1, keepdim=True), where).squeeze(-1)
        dots = torch.bmm(v, u.unsqueeze(-1)).squeeze(-1)  # H x J
        d2 = norms - 2.0 * dots + (u * u).sum(1, keepdim=True)
        return d2.clamp_min(_MIN_SQUARED).sqrt()
