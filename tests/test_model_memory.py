"""Tests for model.memory and the discriminator's read/write: each equation against a loop."""

from __future__ import annotations

import math

import pytest
import torch

from model.config import ModelConfig
from model.memory import (
    AttnAggregator,
    ConvAggregator,
    MemoryWriter,
    distance,
    read,
    read_attention,
)
from model.networks import Discriminator


def rand(*shape: int, seed: int = 0, std: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * std


def loop_attention(users: torch.Tensor, keys: torch.Tensor) -> list[list[float]]:
    """Eq. 1-2 in float64 Python: softmax over -||u - M^k(i)||."""
    out = []
    for u in users.tolist():
        sims = [-math.sqrt(sum((a - b) ** 2 for a, b in zip(u, k))) for k in keys.tolist()]
        top = max(sims)
        exps = [math.exp(s - top) for s in sims]
        out.append([e / sum(exps) for e in exps])
    return out


def loop_read(w: list[list[float]], values: torch.Tensor) -> list[list[float]]:
    """Eq. 3: p = sum_i w_i M^v(i)."""
    vals = values.tolist()
    dims = range(len(vals[0]))
    return [[sum(wi * v[c] for wi, v in zip(row, vals)) for c in dims] for row in w]


def loop_distance(p: list[float], v: list[float]) -> float:
    """Eq. 4."""
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(p, v)))


def as_tensor(x: list) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


# ---- read (Eq. 1-4) -------------------------------------------------------------------


# past 25 rows cdist switches to its matrix-product path
@pytest.mark.parametrize("batch", [3, 40])
def test_read_attention_is_softmax_of_negative_euclidean_distance(batch: int) -> None:
    users, keys = rand(batch, 4, seed=1), rand(5, 4, seed=2)
    w = read_attention(users, keys)
    assert w.shape == (batch, 5)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(batch), rtol=0, atol=1e-6)
    torch.testing.assert_close(w, as_tensor(loop_attention(users, keys)), rtol=0, atol=1e-5)


def test_read_attention_prefers_the_nearest_key() -> None:
    keys = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    w = read_attention(torch.tensor([[3.0, 4.0]]), keys)
    # distances 5 and 0: w = (e^-5, 1) / (1 + e^-5)
    expected = torch.tensor([[math.exp(-5) / (1 + math.exp(-5)), 1 / (1 + math.exp(-5))]])
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-5)


def test_read_and_distance_match_loops() -> None:
    users, keys, values = rand(6, 4, seed=3), rand(5, 4, seed=4), rand(5, 4, seed=5)
    w = read_attention(users, keys)
    p = read(w, values)
    expected_p = loop_read(loop_attention(users, keys), values)
    torch.testing.assert_close(p, as_tensor(expected_p), rtol=0, atol=1e-5)

    items = rand(6, 4, seed=6)
    d = distance(p, items)
    expected_d = [loop_distance(pp, v) for pp, v in zip(expected_p, items.tolist())]
    torch.testing.assert_close(d, as_tensor(expected_d), rtol=0, atol=1e-5)
    assert distance(torch.tensor([0.0, 0.0]), torch.tensor([3.0, 4.0])).item() == 5.0


def test_discriminator_reads_users_and_scores_item_rows_and_candidate_matrices() -> None:
    config = ModelConfig(dim=4, slots=5, window=8, init_std=0.5)
    d = Discriminator(config, 7, 9, torch.Generator().manual_seed(0))
    values = rand(5, 4, seed=7)
    users = torch.tensor([0, 3, 3, 6])
    p, w = d.read_users(users, values)
    expected_w = loop_attention(d.users.detach()[users], d.keys.detach())
    expected_p = loop_read(expected_w, values)
    torch.testing.assert_close(w, as_tensor(expected_w), rtol=0, atol=1e-5)
    torch.testing.assert_close(p, as_tensor(expected_p), rtol=0, atol=1e-5)

    B = d.items.detach().tolist()
    items = torch.tensor([1, 8, 0, 4])
    expected = [loop_distance(pp, B[i]) for pp, i in zip(expected_p, items.tolist())]
    torch.testing.assert_close(d.distances(p, items), as_tensor(expected), rtol=0, atol=1e-5)

    cands = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [8, 8, 0]])  # (B, J)
    expected_j = [
        [loop_distance(pp, B[i]) for i in row] for pp, row in zip(expected_p, cands.tolist())
    ]
    torch.testing.assert_close(d.distances(p, cands), as_tensor(expected_j), rtol=0, atol=1e-5)


