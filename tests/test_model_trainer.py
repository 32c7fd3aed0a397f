"""Tests for model.trainer: hinge loss, negatives, REINFORCE, truncated BPTT, online metrics."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch

from model.config import ModelConfig
from model.trainer import WindowTrainer


def random_window(g: torch.Generator, size: int, n_users: int = 20, n_items: int = 30):
    users = torch.randint(0, n_users, (size,), generator=g)
    return users, torch.randint(0, n_items, (size,), generator=g)


def small_trainer(windows: int = 2, **overrides) -> WindowTrainer:
    settings = dict(dim=8, slots=6, candidates=10, window=16, init_std=0.1)
    settings.update(overrides)
    trainer = WindowTrainer(ModelConfig(**settings), seed=5)
    g = torch.Generator().manual_seed(6)
    for _ in range(windows):
        trainer.train_window(*random_window(g, 16))
    return trainer


@contextmanager
def fixed_candidates(monkeypatch, matrix: torch.Tensor):
    """Make `torch.randint` return `matrix` as the candidates (a single row is repeated)."""
    real = torch.randint

    def fake(low, high, size, *args, **kwargs):
        assert size[1] == matrix.shape[1] and int(matrix.max()) < high
        return matrix.expand(size[0], -1).clone() if matrix.shape[0] == 1 else matrix.clone()

    monkeypatch.setattr(torch, "randint", fake)
    try:
        yield
    finally:
        monkeypatch.setattr(torch, "randint", real)


def loop_p(trainer: WindowTrainer, user: int, values: torch.Tensor) -> list[float]:
    """p of Eq. 1-3 for one user, in float64 Python."""
    u = trainer.d.users[user].tolist()
    sims = [-math.dist(u, k) for k in trainer.d.keys.tolist()]
    exps = [math.exp(s - max(sims)) for s in sims]
    w = [e / sum(exps) for e in exps]
    vals = values.tolist()
    return [sum(w[i] * vals[i][c] for i in range(len(w))) for c in range(len(u))]


# ---- hinge loss (Eq. 21) --------------------------------------------------------------


def test_d_loss_is_the_mean_hinge_over_the_window_with_the_given_negatives(monkeypatch) -> None:
    trainer = small_trainer(margin=0.05)
    users = torch.tensor([0, 3, 3, 7, 11, 19, 2, 5])
    items = torch.tensor([1, 4, 9, 9, 0, 29, 13, 8])
    negatives = torch.tensor([2, 5, 10, 3, 28, 0, 14, 20])
    def fixed(self, u, i, rng):
        return negatives, torch.zeros(u.numel())  # log-probabilities without a graph

    monkeypatch.setattr(WindowTrainer, "_sample_negatives", fixed)

    # the loss of window t reads M_t as it stands before the window's step
    with torch.no_grad():
        values = trainer.memory().clone()
    B = trainer.d.items.tolist()
    hinges = []
    for u, v, n in zip(users.tolist(), items.tolist(), negatives.tolist()):
        p = loop_p(trainer, u, values)
        hinges.append(max(0.0, 0.05 + math.dist(p, B[v]) - math.dist(p, B[n])))
    expected = sum(hinges) / len(hinges)
    active = sum(h > 0 for h in hinges) / len(hinges)
    assert 0 < active < 1  # both branches of the hinge are exercised

    report = trainer.train_window(users, items)

    assert report.d_loss == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert report.active == pytest.approx(active)
    assert report.g_loss == 0.0  # log-probabilities of zero: no generator step


# ---- the generator's sampling (Eq. 13) -----------------------------------------------


def generator_trainer() -> WindowTrainer:
    trainer = WindowTrainer(ModelConfig(dim=4, slots=3, candidates=8, window=8), seed=7)
    trainer.grow(1, 8)
    init = torch.Generator().manual_seed(8)
    with torch.no_grad():  # spread G out so that softmax(-d_G) is far from uniform
        for p in trainer.g.parameters():
            p.normal_(0.0, 1.0, generator=init)
    return trainer


def test_negatives_follow_softmax_of_minus_generator_distance(monkeypatch) -> None:
    trainer = generator_trainer()
    trainer.history.add(torch.tensor([0]), torch.tensor([1]))  # user 0 has bought item 1
    h = 40_000
    users = items = torch.zeros(h, dtype=torch.long)  # user 0, positive item 0
    cands = torch.arange(8)[None, :]  # every item is a candidate; 0 and 1 are not allowed

    with fixed_candidates(monkeypatch, cands), torch.no_grad():
        rng = torch.Generator().manual_seed(10)
        negatives, logp = trainer._sample_negatives(users, items, rng)

    with torch.no_grad():
        d_g = trainer.g.distances(torch.zeros(1, dtype=torch.long), torch.arange(2, 8)[None])[0]
    probs = torch.softmax(-d_g.double(), dim=0)  # over the allowed items 2..7
    assert float(probs.max() / probs.min()) > 3
    counts = torch.bincount(negatives, minlength=8).double()
    assert counts[0] == 0 and counts[1] == 0
    expected = probs * h
    chi2 = float(((counts[2:] - expected) ** 2 / expected).sum())
    assert chi2 < 25.7  # 5 degrees of freedom, p = 1e-4
    torch.testing.assert_close(logp.double(), probs.log()[negatives - 2], rtol=0, atol=1e-5)


def test_negatives_are_never_the_positive_or_in_the_users_history() -> None:
    trainer = generator_trainer()
    trainer.grow(50, 40)
    g = torch.Generator().manual_seed(11)
    seen_u, seen_i = random_window(g, 200, n_users=50, n_items=40)  # ~4 items a user
    trainer.history.add(seen_u, seen_i)
    history = set(zip(seen_u.tolist(), seen_i.tolist()))
    users, items = random_window(g, 20_000, n_users=50, n_items=40)
    for use_generator in (True, False):
        trainer.config = replace(trainer.config, use_generator=use_generator)
        negatives, _ = trainer._sample_negatives(users, items, g)
        pairs = zip(users.tolist(), items.tolist(), negatives.tolist())
        assert all(n != i and (u, n) not in history for u, i, n in pairs)
        assert len(set(negatives.tolist())) > 30


def test_reinforce_moves_generator_mass_towards_negatives_with_higher_reward() -> None:
    # D frozen with p = 0 for every user, so d_D(u, v) = ||B[v]|| = v: item 1 is the hardest
    trainer = WindowTrainer(ModelConfig(dim=4, slots=4, candidates=20, window=64), seed=12)
    trainer.grow(1, 10)
    with torch.no_grad():
        trainer.d.initial_values.zero_()
        trainer.d.writer.add.weight.zero_()
        trainer.d.writer.add.bias.zero_()  # zero memory stays zero
        trainer.d.items.zero_()
        trainer.d.items[:10, 0] = torch.arange(10.0)
    for group in trainer.opt_d.param_groups:
        group["lr"] = 0.0
    user, allowed = torch.zeros(1, dtype=torch.long), torch.arange(1, 10)
    reward = -allowed.double()

    def policy() -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(-trainer.g.distances(user, allowed[None])[0].double(), dim=0)

    before = policy()
    zeros = torch.zeros(64, dtype=torch.long)  # user 0 buys item 0, over and over
    reports = [trainer.train_window(zeros, zeros, eval_candidates=0) for _ in range(200)]
    after = policy()

    assert float((before * reward).sum()) == pytest.approx(-5.0, abs=0.05)  # near uniform
    assert float((after * reward).sum()) > -3.0  # expected reward rose by more than 2
    assert int(after.argmax()) == 0 and after[0] > 2 * before[0]
    # D never moved, so the hinge [5 + 0 - v]_+ grows only because G picks harder negatives
    assert reports[-1].d_loss > reports[0].d_loss + 1.0
    assert torch.equal(trainer.d.items[:10, 0], torch.arange(10.0))


# ---- truncated back-propagation through one write -------------------------------------


@pytest.mark.parametrize("aggregator", ["attn", "conv"])
def test_loss_reaches_the_writer_and_aggregator_through_one_write(aggregator: str) -> None:
    trainer = small_trainer(windows=0, aggregator=aggregator)
    g = torch.Generator().manual_seed(14)
    writer_and_agg = {
        name: p
        for name, p in trainer.d.named_parameters()
        if name.startswith(("writer.", "aggregator."))
    }

    trainer.train_window(*random_window(g, 16))
    # window 0 reads M_0, which no write produced: nothing flows into the write
    assert all(p.grad is None for p in writer_and_agg.values())
    assert trainer.base_values is not None and not trainer.base_values.requires_grad
    assert trainer.base_values.grad_fn is None
    before = {name: p.detach().clone() for name, p in writer_and_agg.items()}

    trainer.train_window(*random_window(g, 16))
    for name, p in writer_and_agg.items():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
        assert not torch.equal(p.detach(), before[name]), name
    assert not trainer.base_values.requires_grad and trainer.base_values.grad_fn is None


def test_base_values_is_the_memory_the_window_read() -> None:
    trainer = small_trainer(windows=2)
    with torch.no_grad():
        expected = trainer.memory().clone()
    trainer.train_window(*random_window(torch.Generator().manual_seed(15), 16))
    assert torch.equal(trainer.base_values, expected)


@pytest.mark.parametrize("aggregator", ["attn", "conv"])
def test_a_partial_window_trains_and_writes_memory(aggregator: str) -> None:
    trainer = small_trainer(windows=2, aggregator=aggregator)
    with torch.no_grad():
        memory_before = trainer.memory().clone()
    params_before = trainer.d.items.detach().clone()
    users, items = torch.tensor([1, 2, 3, 1, 9]), torch.tensor([4, 5, 6, 7, 8])  # 5 < H = 16

    report = trainer.train_window(users, items)

    assert report.size == 5 and math.isfinite(report.d_loss) and report.d_loss > 0
    assert not torch.equal(trainer.d.items.detach(), params_before)
    assert torch.equal(trainer.base_users, users) and torch.equal(trainer.base_items, items)
    with torch.no_grad():
        memory_after = trainer.memory()
        assert torch.equal(memory_after, trainer.d.write(trainer.base_values, users, items))
    assert not torch.allclose(memory_after, memory_before, atol=1e-6)
    trainer.train_window(users[:1], items[:1])  # a window of one interaction
    assert trainer.windows == 4


def test_an_empty_window_is_refused() -> None:
    trainer = small_trainer(windows=0)
    with pytest.raises(ValueError):
        empty = torch.tensor([], dtype=torch.long)
        trainer.train_window(empty, empty)


# ---- online evaluation ---------------------------------------------------------------


def evaluation_trainer() -> WindowTrainer:
    """p = 0 for every user (zero memory), so the distance of item v is ||B[v]||."""
    trainer = WindowTrainer(ModelConfig(dim=3, slots=2, window=8), seed=16)
    trainer.grow(3, 6)
    norms = torch.tensor([1.0, 0.5, 1.0, 2.0, 0.1, 3.0])
    with torch.no_grad():
        trainer.d.items.zero_()
        trainer.d.items[:6, 1] = norms  # item 2 ties with item 0; item 4 is nearest of all
    return trainer


def test_evaluate_counts_ties_against_the_positive_and_skips_invalid(monkeypatch) -> None:
    trainer = evaluation_trainer()
    trainer.history.add(torch.tensor([0]), torch.tensor([4]))  # user 0 has bought item 4
    values = torch.zeros(2, 3)
    # user 0, positive 0: beaten by 1 (0.5) and tied by 2 (1.0); 4 is the user's own, 0 itself
    # does not count, 3 and 5 are farther. user 1, positive 5: everything else is nearer.
    # user 2, positive 4 (nearest): rank 0.
    cands = torch.tensor([[1, 2, 3, 4, 0], [0, 1, 2, 3, 4], [0, 1, 2, 3, 5]])
    users, items = torch.tensor([0, 1, 2]), torch.tensor([0, 5, 4])
    ranks = [2, 5, 0]
    for k in (1, 2, 3, 6):
        with fixed_candidates(monkeypatch, cands), torch.no_grad():
            hits, ndcg, n = trainer._evaluate(users, items, values, 6, 6, k, torch.Generator())
        assert n == 3
        assert hits == sum(r < k for r in ranks)
        assert ndcg == pytest.approx(sum(1 / math.log2(r + 2) for r in ranks if r < k))
    # k = 3: hits are ranks 2 and 0 -> HR = 2/3, NDCG = (1/log2(4) + 1) / 3 = 0.5
    with fixed_candidates(monkeypatch, cands), torch.no_grad():
        hits, ndcg, n = trainer._evaluate(users, items, values, 6, 6, 3, torch.Generator())
    assert (hits / n, ndcg / n) == (pytest.approx(2 / 3), pytest.approx(0.5))


def test_evaluate_all_tied_candidates_rank_the_positive_last(monkeypatch) -> None:
    trainer = evaluation_trainer()
    with torch.no_grad():
        trainer.d.items[:6] = torch.tensor([1.0, 0.0, 0.0])  # every item at distance 1
    cands = torch.tensor([[1, 2, 3, 4, 5]])
    with fixed_candidates(monkeypatch, cands), torch.no_grad():
        hits, ndcg, n = trainer._evaluate(
            torch.tensor([0]), torch.tensor([0]), torch.zeros(2, 3), 6, 6, 5, torch.Generator()
        )
    assert (hits, ndcg, n) == (0, 0.0, 1)  # rank 5: a tie is never a win


def test_window_report_scores_only_interactions_known_before_the_window() -> None:
    trainer = small_trainer(windows=1)
    n_users, n_items = trainer.n_users, trainer.n_items
    users = torch.tensor([0, 1, n_users + 3, 2])
    items = torch.tensor([0, n_items + 4, 1, 2])  # one new item, one new user
    report = trainer.train_window(users, items, eval_candidates=20, eval_k=5)
    assert report.evaluated == 2 and 0 <= report.hits <= 2
    assert report.hit_rate == report.hits / 2


def test_window_with_non_finite_values_is_rolled_back() -> None:
    trainer = small_trainer(windows=2)
    g = torch.Generator().manual_seed(21)
    users, items = random_window(g, 16)
    with torch.no_grad():
        trainer.d.items[int(items[0])] = float("nan")  # a poisoned row, as a fault would leave
    params = {n: p.detach().clone() for n, p in trainer.d.named_parameters()}
    params_g = {n: p.detach().clone() for n, p in trainer.g.named_parameters()}
    base, history = trainer.base_values.clone(), trainer.history.keys.clone()
    windows = trainer.windows

    report = trainer.train_window(users, items)

    assert report.rolled_back and trainer.windows == windows + 1
    for n, p in trainer.d.named_parameters():
        assert torch.equal(p, params[n]) or n == "items", n
    for n, p in trainer.g.named_parameters():
        assert torch.equal(p, params_g[n]), n
    assert torch.equal(trainer.base_values, base) and torch.equal(trainer.history.keys, history)
    with torch.no_grad():
        trainer.d.items[int(items[0])] = 0.0
    assert not trainer.train_window(*random_window(g, 16)).rolled_back
    assert all(torch.isfinite(p).all() for p in trainer.d.parameters())


def _reference_ranks(trainer, users, items, cands, values) -> torch.Tensor:
    """Ranks by the definition: candidates at least as close as the positive, not the
    positive itself and not in the user's history, counted one by one in double."""
    with torch.no_grad():
        p, _ = trainer.d.read_users(users, values)
        p, table = p.double(), trainer.d.items.double()
        ranks = []
        for n in range(users.numel()):
            d_pos = torch.linalg.vector_norm(p[n] - table[items[n]])
            d_c = torch.linalg.vector_norm(p[n] - table[cands[n]], dim=1)
            seen = trainer.history.contains(users[n].expand_as(cands[n]), cands[n])
            valid = ~seen & (cands[n] != items[n])
            ranks.append(int(((d_c <= d_pos) & valid).sum()))
    return torch.tensor(ranks)


