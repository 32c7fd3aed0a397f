"""Tests for model.history: the packed-key set against a Python set."""

from __future__ import annotations

import random

import pytest
import torch

import model.history as history_module
from model.history import InteractionHistory


def random_pairs(rng: random.Random, n: int, users: int, items: int) -> list[tuple[int, int]]:
    return [(rng.randrange(users), rng.randrange(items)) for _ in range(n)]


def add(history: InteractionHistory, pairs: list[tuple[int, int]]) -> None:
    history.add(torch.tensor([u for u, _ in pairs]), torch.tensor([i for _, i in pairs]))


@pytest.mark.parametrize("merge_min", [65_536, 500])  # one run only; merges on the way
def test_contains_and_items_of_match_a_python_set(merge_min, monkeypatch) -> None:
    monkeypatch.setattr(history_module, "_MERGE_MIN", merge_min)
    rng = random.Random(0)
    history, expected = InteractionHistory(), set()
    users, items = 50, 3000  # item ids past 2^11 and a user id near 2^31 below
    for _ in range(4):  # several adds, with repeats inside and across them
        pairs = random_pairs(rng, 400, users, items) + [(2**31 - 2, 2**31 - 3)]
        add(history, pairs)
        expected |= set(pairs)
        assert len(history) == len(expected)

    queries = random_pairs(rng, 2000, users + 5, items) + list(expected)[:500]
    qu = torch.tensor([u for u, _ in queries])
    qi = torch.tensor([i for _, i in queries])
    got = history.contains(qu, qi).tolist()
    assert got == [q in expected for q in queries]
    assert any(got) and not all(got)

    # broadcasting: one user against a row of items
    row = torch.arange(items)
    mask = history.contains(torch.tensor([[7]]), row[None, :])
    assert mask.shape == (1, items)
    assert set(row[mask[0]].tolist()) == {i for u, i in expected if u == 7}

    asked = torch.tensor([3, 51, 7, 3, 2**31 - 2, 0])  # 51 has no items; 3 asked twice
    rows, seen = history.items_of(asked)
    by_row: dict[int, list[int]] = {k: [] for k in range(asked.numel())}
    for r, i in zip(rows.tolist(), seen.tolist()):
        by_row[r].append(i)
    for r, user in enumerate(asked.tolist()):
        assert sorted(by_row[r]) == sorted(i for u, i in expected if u == user)
        assert len(by_row[r]) == len(set(by_row[r]))

    # as one run (what a checkpoint stores): sorted, distinct, the same set
    assert history.keys.tolist() == sorted(u << 32 | i for u, i in expected)
    assert history.contains(qu, qi).tolist() == got


def test_empty_history() -> None:
    history = InteractionHistory()
    assert len(history) == 0
    assert not history.contains(torch.tensor([0, 1]), torch.tensor([0, 1])).any()
    rows, items = history.items_of(torch.tensor([0, 5]))
    assert rows.numel() == 0 and items.numel() == 0