# ---- write (Eq. 20) -------------------------------------------------------------------


def test_write_formula_matches_a_loop_over_slots_and_dims() -> None:
    r, slots = 3, 4
    writer = MemoryWriter(r)
    We = [[0.5, -1.0, 0.2], [0.0, 0.3, -0.7], [1.2, 0.1, 0.4]]
    be = [0.1, -0.2, 0.3]
    Wa = [[-0.4, 0.9, 0.0], [0.6, -0.5, 0.8], [0.2, 0.2, -1.1]]
    ba = [-0.3, 0.05, 0.2]
    with torch.no_grad():
        writer.erase.weight.copy_(as_tensor(We))
        writer.erase.bias.copy_(as_tensor(be))
        writer.add.weight.copy_(as_tensor(Wa))
        writer.add.bias.copy_(as_tensor(ba))
    values = rand(slots, r, seed=8)
    market = [0.7, -1.3, 0.4]
    market_attention = [0.1, 0.4, 0.2, 0.3]

    new = writer(values, as_tensor(market), as_tensor(market_attention))

    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    e = [sigmoid(sum(We[c][k] * market[k] for k in range(r)) + be[c]) for c in range(r)]
    a = [math.tanh(sum(Wa[c][k] * market[k] for k in range(r)) + ba[c]) for c in range(r)]
    old = values.tolist()
    expected = [
        [old[i][c] * (1 - w * e[c]) + w * a[c] for c in range(r)]
        for i, w in enumerate(market_attention)
    ]
    torch.testing.assert_close(new, as_tensor(expected), rtol=0, atol=1e-6)