@pytest.mark.parametrize("n_items", [150, 5000])  # the matrix path; the gathered path
def test_evaluate_ranks_match_the_definition_on_both_paths(n_items, monkeypatch) -> None:
    trainer = WindowTrainer(ModelConfig(dim=8, slots=4, candidates=5, window=64), seed=3)
    trainer.grow(40, n_items)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in trainer.d.parameters():
            p.normal_(0.0, 1.0, generator=g)
    seen_u, seen_i = random_window(g, 400, n_users=40, n_items=n_items)
    trainer.history.add(seen_u, seen_i)
    users, items = random_window(g, 300, n_users=40, n_items=n_items)
    candidates = 100
    drawn = {}
    real_randint = torch.randint

    def recording_randint(*args, **kwargs):
        out = real_randint(*args, **kwargs)
        drawn["cands"] = out
        return out

    monkeypatch.setattr(torch, "randint", recording_randint)
    values = trainer.memory()
    hits, ndcg, n = trainer._evaluate(users, items, values, n_items, candidates, 10,
                                      torch.Generator().manual_seed(5))
    monkeypatch.undo()
    ranks = _reference_ranks(trainer, users, items, drawn["cands"], values)
    assert n == 300 and hits == int((ranks < 10).sum()) and 0 < hits < 300
    expected = float(torch.where(ranks < 10, 1.0 / torch.log2(ranks.double() + 2), 0.0).sum())
    assert ndcg == pytest.approx(expected, rel=1e-12)


