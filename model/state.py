"""A trainer's whole state as named tensors plus JSON metadata, and back.

Nothing here pickles: tensors are plain arrays, metadata is JSON-able, so a store
can persist them without ever executing code on load.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from model.config import ModelConfig
from model.optim import NetAdam
from model.trainer import WindowTrainer

STATE_FORMAT = 1


def _optimizer_tensors(prefix: str, net: nn.Module, opt: NetAdam) -> dict[str, Tensor]:
    out = {}
    state = opt.state
    for name, p in net.named_parameters():
        for key, value in state.get(p, {}).items():
            out[f"{prefix}/{name}/{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def trainer_state(trainer: WindowTrainer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Everything needed to resume `trainer` bit for bit: (tensors, metadata)."""
    tensors: dict[str, Tensor] = {}
    for prefix, net in (("d", trainer.d), ("g", trainer.g)):
        for name, t in net.state_dict().items():
            tensors[f"{prefix}/{name}"] = t
    tensors.update(_optimizer_tensors("opt_d", trainer.d, trainer.opt_d))
    tensors.update(_optimizer_tensors("opt_g", trainer.g, trainer.opt_g))
    tensors["memory/base_users"] = trainer.base_users
    tensors["memory/base_items"] = trainer.base_items
    if trainer.base_values is not None:
        tensors["memory/base_values"] = trainer.base_values
    tensors["history/keys"] = trainer.history.keys
    meta = {
        "format": STATE_FORMAT,
        "config": trainer.config.to_dict(),
        "seed": trainer.seed,
        "windows": trainer.windows,
        "n_users": trainer.n_users,
        "n_items": trainer.n_items,
    }
    # a copy even on CPU: parameters and Adam state change in place as training goes on
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}, meta


def _load_optimizer(prefix: str, net: nn.Module, opt: NetAdam, tensors: dict) -> None:
    params = dict(net.named_parameters())
    for inner in opt.optimizers:
        inner.state.clear()
    for key, value in tensors.items():
        if not key.startswith(prefix + "/"):
            continue
        name, field = key[len(prefix) + 1 :].rsplit("/", 1)
        if name not in params:
            raise ValueError(f"checkpoint has optimiser state for unknown parameter {name!r}")
        p = params[name]
        holder = opt.holder(p)
        # a copy: Adam updates its state in place, so sharing it would tie two trainers
        if field != "step":
            value = value.to(p.device, copy=True)
        elif isinstance(holder, torch.optim.SparseAdam):
            value = int(value)  # SparseAdam counts steps in a Python int
        else:
            value = value.clone()
        holder.state[p][field] = value


def restore_trainer(
    tensors: dict[str, Tensor], meta: dict[str, Any], device: str | torch.device = "cpu"
) -> WindowTrainer:
    """Rebuild a trainer from `trainer_state` output."""
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(f"unsupported trainer state format {meta.get('format')!r}")
    trainer = WindowTrainer(ModelConfig.from_dict(meta["config"]), meta["seed"], device)
    users_cap = tensors["d/users"].shape[0]
    items_cap = tensors["d/items"].shape[0]
    # Tables are sized from the checkpoint before the optimisers see them.
    for net in (trainer.d, trainer.g):
        net.users = nn.Parameter(torch.empty(users_cap, trainer.config.dim, device=trainer.device))
        net.items = nn.Parameter(torch.empty(items_cap, trainer.config.dim, device=trainer.device))
    for prefix, net in (("d", trainer.d), ("g", trainer.g)):
        own = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + "/")}
        net.load_state_dict(own, strict=True)
    lazy = trainer.config.lazy_adam
    trainer.opt_d = NetAdam(trainer.d, trainer.config.lr, lazy=lazy)
    trainer.opt_g = NetAdam(trainer.g, trainer.config.lr, lazy=lazy)
    _load_optimizer("opt_d", trainer.d, trainer.opt_d, tensors)
    _load_optimizer("opt_g", trainer.g, trainer.opt_g, tensors)
    dev = trainer.device
    trainer.base_users = tensors["memory/base_users"].to(dev, torch.long)
    trainer.base_items = tensors["memory/base_items"].to(dev, torch.long)
    base = tensors.get("memory/base_values")
    trainer.base_values = base.to(dev) if base is not None else None
    trainer.history.keys = tensors["history/keys"].to(dev, torch.long)
    trainer.windows = int(meta["windows"])
    trainer.n_users = int(meta["n_users"])
    trainer.n_items = int(meta["n_items"])
    return trainer
