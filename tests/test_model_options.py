"""Tests for the model options of ours (not the paper's): steps per window, separate init
scales of users and keys, read temperature, user residual. Defaults keep the paper's path."""

from __future__ import annotations

import pytest
import torch

from model.config import ModelConfig
from model.memory import read_attention
from model.state import restore_trainer, trainer_state
from model.trainer import WindowTrainer

SMALL = dict(dim=8, slots=6, candidates=10, window=16, init_std=0.1)


def run(windows: int = 4, **overrides) -> tuple[WindowTrainer, list]:
    torch.manual_seed(0)
    trainer = WindowTrainer(ModelConfig(**{**SMALL, **overrides}), seed=5)
    g = torch.Generator().manual_seed(6)
    reports = []
    for _ in range(windows):
        users = torch.randint(0, 20, (16,), generator=g)
        items = torch.randint(0, 30, (16,), generator=g)
        reports.append(trainer.train_window(users, items))
    return trainer, reports


def _adam_steps(trainer: WindowTrainer) -> int:
    return int(trainer.opt_d.state[trainer.d.keys]["step"])


# ---- defaults: the paper's path is unchanged ------------------------------------------


# Recorded with the default options (same seeds, 4 windows) when the online evaluation got
# a generator of its own; every option of ours, off, must leave these unmoved.
_BEFORE = {
    "attn": ([4.998678684234619, 4.992319583892822, 5.031882286071777, 4.988203525543213],
             11.696662615777768, 4.46719942020718, -1.0882867339532822, -12.875852592598676),
    "conv": ([5.010645389556885, 4.965195178985596, 5.015064716339111, 4.992339134216309],
             11.680865395898309, 4.441296076867729, -0.44922886043787, -12.878682036320242),
}


@pytest.mark.parametrize("aggregator", ["attn", "conv"])
def test_default_options_reproduce_the_run_recorded_before_they_existed(aggregator) -> None:
    trainer, reports = run(aggregator=aggregator)
    losses, users, keys, memory, g_items = _BEFORE[aggregator]
    assert [r.d_loss for r in reports] == pytest.approx(losses, rel=1e-6)
    assert float(trainer.d.users.double().sum()) == pytest.approx(users, rel=1e-6)
    assert float(trainer.d.keys.double().abs().sum()) == pytest.approx(keys, rel=1e-6)
    assert float(trainer.memory().double().sum()) == pytest.approx(memory, rel=1e-6)
    assert float(trainer.g.items.double().sum()) == pytest.approx(g_items, rel=1e-6)


def test_default_options_are_the_paper_reading() -> None:
    c = ModelConfig()
    assert (c.steps_per_window, c.user_init_std, c.key_init_std) == (1, None, None)
    assert (c.read_temperature, c.user_residual) == (1.0, False)


def test_explicit_neutral_values_equal_the_defaults_bit_for_bit() -> None:
    a, _ = run(windows=3)
    b, _ = run(windows=3, steps_per_window=1, user_init_std=0.1, key_init_std=0.1,
               read_temperature=1.0, user_residual=False)
    for (name, x), (_, y) in zip(a.d.state_dict().items(), b.d.state_dict().items()):
        assert torch.equal(x, y), name
    assert torch.equal(a.memory(), b.memory())


def test_temperature_one_is_exactly_the_plain_softmax() -> None:
    g = torch.Generator().manual_seed(1)
    u, k = torch.randn(5, 4, generator=g), torch.randn(3, 4, generator=g)
    assert torch.equal(read_attention(u, k), torch.softmax(-torch.cdist(u, k), dim=-1))
    assert torch.equal(read_attention(u, k, 1.0), read_attention(u, k))


# ---- steps_per_window -------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 3])
def test_steps_per_window_performs_that_many_optimiser_steps(steps) -> None:
    trainer, reports = run(windows=2, steps_per_window=steps)
    assert _adam_steps(trainer) == 2 * steps
    assert int(trainer.opt_g.state[trainer.g.users]["step"]) == 2 * steps
    assert trainer.windows == 2 and not any(r.rolled_back for r in reports)


