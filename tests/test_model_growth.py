"""Tests for model.growth and WindowTrainer.grow: learned rows and Adam state survive growth."""

from __future__ import annotations

import copy

import torch
from torch import nn

from model.config import ModelConfig
from model.growth import grow_rows, grown_capacity
from model.trainer import WindowTrainer


class Table(nn.Module):
    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        init = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(rows, dim, generator=init))
        self.other = nn.Parameter(torch.ones(dim))


def adam_steps(module: Table, opt: torch.optim.Optimizer, rows: list[int], steps: int) -> None:
    """Steps of a loss that touches only `rows` of the table (and the other parameter)."""
    for s in range(steps):
        opt.zero_grad()
        loss = ((module.weight[rows] - s) ** 2).sum() + (module.other**2).sum()
        loss.backward()
        opt.step()


def test_grown_capacity() -> None:
    assert grown_capacity(0, 0) == 0
    assert grown_capacity(0, 5) == 1024
    assert grown_capacity(2000, 1500) == 2000
    assert grown_capacity(2000, 2001) == 3001
    assert grown_capacity(2000, 9000) == 9000


def test_grow_rows_keeps_old_rows_and_adam_state_bit_identical() -> None:
    table = Table(6, 4)
    opt = torch.optim.Adam(table.parameters(), lr=0.01)
    adam_steps(table, opt, [0, 2, 5], steps=3)
    old = table.weight
    old_rows = old.detach().clone()
    old_state = {k: v.clone() for k, v in opt.state[old].items()}

    gen = torch.Generator().manual_seed(1)
    new = grow_rows(table, "weight", 2006, opt, std=0.01, generator=gen)

    assert table.weight is new and new.shape == (2006, 4) and new.requires_grad
    assert torch.equal(new[:6].detach(), old_rows)
    assert old not in opt.state and any(p is new for p in opt.param_groups[0]["params"])
    state = opt.state[new]
    assert set(state) == set(old_state)
    assert torch.equal(state["step"], old_state["step"])
    for key in ("exp_avg", "exp_avg_sq"):
        assert state[key].shape == (2006, 4)
        assert torch.equal(state[key][:6], old_state[key])
        assert torch.count_nonzero(state[key][6:]) == 0

    fresh = new[6:].detach()  # 8000 draws from N(0, 0.01^2)
    assert abs(float(fresh.mean())) < 0.01 * 5 / 8000**0.5
    assert 0.0095 < float(fresh.std()) < 0.0105


def test_grow_rows_without_optimizer_state_and_shrinking_is_a_no_op() -> None:
    table = Table(3, 2)
    opt = torch.optim.Adam(table.parameters(), lr=0.01)  # never stepped: no state
    same = grow_rows(table, "weight", 2, opt, std=0.01)
    assert same is table.weight and same.shape == (3, 2)
    new = grow_rows(table, "weight", 5, opt, std=0.01)
    assert new.shape == (5, 2) and new not in opt.state
    adam_steps(table, opt, [4], steps=1)
    assert opt.state[new]["exp_avg"].shape == (5, 2)


def test_adam_after_growth_continues_old_rows_as_if_never_grown_and_trains_new_rows() -> None:
    table = Table(6, 4)
    opt = torch.optim.Adam(table.parameters(), lr=0.01)
    adam_steps(table, opt, [0, 2, 5], steps=3)
    ref_table, ref_opt = copy.deepcopy((table, opt))  # shares no tensor with the original

    grow_rows(table, "weight", 10, opt, std=0.01, generator=torch.Generator().manual_seed(2))
    before_new = table.weight[6:].detach().clone()
    adam_steps(table, opt, [0, 2, 5, 7], steps=2)
    adam_steps(ref_table, ref_opt, [0, 2, 5], steps=2)

    # old rows: the same Adam trajectory as the table that never grew
    torch.testing.assert_close(table.weight[:6], ref_table.weight, rtol=0, atol=0)
    assert torch.equal(table.other, ref_table.other)
    # new rows: the one with gradient moved, the others did not
    after_new = table.weight[6:].detach()
    assert not torch.equal(after_new[1], before_new[1])
    assert torch.equal(after_new[[0, 2, 3]], before_new[[0, 2, 3]])
    assert torch.equal(opt.state[table.weight]["step"], torch.tensor(5.0))


def trained_trainer() -> WindowTrainer:
    config = ModelConfig(dim=8, slots=4, candidates=5, window=8)
    trainer = WindowTrainer(config, seed=3)
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        users = torch.randint(0, 20, (8,), generator=g)
        trainer.train_window(users, torch.randint(0, 30, (8,), generator=g))
    return trainer


def test_window_trainer_grow_keeps_rows_and_adam_state_of_both_networks() -> None:
    trainer = trained_trainer()
    assert trainer.d.users.shape[0] == 1024 and (trainer.n_users, trainer.n_items) <= (20, 30)
    nets = {"d": (trainer.d, trainer.opt_d), "g": (trainer.g, trainer.opt_g)}
    before = {
        (net, name): (
            getattr(module, name).detach().clone(),
            {k: v.clone() for k, v in opt.state[getattr(module, name)].items()},
        )
        for net, (module, opt) in nets.items()
        for name in ("users", "items")
    }
    others = {
        k: v.clone() for k, v in trainer.d.state_dict().items() if k not in ("users", "items")
    }

    trainer.grow(1500, 3000)

    assert (trainer.n_users, trainer.n_items) == (1500, 3000)
    for (net, name), (rows, state) in before.items():
        module, opt = nets[net]
        param = getattr(module, name)
        assert param.shape[0] >= (1500 if name == "users" else 3000)
        assert torch.equal(param[: rows.shape[0]].detach(), rows)
        grown = opt.state[param]
        assert torch.equal(grown["step"], state["step"])
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(grown[key][: rows.shape[0]], state[key])
            assert torch.count_nonzero(grown[key][rows.shape[0] :]) == 0
        assert 0.008 < float(param[rows.shape[0] :].detach().std()) < 0.012
    for k, v in trainer.d.state_dict().items():
        if k in others:
            assert torch.equal(v, others[k])


def test_window_trainer_trains_new_rows_after_growth() -> None:
    trainer = trained_trainer()
    trainer.grow(1500, 3000)
    users_before = trainer.d.users.detach().clone()
    items_before = trainer.d.items.detach().clone()
    g_items_before = trainer.g.items.detach().clone()
    users, items = torch.tensor([1400, 1401, 3, 4]), torch.tensor([2900, 2901, 5, 6])
    report = trainer.train_window(users, items)
    assert report.size == 4 and torch.isfinite(torch.tensor(report.d_loss))
    assert not torch.equal(trainer.d.users[1400], users_before[1400])
    assert not torch.equal(trainer.d.items[2900], items_before[2900])
    assert not torch.equal(trainer.g.items, g_items_before)  # the generator's step reached F
    # a row with no gradient and no Adam state yet stays put
    assert torch.equal(trainer.d.users[1499], users_before[1499])
