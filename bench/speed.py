"""Training speed (the paper's Fig. 3): NMRN against MB-NMRN-conv/attn at several H.

Negatives are uniform (generator off), as in the paper. Time per epoch is measured on the
whole training stream for MB-NMRN; NMRN's serial loop is timed on `nmrn_interactions`
interactions and scaled to the stream (stated in the output). Time to plateau: epochs are
trained until the validation hinge loss (uniform negatives, fixed seed) improves by less
than `tol` (relative); the time of the epochs up to the best one is reported.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from model.evaluation import Split
from model.mbnmrn import MBNMRN
from model.negatives import PairSet, sample_negatives
from model.nmrn import NMRN


def _plateau(losses: list[float], tol: float) -> int:
    """1-based epoch after which the loss stopped improving by more than tol (relative)."""
    for e in range(1, len(losses)):
        if losses[e] > losses[e - 1] * (1 - tol):
            return e
    return len(losses)


def run_speed(
    split: Split, windows: tuple[int, ...] = (256, 512, 1024, 2048), max_epochs: int = 8,
    nmrn_interactions: int = 5000, tol: float = 0.01, seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per (method, H): seconds per epoch, epochs and seconds to plateau, events/s,
    and both times as ratios to NMRN."""
    n = split.train_users.size
    rng = np.random.default_rng(seed)
    pairs = PairSet(split.train_users, split.train_items, split.n_items)
    v_neg = sample_negatives(rng, split.valid.users, pairs)[:, 0]
    rows: list[dict[str, Any]] = []

    # NMRN: one serial pass over the first interactions, scaled to the stream
    m = min(n, nmrn_interactions)
    start = time.perf_counter()
    NMRN(seed=seed, max_interactions=m).fit(split.train_users, split.train_items,
                                            split.n_users, split.n_items)
    per_event = (time.perf_counter() - start) / m
    nmrn_epoch = per_event * n
    rows.append({"method": "NMRN", "H": 1, "epoch_s": nmrn_epoch, "plateau_epochs": 1,
                 "plateau_s": nmrn_epoch, "events_per_s": 1 / per_event,
                 "note": f"timed on {m} of {n} interactions; plateau taken as 1 epoch "
                         "(lower bound)"})

    for agg in ("conv", "attn"):
        for h in windows:
            model = MBNMRN(agg, window=h, use_generator=False, epochs=max_epochs, seed=seed)
            losses: list[float] = []
            stamps: list[float] = []
            start = time.perf_counter()

            def on_epoch(epoch: int) -> None:
                stamps.append(time.perf_counter() - start)
                losses.append(model.hinge_loss(split.valid.users, split.valid.items, v_neg))

            model.fit(split.train_users, split.train_items, split.n_users, split.n_items,
                      on_epoch=on_epoch)
            # the stamps include the (cheap) validation-loss checks
            epoch_s = float(np.median(np.diff([0.0, *stamps])))
            best = _plateau(losses, tol)
            rows.append({"method": f"MB-NMRN-{agg}", "H": h, "epoch_s": epoch_s,
                         "plateau_epochs": best, "plateau_s": stamps[best - 1],
                         "events_per_s": n / epoch_s, "note": ""})
    for r in rows:
        r["epoch_ratio_to_nmrn"] = nmrn_epoch / r["epoch_s"]
        r["plateau_ratio_to_nmrn"] = nmrn_epoch / r["plateau_s"]
    return rows