def test_steps_per_window_draws_fresh_negatives_and_evaluates_once(monkeypatch) -> None:
    trainer = WindowTrainer(ModelConfig(**{**SMALL, "steps_per_window": 3}), seed=5)
    drawn, evals = [], []
    sample, evaluate = trainer._sample_negatives, trainer._evaluate

    def spy_sample(*a, **kw):
        out = sample(*a, **kw)
        drawn.append(out[0].clone())
        return out

    def spy_eval(*a, **kw):
        evals.append(1)
        return evaluate(*a, **kw)

    monkeypatch.setattr(trainer, "_sample_negatives", spy_sample)
    monkeypatch.setattr(trainer, "_evaluate", spy_eval)
    g = torch.Generator().manual_seed(2)
    users = torch.randint(0, 50, (64,), generator=g)
    items = torch.randint(0, 400, (64,), generator=g)
    trainer.train_window(users, items)
    assert len(drawn) == 3 and len(evals) == 1
    assert not torch.equal(drawn[0], drawn[1]) and not torch.equal(drawn[1], drawn[2])


def test_steps_per_window_first_step_matches_the_single_step_window() -> None:
    one, r1 = run(windows=1)
    three, r3 = run(windows=1, steps_per_window=3)
    assert r1[0].d_loss == r3[0].d_loss  # the report is the first (pre-update) step
    assert not torch.equal(one.d.keys, three.d.keys)  # but three steps moved further


def test_steps_per_window_writes_the_memory_read_by_the_last_step() -> None:
    trainer, _ = run(windows=2, steps_per_window=2)
    expected = trainer.d.write(trainer.base_values, trainer.base_users, trainer.base_items)
    assert torch.allclose(trainer.memory(), expected)


# ---- init scales ------------------------------------------------------------------------


def test_user_and_key_init_std_scale_only_those_tables() -> None:
    trainer = WindowTrainer(
        ModelConfig(dim=32, slots=64, user_init_std=1.0, key_init_std=0.5), seed=0
    )
    trainer.grow(2000, 2000)
    assert trainer.d.keys.std().item() == pytest.approx(0.5, rel=0.1)
    assert trainer.d.users.std().item() == pytest.approx(1.0, rel=0.05)
    assert trainer.d.items.std().item() == pytest.approx(0.01, rel=0.05)
    assert trainer.g.users.std().item() == pytest.approx(0.01, rel=0.05)
    assert trainer.d.initial_values.std().item() == pytest.approx(0.01, rel=0.1)


# ---- read temperature -------------------------------------------------------------------


def test_read_temperature_divides_the_similarities() -> None:
    trainer, _ = run(windows=2, read_temperature=0.05)
    users = torch.arange(5)
    values = trainer.memory()
    p, att = trainer.d.read_users(users, values)
    u = trainer.d.users[users]
    expected = torch.softmax(-torch.cdist(u, trainer.d.keys) / 0.05, dim=-1)
    assert torch.allclose(att, expected)
    assert torch.allclose(p, expected @ values)


def test_a_low_temperature_sharpens_the_read_attention() -> None:
    g = torch.Generator().manual_seed(3)
    u, k = torch.randn(20, 8, generator=g) * 0.05, torch.randn(6, 8, generator=g) * 0.05
    assert read_attention(u, k, 0.01).max(dim=1).values.mean() > read_attention(u, k).max(
        dim=1
    ).values.mean() + 0.3


# ---- user residual ----------------------------------------------------------------------


def test_user_residual_adds_the_user_embedding_to_p() -> None:
    trainer, _ = run(windows=2, user_residual=True)
    users = torch.tensor([0, 3, 7])
    values = trainer.memory()
    p, att = trainer.d.read_users(users, values)
    u = trainer.d.users[users]
    assert torch.allclose(p, att @ values + u)
    plain = torch.softmax(-torch.cdist(u, trainer.d.keys), dim=-1)
    assert torch.allclose(att, plain)  # the attention itself is Eq. 1-2's