def test_eval_sample_scores_a_seeded_subset_of_the_known_interactions() -> None:
    g = torch.Generator().manual_seed(7)
    windows = [random_window(g, 64, n_users=10, n_items=30) for _ in range(3)]

    def reports(sample):
        trainer = WindowTrainer(ModelConfig(dim=8, slots=4, candidates=5, window=64), seed=3)
        return [trainer.train_window(u, i, eval_candidates=20, eval_sample=sample)
                for u, i in windows]

    full, sampled, again = reports(None), reports(16), reports(16)
    assert [r.evaluated for r in full][1:] == [64, 64]  # all known after the first window
    assert [r.evaluated for r in sampled][1:] == [16, 16]
    assert sampled == [replace(r, seconds=s.seconds) for r, s in zip(again, sampled)]
    # evaluation draws from its own generator: training is the same whatever is scored
    assert [r.d_loss for r in sampled] == [r.d_loss for r in full]
    assert [r.g_loss for r in sampled] == [r.g_loss for r in full]


def test_distinct_by_counting_is_torch_unique() -> None:
    from model.networks import _distinct

    index = torch.randint(0, 50, (30, 7), generator=torch.Generator().manual_seed(1))
    distinct, where = _distinct(index, 60)
    expected, inverse = torch.unique(index, return_inverse=True)
    assert torch.equal(distinct, expected) and torch.equal(where, inverse)