def test_write_leaves_slots_without_market_attention_unchanged() -> None:
    writer = MemoryWriter(3)
    values = rand(4, 3, seed=9)
    new = writer(values, rand(3, seed=10), torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert torch.equal(new[[0, 2, 3]], values[[0, 2, 3]])
    assert not torch.equal(new[1], values[1])


# ---- conv aggregator (Eq. 15-16) ------------------------------------------------------


def loop_conv(kernel: list[float], bias: float, rows: list[list[float]]) -> list[float]:
    """bias + sum_t k_t x_t, the kernel aligned so the newest row meets the last weight."""
    n, offset = len(rows), len(kernel) - len(rows)
    dims = range(len(rows[0]))
    return [bias + sum(kernel[offset + t] * rows[t][c] for t in range(n)) for c in dims]


@pytest.mark.parametrize("n", [5, 2, 1])
def test_conv_aggregator_matches_a_loop_and_aligns_partial_windows_right(n: int) -> None:
    window, r, slots = 5, 3, 4
    agg = ConvAggregator(window)
    kernel, bias = [0.1, -0.2, 0.3, 0.7, 1.1], 0.05  # non-uniform: misalignment shows
    with torch.no_grad():
        agg.kernel.copy_(as_tensor(kernel))
        agg.bias.fill_(bias)
    items = rand(n, r, seed=11)
    attention = torch.softmax(rand(n, slots, seed=12), dim=1)

    market, market_attention = agg(items, attention, rand(slots, r, seed=13))

    expected_market = loop_conv(kernel, bias, items.tolist())
    expected_attention = loop_conv(kernel, bias, attention.tolist())
    torch.testing.assert_close(market, as_tensor(expected_market), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        market_attention, as_tensor(expected_attention), rtol=0, atol=1e-6
    )
    if n == 1:  # a single interaction meets only the last weight
        torch.testing.assert_close(market, bias + kernel[-1] * items[0], rtol=0, atol=1e-6)


def test_conv_kernel_starts_as_a_mean_over_the_window() -> None:
    agg = ConvAggregator(4)
    items = rand(4, 3, seed=14)
    market, _ = agg(items, torch.full((4, 2), 0.5), torch.zeros(2, 3))
    torch.testing.assert_close(market, items.mean(dim=0), rtol=0, atol=1e-6)


# ---- attn aggregator (Eq. 17-19) ------------------------------------------------------


def loop_attn(
    w1: list[float],
    b1: float,
    items: list[list[float]],
    attention: list[list[float]],
    values: list[list[float]],
) -> tuple[list[list[float]], list[float], list[float]]:
    """alpha (L x n), market (r), market attention (L) of Eq. 17-19 in float64."""
    alphas = []
    for slot in values:
        logits = [
            sum(w * max(0.0, v[c] * slot[c]) for c, w in enumerate(w1)) + b1 for v in items
        ]
        top = max(logits)
        exps = [math.exp(x - top) for x in logits]
        alphas.append([x / sum(exps) for x in exps])
    L, n = len(values), len(items)
    pairs = [(i, v) for i in range(L) for v in range(n)]
    market = [
        sum(alphas[i][v] * items[v][c] for i, v in pairs) / L for c in range(len(items[0]))
    ]
    slots = range(len(attention[0]))
    market_att = [sum(alphas[i][v] * attention[v][s] for i, v in pairs) / L for s in slots]
    return alphas, market, market_att


def test_attn_aggregator_matches_a_loop_and_each_slot_attends_over_items(monkeypatch) -> None:
    n, r, slots = 6, 3, 4
    agg = AttnAggregator(r)
    w1, b1 = [1.5, -2.0, 0.8], 0.3
    with torch.no_grad():
        agg.score.weight.copy_(as_tensor([w1]))
        agg.score.bias.fill_(b1)
    items, values = rand(n, r, seed=15), rand(slots, r, seed=16)
    attention = torch.softmax(rand(n, slots, seed=17), dim=1)

    # capture the module's own alpha: the only softmax it takes
    seen: list[torch.Tensor] = []
    real_softmax = torch.softmax

    def recording_softmax(x, dim=None, **kwargs):
        out = real_softmax(x, dim=dim, **kwargs)
        seen.append(out.detach().clone())
        return out

    monkeypatch.setattr(torch, "softmax", recording_softmax)
    market, market_attention = agg(items, attention, values)
    monkeypatch.undo()

    alphas, exp_market, exp_att = loop_attn(
        w1, b1, items.tolist(), attention.tolist(), values.tolist()
    )
    (alpha,) = seen
    assert alpha.shape == (slots, n)
    torch.testing.assert_close(alpha.sum(dim=1), torch.ones(slots), rtol=0, atol=1e-6)
    torch.testing.assert_close(alpha, as_tensor(alphas), rtol=0, atol=1e-6)
    assert alpha.std(dim=1).min() > 0.01  # the weights are not trivially uniform
    torch.testing.assert_close(market, as_tensor(exp_market), rtol=0, atol=1e-6)
    torch.testing.assert_close(market_attention, as_tensor(exp_att), rtol=0, atol=1e-6)
    # convex combinations of the read-attention rows stay a distribution over slots
    torch.testing.assert_close(market_attention.sum(), torch.tensor(1.0), rtol=0, atol=1e-6)


def test_discriminator_write_is_aggregate_then_gated_write() -> None:
    for kind in ("attn", "conv"):
        config = ModelConfig(dim=4, slots=5, window=8, init_std=0.3, aggregator=kind)
        d = Discriminator(config, 6, 6, torch.Generator().manual_seed(1))
        values = rand(5, 4, seed=18)
        users, items = torch.tensor([0, 2, 5]), torch.tensor([1, 1, 4])
        attention = read_attention(d.users[users], d.keys)
        market, market_attention = d.aggregator(d.items[items], attention, values)
        expected = d.writer(values, market, market_attention)
        assert torch.equal(d.write(values, users, items), expected)