def test_user_residual_is_used_by_top_k() -> None:
    trainer, _ = run(windows=2, user_residual=True)
    users = torch.tensor([1, 2])
    p, _ = trainer.d.read_users(users, trainer.memory())
    d = torch.cdist(p, trainer.d.items[: trainer.n_items])
    idx, scores = trainer.top_k(users, 5)
    assert torch.equal(idx, torch.topk(-d, 5, dim=1).indices)


# ---- config and state -------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [dict(steps_per_window=0), dict(user_init_std=0.0), dict(key_init_std=-1.0),
     dict(read_temperature=0.0)],
)
def test_invalid_options_are_rejected(bad) -> None:
    with pytest.raises(ValueError):
        ModelConfig(**bad)


def test_options_survive_a_state_round_trip_and_resume_identically() -> None:
    opts = dict(steps_per_window=2, user_init_std=0.3, key_init_std=0.3,
                read_temperature=0.1, user_residual=True)
    a, _ = run(windows=2, **opts)
    b = restore_trainer(*trainer_state(a))
    assert b.config == a.config
    g = torch.Generator().manual_seed(9)
    users = torch.randint(0, 25, (16,), generator=g)
    items = torch.randint(0, 35, (16,), generator=g)
    ra, rb = a.train_window(users, items), b.train_window(users, items)
    assert ra.d_loss == rb.d_loss and ra.hits == rb.hits
    for (name, x), (_, y) in zip(a.d.state_dict().items(), b.d.state_dict().items()):
        assert torch.equal(x, y), name


# ---- lazy Adam ----------------------------------------------------------------------------


def _three_windows(lazy: bool) -> tuple[WindowTrainer, dict[str, torch.Tensor]]:
    """Window 1 has users 0..9; windows 2 and 3 only users 0..4. Window 2's memory write
    reads window 1's users, so users 5..9 last get a gradient in window 2."""
    trainer = WindowTrainer(ModelConfig(**{**SMALL, "lazy_adam": lazy}), seed=5)
    g = torch.Generator().manual_seed(6)
    trainer.train_window(torch.arange(16) % 10, torch.randint(0, 30, (16,), generator=g))
    trainer.train_window(torch.arange(16) % 5, torch.randint(0, 30, (16,), generator=g))
    before = {"d": trainer.d.users.detach().clone(), "g": trainer.g.users.detach().clone(),
              "m": trainer.opt_d.state[trainer.d.users]["exp_avg"].clone()}
    trainer.train_window(torch.arange(16) % 5, torch.randint(0, 30, (16,), generator=g))
    return trainer, before


def test_lazy_adam_leaves_rows_a_window_does_not_touch_as_they_were() -> None:
    trainer, before = _three_windows(lazy=True)
    assert torch.equal(trainer.d.users[5:10], before["d"][5:10])
    assert torch.equal(trainer.g.users[5:10], before["g"][5:10])
    assert torch.equal(trainer.opt_d.state[trainer.d.users]["exp_avg"][5:10], before["m"][5:10])
    assert not torch.equal(trainer.d.users[:5], before["d"][:5])  # touched rows move
    assert not torch.equal(trainer.g.users[:5], before["g"][:5])
    # dense Adam (the paper's) keeps moving them on their old momentum
    dense, dense_before = _three_windows(lazy=False)
    assert not torch.equal(dense.d.users[5:10], dense_before["d"][5:10])


def test_lazy_adam_state_round_trips_and_resumes_bit_for_bit() -> None:
    trainer, _ = run(windows=3, lazy_adam=True)
    restored = restore_trainer(*trainer_state(trainer))
    assert isinstance(restored.opt_d.state[restored.d.users]["step"], int)
    g = torch.Generator().manual_seed(9)
    for _ in range(2):  # both grow past their tables' capacity on the way
        users = torch.randint(0, 1500, (16,), generator=g)
        items = torch.randint(0, 1500, (16,), generator=g)
        a, b = trainer.train_window(users, items), restored.train_window(users, items)
        assert (a.d_loss, a.g_loss, a.hits) == (b.d_loss, b.g_loss, b.hits)
    sa, sb = trainer_state(trainer)[0], trainer_state(restored)[0]
    assert sa.keys() == sb.keys() and "opt_d/users/exp_avg_sq" in sa
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
