"""The offline protocol: day split, candidates, HR@K over interactions, NDCG@K over users."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from model.evaluation import (Candidates, Part, Split, make_candidates, metrics, ranks,
                              split_by_day)

DAY = 86_400.0


def _cands(positive: list[list[bool]], counts: list[list[int]]) -> Candidates:
    pos = np.array(positive)
    return Candidates(np.arange(pos.shape[0]), np.zeros(pos.shape, np.int64), pos,
                      np.array(counts))


def test_ndcg_uses_ideal_dcg_over_the_users_own_test_items() -> None:
    # one user, three test items ranked 0, 2 and 5 among six candidates
    scores = np.array([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    pos = [[True, False, True, False, False, True]]
    c = _cands(pos, [[1, 0, 1, 0, 0, 1]])
    out = metrics(ranks(scores, c.positive), c, (1, 3, 10))
    assert out["NDCG@1"] == pytest.approx(1.0)
    ideal3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert out["NDCG@3"] == pytest.approx((1 + 1 / math.log2(4)) / ideal3)
    dcg10 = 1 + 1 / math.log2(4) + 1 / math.log2(7)
    assert out["NDCG@10"] == pytest.approx(dcg10 / ideal3)
    assert out["HR@1"] == pytest.approx(1 / 3)
    assert out["HR@3"] == pytest.approx(2 / 3)


def test_ties_in_scores_do_not_favour_the_positive() -> None:
    scores = np.zeros((1, 5))
    c = _cands([[True, False, False, False, False]], [[1, 0, 0, 0, 0]])
    r = ranks(scores, c.positive)
    assert r[0, 0] == 4  # after all four tied negatives
    out = metrics(r, c, (1, 3, 10))
    assert out["HR@1"] == 0.0 and out["HR@3"] == 0.0 and out["HR@10"] == 1.0
    # a positive that strictly beats a tie group still ranks first
    scores = np.array([[1.0, 0.0, 0.0, 0.0, 0.0]])
    assert ranks(scores, c.positive)[0, 0] == 0


def test_hr_counts_interactions_while_ndcg_averages_users() -> None:
    # user 0: one item bought 3 times, ranked first; user 1: one item bought once, ranked last
    scores = np.array([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0]])
    c = _cands([[True, False, False], [False, False, True]], [[3, 0, 0], [0, 0, 1]])
    out = metrics(ranks(scores, c.positive), c, (1,))
    assert out["HR@1"] == pytest.approx(3 / 4)
    assert out["NDCG@1"] == pytest.approx(1 / 2)


def _log(rows: list[tuple[str, str, float]]) -> pa.Table:
    users, items, days = zip(*rows)
    return pa.table({"user_id": list(users), "item_id": list(items),
                     "timestamp": [d * DAY + 3600.0 for d in days]})


def test_split_by_day_counts_and_drops_unseen_users_and_items() -> None:
    rows = [("a", "x", 0), ("a", "y", 0), ("b", "x", 1), ("c", "z", 1),  # train
            ("a", "z", 2), ("d", "x", 2),  # validation: d is unseen
            ("a", "x", 3), ("b", "y", 3), ("b", "w", 3), ("e", "x", 3)]  # test: w, e unseen
    s = split_by_day(_log(rows))
    assert (s.n_users, s.n_items, s.train_users.size) == (3, 3, 4)
    assert s.valid.users.size == 1 and s.valid.dropped == 1
    assert s.test.users.size == 2 and s.test.dropped == 2
    assert s.days == {"train_first": "1970-01-01", "train_last": "1970-01-02",
                      "valid": "1970-01-03", "test": "1970-01-04"}
    # an explicit test day moves the validation day with it
    s2 = split_by_day(_log(rows), test_day="1970-01-03")
    assert s2.train_users.size == 2  # day 0 only: a-x, a-y
    assert s2.test.users.size == 0 and s2.test.dropped == 2  # z and d are unseen by then


def test_candidates_hold_the_test_items_and_unseen_negatives_with_a_fixed_seed() -> None:
    rng = np.random.default_rng(0)
    tu, ti = rng.integers(0, 20, 500), rng.integers(0, 300, 500)
    test = Part(np.array([1, 1, 1, 2]), np.array([5, 5, 7, 9]))
    s = Split(tu, ti, test, test, 20, 300)
    a, b = make_candidates(s, test, 50, seed=3), make_candidates(s, test, 50, seed=3)
    assert np.array_equal(a.items, b.items) and a.items.shape == (2, 50)
    assert a.counts[0].tolist()[:2] == [2, 1] and a.positive.sum() == 3
    for row, u in enumerate(a.users):
        negatives = a.items[row][~a.positive[row]]
        assert np.unique(negatives).size == negatives.size
        assert not set(negatives.tolist()) & set(ti[tu == u].tolist())
    full = make_candidates(s, test, None)
    assert full.items.shape == (2, 300) and full.positive.sum() == 3


def test_online_retail_month_matches_the_measured_split() -> None:
    from streams.datasets import load_dataset

    table = load_dataset("online-retail-uci", since="2011-11-01", until="2011-12-09")
    c = split_by_day(table, test_day="2011-12-08").counts()
    assert (c["train_rows"], c["train_users"], c["train_items"]) == (76_533, 1_850, 2_753)
    assert (c["test_interactions"], c["test_users"]) == (1_918, 75)
