"""Tests for model.state and Recommender.state: a restored model continues bit for bit."""

from __future__ import annotations

import json

import pytest
import torch

from model.config import ModelConfig
from model.recommender import Recommender
from model.state import restore_trainer, trainer_state
from model.trainer import WindowTrainer

EVAL = 30  # evaluation candidates
CONFIG = ModelConfig(dim=8, slots=6, candidates=12, window=16, init_std=0.1)


def windows(count: int, seed: int = 20) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random windows; the last ones bring ids past the first 1024 rows, so tables grow."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for w in range(count):
        high = 40 if w < count - 1 else 1500
        users = torch.randint(0, high, (16,), generator=g)
        out.append((users, torch.randint(0, high, (16,), generator=g)))
    return out


def assert_same_trainer(a: WindowTrainer, b: WindowTrainer) -> None:
    for name in ("d", "g"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{name}/{k}"
    for oa, ob, na, nb in ((a.opt_d, b.opt_d, a.d, b.d), (a.opt_g, b.opt_g, a.g, b.g)):
        pa, pb = dict(na.named_parameters()), dict(nb.named_parameters())
        for k in pa:
            assert oa.state[pa[k]].keys() == ob.state[pb[k]].keys(), k
            for field, value in oa.state[pa[k]].items():
                assert torch.equal(value, ob.state[pb[k]][field]), f"{k}/{field}"
    assert torch.equal(a.base_values, b.base_values)
    assert torch.equal(a.base_users, b.base_users) and torch.equal(a.base_items, b.base_items)
    assert torch.equal(a.history.keys, b.history.keys)
    with torch.no_grad():
        assert torch.equal(a.memory(), b.memory())
    assert (a.windows, a.n_users, a.n_items) == (b.windows, b.n_users, b.n_items)


def report_numbers(report) -> tuple:
    r = report
    return r.d_loss, r.g_loss, r.active, r.evaluated, r.hits, r.ndcg


def train(trainer: WindowTrainer, data: list) -> list[tuple]:
    return [report_numbers(trainer.train_window(u, i, eval_candidates=EVAL)) for u, i in data]


@pytest.mark.parametrize("restore_first", [True, False])
@pytest.mark.parametrize("aggregator", ["attn", "conv"])
def test_restored_trainer_continues_bit_for_bit(aggregator: str, restore_first: bool) -> None:
    config = ModelConfig(**{**CONFIG.to_dict(), "aggregator": aggregator})
    data = windows(5)
    rest = data[3:]
    original = WindowTrainer(config, seed=21)
    for users, items in data[:3]:
        original.train_window(users, items, eval_candidates=EVAL)

    tensors, meta = trainer_state(original)
    json.dumps(meta)  # metadata is plain JSON
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())

    # the snapshot is a copy: training either trainer afterwards leaves it alone
    restored = restore_trainer(tensors, meta) if restore_first else None
    reports_a = train(original, rest)
    if restored is None:
        restored = restore_trainer(tensors, meta)
    reports_b = train(restored, rest)

    assert reports_a == reports_b
    assert original.d.users.shape[0] > 1024  # the last window made the tables grow
    assert_same_trainer(original, restored)


def test_restore_before_any_window_and_bad_format() -> None:
    fresh = WindowTrainer(CONFIG, seed=22)
    tensors, meta = trainer_state(fresh)
    restored = restore_trainer(tensors, meta)
    assert restored.base_values is None and restored.windows == 0
    users, items = windows(1)[0]
    assert report_numbers(fresh.train_window(users, items)) == report_numbers(
        restored.train_window(users, items)
    )
    with pytest.raises(ValueError, match="format"):
        restore_trainer(tensors, {**meta, "format": 999})


def string_windows(count: int) -> list[tuple[list[str], list[str]]]:
    return [
        ([f"u{int(u)}" for u in users], [f"i{int(i) * 7}" for i in items])
        for users, items in windows(count, seed=23)
    ]


def test_recommender_state_round_trip_continues_bit_for_bit() -> None:
    data = string_windows(5)
    original = Recommender(CONFIG, seed=24)
    for users, items in data[:3]:
        original.train_window(users, items, eval_candidates=EVAL)
    tensors, meta, blobs = original.state()
    assert set(blobs) == {"vocab/users", "vocab/items"}
    restored = Recommender.from_state(tensors, meta, blobs)

    asked = ["u1", "u3", "nobody", data[0][0][0]]
    assert restored.recommend(asked, 5) == original.recommend(asked, 5)
    for users, items in data[3:]:
        a = original.train_window(users, items, eval_candidates=EVAL)
        b = restored.train_window(users, items, eval_candidates=EVAL)
        assert report_numbers(a) == report_numbers(b)
    assert_same_trainer(original.trainer, restored.trainer)
    assert restored.users.externals(range(len(restored.users))) == original.users.externals(
        range(len(original.users))
    )
    lists = restored.recommend(asked, 5, exclude_seen=True)
    assert lists == original.recommend(asked, 5, exclude_seen=True)
    assert "nobody" not in lists and all(len(v) == 5 for v in lists.values())


def test_recommender_from_state_rejects_mismatched_vocabularies() -> None:
    rec = Recommender(CONFIG, seed=25)
    users, items = string_windows(1)[0]
    rec.train_window(users, items)
    tensors, meta, blobs = rec.state()
    blobs = {**blobs, "vocab/items": json.dumps(["only-one"]).encode()}
    with pytest.raises(ValueError, match="do not match"):
        Recommender.from_state(tensors, meta, blobs)
