"""One network's optimiser: Adam, or Adam plus lazy (row-sparse) Adam for its tables."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

TABLES = ("users", "items")  # the embedding tables of both networks


class NetAdam:
    """Adam over a network's parameters, as the paper trains both networks.

    With `lazy`, the embedding tables get `torch.optim.SparseAdam` instead: a window
    updates only the rows it looked up, with their own moments, and untouched rows
    (and their moments) stay as they are. Dense Adam keeps moving every row on old
    momentum, so each step costs the whole table; lazy Adam costs the window's rows.
    """

    def __init__(self, net: nn.Module, lr: float, lazy: bool = False) -> None:
        named = list(net.named_parameters())
        tables = [p for n, p in named if lazy and n in TABLES]
        dense = [p for n, p in named if not (lazy and n in TABLES)]
        self.optimizers: list[torch.optim.Optimizer] = [torch.optim.Adam(dense, lr=lr)]
        if tables:
            self.optimizers.append(torch.optim.SparseAdam(tables, lr=lr))

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    @property
    def state(self) -> dict[Tensor, dict[str, Any]]:
        """Per-parameter state of every optimiser (a merged read-only view)."""
        merged: dict[Tensor, dict[str, Any]] = {}
        for opt in self.optimizers:
            merged.update(opt.state)
        return merged

    def holder(self, p: Tensor) -> torch.optim.Optimizer:
        """The optimiser that updates parameter `p`."""
        for opt in self.optimizers:
            if any(q is p for g in opt.param_groups for q in g["params"]):
                return opt
        raise KeyError("parameter not held by this optimiser")

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()
