"""Embedding tables that grow while training, keeping learned rows and optimiser state."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def grown_capacity(current: int, needed: int, minimum: int = 1024) -> int:
    """Capacity after growth: at least `needed`, growing by 1.5x to amortise copies."""
    if needed <= current:
        return current
    return max(needed, minimum, int(current * 1.5) + 1)


def grow_rows(
    module: nn.Module,
    name: str,
    rows: int,
    optimizer: Any,
    std: float,
    generator: torch.Generator | None = None,
) -> nn.Parameter:
    """Replace parameter `module.<name>` (n, r) by one with `rows` rows.

    Old rows are copied unchanged; new rows are drawn from N(0, std^2). If an
    optimiser (a torch one or a `model.optim.NetAdam`) holds the parameter, it is
    re-pointed at the new one and its per-row state (Adam's moments) is padded with
    zeros; scalar state such as Adam's step count is kept.
    """
    old: nn.Parameter = getattr(module, name)
    n, r = old.shape
    if rows <= n:
        return old
    with torch.no_grad():
        fresh = torch.empty(rows - n, r, device=old.device, dtype=old.dtype)
        fresh.normal_(0.0, std, generator=generator)
        new = nn.Parameter(torch.cat([old.detach(), fresh], dim=0))
    setattr(module, name, new)
    if optimizer is not None:
        _repoint_optimizer(optimizer, old, new)
    return new


def _repoint_optimizer(optimizer: Any, old: Tensor, new: Tensor) -> None:
    if hasattr(optimizer, "holder"):  # a model.optim.NetAdam
        optimizer = optimizer.holder(old)
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            if p is old:
                group["params"][i] = new
    state = optimizer.state.pop(old, None)
    if not state:
        return
    grown = {}
    for key, value in state.items():
        if torch.is_tensor(value) and value.shape == old.shape:
            pad = torch.zeros(
                new.shape[0] - old.shape[0], *old.shape[1:], dtype=value.dtype, device=value.device
            )
            grown[key] = torch.cat([value, pad], dim=0)
        else:
            grown[key] = value
    optimizer.state[new] = grown
