"""Hyper-parameters of MB-NMRN. Defaults are the paper's Table 3."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

AGGREGATORS = ("attn", "conv")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the model's shapes and its training rule.

    Dimension letters used in shape comments across `model/`:
    H window size, r embedding size, L memory slots, J candidate negatives,
    C evaluation candidates, N users, M items, U distinct users of a window.
    """

    dim: int = 32  # r
    slots: int = 64  # L
    candidates: int = 100  # J, candidate negatives per interaction for the generator
    margin: float = 5.0  # q, hinge margin
    window: int = 2048  # H, interactions per window (memory write period)
    lr: float = 1e-3  # Adam, both discriminator and generator
    init_std: float = 0.01  # N(0, 0.01^2) for every parameter but the conv kernel
    aggregator: str = "attn"  # market vector aggregator: "attn" (Eq. 17-19) or "conv" (Eq. 15-16)
    use_generator: bool = True  # False: one uniform candidate (the paper's Fig. 3 set-up)
    reward_baseline: bool = False  # subtract the mean reward in REINFORCE (paper: none)
    generator_hidden: int = 32  # width of the generator's MLP towers
    # ---- options of ours, not the paper's (defaults keep the paper's reading) ----
    steps_per_window: int = 1  # D/G optimiser steps per window, fresh negatives each step
    user_init_std: float | None = None  # std of D's user rows A (None: init_std)
    key_init_std: float | None = None  # std of the key memory M^k (None: init_std)
    read_temperature: float = 1.0  # read attention softmax(-||u - M^k_i|| / T) (paper: T = 1)
    user_residual: bool = False  # p' = p + u (deviates from Eq. 3; some NMRN implementations)
    lazy_adam: bool = False  # Adam on the embedding rows a window touches only (SparseAdam)

    def __post_init__(self) -> None:
        if self.aggregator not in AGGREGATORS:
            raise ValueError(f"aggregator must be one of {AGGREGATORS}, got {self.aggregator!r}")
        for name in ("dim", "slots", "candidates", "window", "generator_hidden",
                     "steps_per_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.margin <= 0:
            raise ValueError(f"margin must be > 0, got {self.margin}")
        if self.lr <= 0 or self.init_std <= 0:
            raise ValueError("lr and init_std must be > 0")
        for name in ("user_init_std", "key_init_std"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")
        if self.read_temperature <= 0:
            raise ValueError(f"read_temperature must be > 0, got {self.read_temperature}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)
