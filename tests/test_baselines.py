"""Every offline method behind the one contract: conformance on a toy log, and learning."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from model.evaluation import Candidates, Recommender, Split
from model.lightgcn import LightGCN
from model.mbnmrn import MBNMRN
from model.neucf import NeuCF
from model.nmrn import NMRN
from model.toppop import TopPop

SMALL: dict[str, Callable[[int], Recommender]] = {
    "Top-Pop": lambda seed: TopPop(seed=seed),
    "NeuCF": lambda seed: NeuCF(epochs=2, batch=64, seed=seed),
    "LightGCN": lambda seed: LightGCN(epochs=2, batch=64, seed=seed),
    "NMRN": lambda seed: NMRN(epochs=1, candidates=10, seed=seed),
    "MB-NMRN-conv": lambda seed: MBNMRN("conv", window=32, epochs=2, seed=seed),
    "MB-NMRN-attn": lambda seed: MBNMRN("attn", window=32, epochs=2, seed=seed),
    "MB-NMRN-attn-nogen": lambda seed: MBNMRN("attn", window=32, epochs=1,
                                              use_generator=False, seed=seed),
}


Held = tuple[Split, Candidates]


def _toy_log(n: int = 300, users: int = 12, items: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    u = rng.integers(0, users, n)
    i = (u * 3 + rng.integers(0, 5, n)) % items  # each user prefers a band of items
    return u.astype(np.int64), i.astype(np.int64)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_conformance(name: str) -> None:
    """Fit on a toy log; score (U, C); calls on_epoch; same seed gives the same scores."""
    torch.set_num_threads(1)
    users, items = _toy_log()
    cands = np.random.default_rng(2).integers(0, 40, (5, 7))
    who = np.array([0, 3, 3, 7, 11])
    epochs: list[int] = []
    a = SMALL[name](0).fit(users, items, 12, 40, on_epoch=epochs.append)
    assert epochs and epochs == list(range(1, len(epochs) + 1))
    sa = a.score(who, cands)
    assert sa.shape == (5, 7) and np.isfinite(sa).all()
    sb = SMALL[name](0).fit(users, items, 12, 40).score(who, cands)
    np.testing.assert_array_equal(sa, sb)


@pytest.fixture(scope="module")
def taobao_head_split() -> Held:
    """Taobao head, all behaviours, the first 300 users; test day 2017-12-03 (China time).

    Chosen because held-out days there carry signal a learner can find (users come back to
    items they viewed), so "learns" means "beats Top-Pop by a wide margin".
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from model.evaluation import make_candidates, split_by_day
    from streams.datasets import load_dataset

    table = load_dataset("taobao-userbehavior-head")
    users = np.unique(table["user_id"].to_numpy(zero_copy_only=False).astype(str))[:300]
    split = split_by_day(table.filter(pc.is_in(table["user_id"], pa.array(users))),
                         utc_offset_hours=8)
    return split, make_candidates(split, split.test, 1000, seed=0)


def _fit_eval(model: Recommender, split: Split, cands: Candidates) -> dict[str, float]:
    from model.evaluation import evaluate

    torch.set_num_threads(1)
    model.fit(split.train_users, split.train_items, split.n_users, split.n_items)
    return evaluate(model, cands, (10,))


LEARNERS: dict[str, Callable[[], Recommender]] = {
    "NeuCF": lambda: NeuCF(epochs=5, lr=1e-2),
    "LightGCN": lambda: LightGCN(epochs=10, lr=1e-2, batch=8192),
}


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_baseline_beats_top_pop_on_held_out_day(name: str, taobao_head_split: Held) -> None:
    split, cands = taobao_head_split
    pop = _fit_eval(TopPop(), split, cands)
    got = _fit_eval(LEARNERS[name](), split, cands)
    assert got["NDCG@10"] > 2 * pop["NDCG@10"] and got["HR@10"] > 2 * pop["HR@10"]


MEMORY_MODELS: dict[str, Callable[[], Recommender]] = {
    "MB-NMRN-conv": lambda: MBNMRN("conv", epochs=4, use_generator=False),
    "MB-NMRN-attn": lambda: MBNMRN("attn", epochs=8, use_generator=False),
}


@pytest.mark.xfail(strict=True, reason="known: MB-NMRN's user vector p = sum_i w_i M^v(i) is "
                   "nearly user-independent, so it stays near Top-Pop offline "
                   "(bench/results/paper/README.md); strict: a fix makes this fail loudly")
@pytest.mark.parametrize("name", sorted(MEMORY_MODELS))
def test_mb_nmrn_beats_top_pop_on_held_out_day(name: str, taobao_head_split: Held) -> None:
    split, cands = taobao_head_split
    pop = _fit_eval(TopPop(), split, cands)
    got = _fit_eval(MEMORY_MODELS[name](), split, cands)
    assert got["NDCG@10"] > 2 * pop["NDCG@10"] and got["HR@10"] > 2 * pop["HR@10"]