@pytest.mark.parametrize("budget", [1 << 21, 64 * 7])  # one block; 7-item blocks merged
@pytest.mark.parametrize("exclude_seen", [False, True])
def test_top_k_is_the_k_nearest_by_distance(budget, exclude_seen, monkeypatch) -> None:
    import model.trainer as trainer_module

    monkeypatch.setitem(trainer_module._TOPK_BUDGET, "cpu", budget)
    trainer = WindowTrainer(ModelConfig(dim=8, slots=4, candidates=5, window=64), seed=3)
    trainer.grow(150, 60)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in trainer.d.parameters():
            p.normal_(0.0, 1.0, generator=g)
    seen_u, seen_i = random_window(g, 900, n_users=150, n_items=60)
    trainer.history.add(seen_u, seen_i)
    users = torch.arange(150)
    idx, scores = trainer.top_k(users, 5, exclude_seen=exclude_seen)

    with torch.no_grad():
        p, _ = trainer.d.read_users(users, trainer.memory())
        d = torch.cdist(p.double(), trainer.d.items[:60].double())
    if exclude_seen:
        d[seen_u, seen_i] = math.inf
    expected = d.topk(5, largest=False)
    assert torch.equal(idx.sort(1).values, expected.indices.sort(1).values)
    torch.testing.assert_close(scores.double(), -expected.values, rtol=1e-4, atol=1e-4)
