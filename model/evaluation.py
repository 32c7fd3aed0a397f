"""Offline protocol of the paper (Section 5.2): day split, sampled candidates, HR@K, NDCG@K.

Every method is scored through the same `Recommender` contract, on the same split and the
same seeded candidate lists, so the numbers differ only by the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DAY = 86_400.0


class Recommender(Protocol):
    """The one contract of every method: fit on chronological row ids, score candidates.

    `on_epoch(epoch)` is called after each training epoch (1-based), so a caller can
    evaluate on the validation day without retraining; single-pass methods call it once.
    """

    def fit(
        self,
        users: np.ndarray,
        items: np.ndarray,
        n_users: int,
        n_items: int,
        on_epoch: Callable[[int], None] | None = None,
    ) -> "Recommender": ...

    def score(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """users (U,), candidates (U, C) item rows -> scores (U, C), higher is better."""
        ...


@dataclass
class Part:
    """Interactions of one evaluation day, as row ids (only known users and items)."""

    users: np.ndarray  # n
    items: np.ndarray  # n
    dropped: int = 0  # rows whose user or item is unseen in training

    @property
    def n_users(self) -> int:
        return int(np.unique(self.users).size)


@dataclass
class Split:
    """Training stream (chronological row ids), validation and test days, id maps."""

    train_users: np.ndarray
    train_items: np.ndarray
    valid: Part
    test: Part
    n_users: int
    n_items: int
    days: dict[str, str] = field(default_factory=dict)  # role -> ISO date

    def counts(self) -> dict[str, int]:
        return {
            "train_rows": int(self.train_users.size), "train_users": self.n_users,
            "train_items": self.n_items, "valid_interactions": int(self.valid.users.size),
            "valid_users": self.valid.n_users, "test_interactions": int(self.test.users.size),
            "test_users": self.test.n_users, "test_dropped": self.test.dropped,
        }


def day_numbers(timestamps: np.ndarray, utc_offset_hours: float = 0.0) -> np.ndarray:
    """Calendar day of each epoch-second timestamp in the data's local time."""
    return np.floor((timestamps + utc_offset_hours * 3600.0) / DAY).astype(np.int64)


