"""The methods of the paper's Table 4, their tuning grids and the chosen-value builder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from model.evaluation import Recommender
from model.lightgcn import LightGCN
from model.mbnmrn import MBNMRN
from model.neucf import NeuCF
from model.nmrn import NMRN
from model.toppop import TopPop


@dataclass
class Method:
    """A method's constructor, the grid tuned on the validation day, and its epoch cap.

    The number of epochs is tuned too: every grid point trains `max_epochs` and the
    validation NDCG@10 is read after each epoch; the best (point, epoch) wins.
    """

    name: str
    build: Callable[..., Recommender]
    grid: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    max_epochs: int = 1
    seeds: int | None = None  # None: as many as the run's --seeds


def methods(quick: bool = False, nmrn_seeds: int = 1) -> list[Method]:
    """Top-Pop, NeuCF, LightGCN, NMRN, MB-NMRN-conv, MB-NMRN-attn."""
    lrs = [1e-3] if quick else [1e-3, 1e-2]
    gens = [False] if quick else [False, True]
    cap = 2 if quick else None
    return [
        Method("Top-Pop", lambda **kw: TopPop(**kw)),
        Method("NeuCF", lambda **kw: NeuCF(**kw), [{"lr": lr} for lr in lrs], cap or 10),
        Method("LightGCN", lambda **kw: LightGCN(batch=8192, **kw),
               [{"lr": lr} for lr in lrs], cap or 30),
        Method("NMRN", lambda **kw: NMRN(max_interactions=500 if quick else None, **kw),
               [{"lr": 1e-3}], 1, seeds=nmrn_seeds),
        Method("MB-NMRN-conv", lambda **kw: MBNMRN("conv", **kw),
               [{"lr": lr, "use_generator": g} for lr in lrs for g in gens], cap or 8),
        Method("MB-NMRN-attn", lambda **kw: MBNMRN("attn", **kw),
               [{"lr": lr, "use_generator": g} for lr in lrs for g in gens], cap or 8),
    ]