def _iso(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


def split_by_day(
    table: pa.Table, test_day: str | None = None, utc_offset_hours: float = 0.0,
    train_rows: np.ndarray | None = None,
) -> Split:
    """Days before validation train, the day before `test_day` validates, `test_day` tests.

    `test_day` (ISO date) defaults to the last day present. Ids are numbered from the
    training rows; validation/test rows with a user or item unseen in training are dropped.
    `train_rows` (bool, per row) optionally restricts which rows may train (e.g. buy
    events only as targets while all behaviours train is the opposite case: pass None).
    """
    ts = table["timestamp"].to_numpy()
    day = day_numbers(ts, utc_offset_hours)
    present = np.unique(day)
    t_day = int(np.datetime64(test_day, "D").astype(np.int64)) if test_day else int(present[-1])
    earlier = present[present < t_day]
    if t_day not in present or earlier.size < 2:
        raise ValueError(f"test day {test_day} needs itself and two earlier days in the data")
    v_day = int(earlier[-1])
    users = table["user_id"].to_numpy(zero_copy_only=False).astype(str)
    items = table["item_id"].to_numpy(zero_copy_only=False).astype(str)

    # number ids by first appearance in the training stream
    train = day < v_day
    if train_rows is not None:
        train &= train_rows
    u_ids, u_rows = np.unique(users[train], return_inverse=True)
    i_ids, i_rows = np.unique(items[train], return_inverse=True)

    def part(mask: np.ndarray) -> Part:
        ui = np.searchsorted(u_ids, users[mask]).clip(max=len(u_ids) - 1)
        ii = np.searchsorted(i_ids, items[mask]).clip(max=len(i_ids) - 1)
        known = (u_ids[ui] == users[mask]) & (i_ids[ii] == items[mask])
        return Part(ui[known], ii[known], dropped=int((~known).sum()))

    return Split(
        train_users=u_rows.astype(np.int64), train_items=i_rows.astype(np.int64),
        valid=part(day == v_day), test=part(day == t_day),
        n_users=len(u_ids), n_items=len(i_ids),
        days={"train_first": _iso(present[0]), "train_last": _iso(earlier[-2]),
              "valid": _iso(v_day), "test": _iso(t_day)},
    )


def filter_table(table: pa.Table, event_types: list[str] | None) -> pa.Table:
    if not event_types:
        return table
    return table.filter(pc.is_in(table["event_type"], pa.array(event_types)))


@dataclass
class Candidates:
    """Per test user: candidate rows (U, Q), the positives' mask, and the interactions."""

    users: np.ndarray  # U
    items: np.ndarray  # U x Q
    positive: np.ndarray  # U x Q bool
    counts: np.ndarray  # U x Q, test interactions of each candidate (0 for negatives)


def make_candidates(
    split: Split, part: Part, q: int | None = 1000, seed: int = 0
) -> Candidates:
    """The user's test items plus items sampled (seeded) from those the user did not
    interact with in training; q=None ranks the full catalogue (every training item)."""
    rng = np.random.default_rng(seed)
    order = np.argsort(split.train_users, kind="stable")
    bounds = np.searchsorted(split.train_users[order], np.arange(split.n_users + 1))
    test_users = np.unique(part.users)
    pairs = np.unique(part.users * split.n_items + part.items)
    most = int(np.bincount(pairs // split.n_items).max()) if pairs.size else 0
    width = split.n_items if q is None else min(max(q, most), split.n_items)  # Q >= positives
    items = np.zeros((test_users.size, width), np.int64)
    counts = np.zeros((test_users.size, width), np.int64)
    for row, u in enumerate(test_users.tolist()):
        pos, n = np.unique(part.items[part.users == u], return_counts=True)
        if q is None:
            items[row] = np.arange(split.n_items)
            counts[row, pos] = n
            continue
        free = np.ones(split.n_items, bool)
        free[split.train_items[order[bounds[u] : bounds[u + 1]]]] = False
        free[pos] = False
        pool = np.flatnonzero(free)
        k = min(width - pos.size, pool.size)
        neg = rng.choice(pool, size=k, replace=False) if k > 0 else pool[:0]
        row_items = np.concatenate([pos, neg])
        if row_items.size < width:  # tiny catalogues: pad with repeats of negatives
            row_items = np.resize(row_items, width)
        items[row], counts[row, : pos.size] = row_items, n
    return Candidates(test_users, items, counts > 0, counts)


def ranks(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """0-based rank of every candidate (U, Q). Ties are broken against positives: a
    positive ranks after every candidate with an equal score that is not positive."""
    out = np.empty_like(scores, dtype=np.int64)
    for r in range(scores.shape[0]):
        order = np.lexsort((positive[r], -scores[r]))  # by score desc, negatives first
        out[r, order] = np.arange(scores.shape[1])
    return out


def metrics(rank: np.ndarray, cands: Candidates, ks: tuple[int, ...]) -> dict[str, float]:
    """HR@K over test interactions (Eq. 22), NDCG@K over test users (Eq. 23)."""
    out: dict[str, float] = {}
    n_pos = cands.positive.sum(axis=1)
    for k in ks:
        hit = (rank < k) & cands.positive
        out[f"HR@{k}"] = float((hit * cands.counts).sum() / max(cands.counts.sum(), 1))
        dcg = np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0).sum(axis=1)
        ideal = np.array([sum(1.0 / math.log2(i + 2) for i in range(min(k, n))) for n in n_pos])
        out[f"NDCG@{k}"] = float(np.mean(dcg / np.maximum(ideal, 1e-12)))
    return out


def evaluate(
    model: Recommender, cands: Candidates, ks: tuple[int, ...] = (1, 3, 10)
) -> dict[str, float]:
    """Score the candidate lists with `model` (in chunks of users) and return HR@K, NDCG@K."""
    step = max(1, 200_000 // max(cands.items.shape[1], 1))
    scores = np.concatenate([
        np.asarray(model.score(cands.users[lo : lo + step], cands.items[lo : lo + step]),
                   dtype=np.float64) for lo in range(0, cands.users.size, step)
    ]) if cands.users.size else np.zeros(cands.items.shape)
    if scores.shape != cands.items.shape:
        raise ValueError(f"score() returned {scores.shape}, expected {cands.items.shape}")
    return metrics(ranks(scores, cands.positive), cands, ks)
