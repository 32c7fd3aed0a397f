"""Algorithm 1's loop body for one window: evaluate, sample, update D and G, write memory."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.functional import embedding

from model.config import ModelConfig
from model.growth import grow_rows, grown_capacity
from model.history import InteractionHistory
from model.memory import nearest, squared_distances
from model.networks import Discriminator, Generator
from model.optim import NetAdam

_MATRIX_ROWS = 256  # rows per chunk of the small-catalogue evaluation (chunk x M floats)
_GATHER_ROWS = 16  # rows per chunk of gathered candidate embeddings (chunk x C x r: in cache)
_EVAL_STREAM = 0x5EED_E7A1  # mixed into the window seed for the evaluation's generator
# floats of one users x items block in top_k: on CPU small enough to stay in cache (a
# 64 MiB block ran 3x slower than an 8 MiB one: the pass is memory-bound), on a GPU large
_TOPK_BUDGET = {"cpu": 1 << 21, "cuda": 1 << 26}


@dataclass(frozen=True)
class WindowReport:
    """What one trained window did. Online metrics are over the window's interactions
    whose user and item were known before it (test-then-train)."""

    window: int  # index of this window, 0-based
    size: int  # interactions trained
    d_loss: float  # hinge loss (Eq. 21), mean over the window
    g_loss: float  # REINFORCE surrogate loss of the generator
    active: float  # share of interactions whose hinge is positive
    evaluated: int  # interactions scored before training
    hits: int  # of those, positives ranked in the top K among the candidates
    ndcg: float  # sum over evaluated interactions of 1/log2(rank+2) for hits
    seconds: float
    rolled_back: bool = False  # a loss, gradient or the memory was not finite: no update

    @property
    def hit_rate(self) -> float:
        return self.hits / self.evaluated if self.evaluated else float("nan")

    @property
    def mean_ndcg(self) -> float:
        return self.ndcg / self.evaluated if self.evaluated else float("nan")


def _finite(*tensors_or_nets: Tensor | torch.nn.Module) -> bool:
    """Whether every given tensor, and every gradient of the given networks, is finite."""
    checks = []
    for x in tensors_or_nets:
        if isinstance(x, torch.nn.Module):
            grads = [p.grad for p in x.parameters() if p.grad is not None]
            checks += [torch.isfinite(g._values() if g.is_sparse else g).all() for g in grads]
        else:
            checks.append(torch.isfinite(x.detach()).all())
    return bool(torch.stack(checks).all())


def window_seed(seed: int, window: int) -> int:
    """A generator seed per window, so a resumed run samples what an unbroken one would."""
    return (seed * 1_000_003 + window * 7_919 + 17) % (2**63 - 1)


class WindowTrainer:
    """The single writer of an MB-NMRN model: trains window by window on row ids.

    External ids are mapped to rows by the caller (see `model.recommender`); rows
    beyond the current tables make them grow. Randomness is drawn from a generator
    seeded by (seed, window), so training is reproducible across restarts.
    """

    def __init__(
        self, config: ModelConfig, seed: int = 0, device: str | torch.device = "cpu"
    ) -> None:
        self.config = config
        self.seed = seed
        self.device = torch.device(device)
        init = torch.Generator(device="cpu").manual_seed(seed)
        self.d = Discriminator(config, 0, 0, init).to(self.device)
        self.g = Generator(config, 0, 0, init).to(self.device)
        self.opt_d = NetAdam(self.d, config.lr, lazy=config.lazy_adam)
        self.opt_g = NetAdam(self.g, config.lr, lazy=config.lazy_adam)
        self.history = InteractionHistory(device=self.device)
        self.n_users = 0
        self.n_items = 0
        self.windows = 0
        # The value memory as state: M_t = write(base_values, base window) (see SPEC.md).
        self.base_values: Tensor | None = None  # L x r, detached
        self.base_users = torch.empty(0, dtype=torch.long, device=self.device)
        self.base_items = torch.empty(0, dtype=torch.long, device=self.device)
        self._current: Tensor | None = None
        self._norms: Tensor | None = None  # cache of _item_norms()
        self._norms_key: tuple | None = None

    # ---- growth -------------------------------------------------------------------------

    def grow(self, n_users: int, n_items: int) -> None:
        """Make room for rows [0, n_users) and [0, n_items); learned rows stay as they are."""
        seed = window_seed(self.seed, -1 - self.windows)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        std = self.config.init_std
        users_cap = grown_capacity(self.d.users.shape[0], n_users)
        items_cap = grown_capacity(self.d.items.shape[0], n_items)
        user_std = self.config.user_init_std  # ours: the discriminator's user rows only
        for net, opt in ((self.d, self.opt_d), (self.g, self.opt_g)):
            u_std = user_std if (net is self.d and user_std is not None) else std
            grow_rows(net, "users", users_cap, opt, u_std, gen)
            grow_rows(net, "items", items_cap, opt, std, gen)
        self.n_users = max(self.n_users, n_users)
        self.n_items = max(self.n_items, n_items)

    # ---- memory -------------------------------------------------------------------------

    def memory(self, grad: bool = False) -> Tensor:
        """Value memory for the next window (L, r): the last window written into its base."""
        if self.base_values is None:
            return self.d.initial_values
        if grad:
            return self.d.write(self.base_values, self.base_users, self.base_items)
        if self._current is None:
            with torch.no_grad():
                self._current = self.d.write(self.base_values, self.base_users, self.base_items)
        return self._current

    # ---- one window ---------------------------------------------------------------------

    def train_window(
        self,
        users: Tensor,
        items: Tensor,
        *,
        eval_candidates: int = 1000,
        eval_k: int = 10,
        eval_sample: int | None = None,
    ) -> WindowReport:
        """Score, then train on, one window of interactions given as row ids (H,) each.

        With `eval_sample`, at most that many of the window's known interactions, drawn
        uniformly, are scored (online metrics stay unbiased at a fraction of the cost).
        """
        start = time.perf_counter()
        users = users.to(self.device, torch.long)
        items = items.to(self.device, torch.long)
        if users.numel() == 0:
            raise ValueError("a window needs at least one interaction")
        known = (users < self.n_users) & (items < self.n_items)
        n_items_known = self.n_items
        self.grow(int(users.max()) + 1, int(items.max()) + 1)
        rng = torch.Generator(device=self.device).manual_seed(window_seed(self.seed, self.windows))

        # read memory: M_t, with the gradient flowing into the write that made it
        values = self.memory(grad=True)

        # test-then-train: rank each known positive among sampled candidates, drawn from
        # a generator of their own, so how much is evaluated never changes the training
        eval_rng = torch.Generator(device=self.device).manual_seed(
            window_seed(self.seed, self.windows) ^ _EVAL_STREAM
        )
        scored = known.nonzero().squeeze(1)
        if eval_sample is not None and scored.numel() > eval_sample:
            pick = torch.randperm(scored.numel(), generator=eval_rng, device=self.device)
            scored = scored[pick[:eval_sample]].sort().values
        with torch.no_grad():
            hits, ndcg, evaluated = self._evaluate(
                users[scored], items[scored], values, n_items_known, eval_candidates, eval_k,
                eval_rng,
            )

        # Algorithm 1's body; with steps_per_window > 1 (ours) it is repeated on the same
        # window with fresh negatives, the memory re-read from the updated parameters. A
        # non-finite step is not applied and ends the window; earlier steps stand.
        first = None
        written = values  # the memory of the last applied step becomes the next base
        for step in range(self.config.steps_per_window):
            if step > 0:
                values = self.memory(grad=True)
            d_loss, g_loss, hinge, ok = self._step(users, items, values, rng)
            if first is None:
                first = (d_loss, g_loss, hinge, ok)
            if not ok:
                break
            written = values
        d_loss, g_loss, hinge, finite = first  # report the first step (pre-update loss)
        values = written

        # write memory: this window becomes the base of the next window's memory
        if finite:
            self.base_values = values.detach()
            self.base_users, self.base_items = users, items
            self._current = None
            self.history.add(users, items)
        self.windows += 1
        return WindowReport(
            window=self.windows - 1,
            size=int(users.numel()),
            d_loss=float(d_loss.detach()),
            g_loss=float(g_loss.detach()),
            active=float((hinge > 0).float().mean()),
            evaluated=evaluated,
            hits=hits,
            ndcg=ndcg,
            seconds=time.perf_counter() - start,
            rolled_back=not finite,
        )

    def _step(
        self, users: Tensor, items: Tensor, values: Tensor, rng: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor, bool]:
        """One D and one G step on a window: (d_loss, g_loss, hinge, finite)."""
        # sample negatives: J candidates per interaction, one picked by the generator
        negatives, logp = self._sample_negatives(users, items, rng)

        # discriminator loss: hinge (Eq. 21)
        p, _ = self.d.read_users(users, values)
        d_pos = self.d.distances(p, items)
        d_neg = self.d.distances(p, negatives)
        hinge = torch.relu(self.config.margin + d_pos - d_neg)
        d_loss = hinge.mean()

        # generator loss: REINFORCE with reward -d_D(u, v-) (Eq. 12-14)
        reward = -d_neg.detach()
        if self.config.reward_baseline:
            reward = reward - reward.mean()
        g_loss = -(reward * logp).mean()

        # update D and G, unless something is not finite: then the step is not applied
        self.opt_d.zero_grad()
        self.opt_g.zero_grad()
        d_loss.backward()
        if logp.requires_grad:
            g_loss.backward()
        finite = _finite(d_loss, g_loss, values, self.d, self.g)
        if finite:
            self.opt_d.step()
            self.opt_g.step()
        return d_loss, g_loss, hinge, finite

    def _sample_negatives(
        self, users: Tensor, items: Tensor, rng: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """One negative per interaction (H,) and its log-probability under G (H,)."""
        h, j = users.numel(), self.config.candidates
        cands = torch.randint(0, self.n_items, (h, j), generator=rng, device=self.device)
        invalid = self.history.contains(users[:, None], cands) | (cands == items[:, None])
        invalid &= ~invalid.all(dim=1, keepdim=True)  # tiny catalogues: allow anything
        if self.config.use_generator:
            logits = -self.g.distances(users, cands)  # H x J
        else:
            logits = torch.zeros(h, j, device=self.device)
        logits = logits.masked_fill(invalid, float("-inf"))
        log_probs = torch.log_softmax(logits, dim=1)
        choice = torch.multinomial(log_probs.detach().exp(), 1, generator=rng)  # H x 1
        return cands.gather(1, choice).squeeze(1), log_probs.gather(1, choice).squeeze(1)

    def _evaluate(
        self,
        users: Tensor,
        items: Tensor,
        values: Tensor,
        n_items: int,
        candidates: int,
        k: int,
        rng: torch.Generator,
    ) -> tuple[int, float, int]:
        """Hits@k, summed NDCG@k and count for positives ranked among sampled candidates.

        Candidates are uniform over the known items, minus the user's own items; ties
        count against the positive.
        """
        n = users.numel()
        if n == 0 or n_items < 2 or candidates < 2:
            return 0, 0.0, 0
        cands = torch.randint(0, n_items, (n, candidates - 1), generator=rng, device=self.device)
        p, _ = self.d.read_users(users, values)
        catalogue = self.d.items[:n_items]  # M x r
        norms = self._item_norms()[:n_items]  # M
        beats = torch.empty(n, candidates - 1, dtype=torch.bool, device=self.device)
        if n_items <= 8 * candidates:
            # Small catalogue: squared distances to every item by one matrix product per
            # chunk, then look up the positive and the candidates in the same matrix.
            rows = torch.arange(_MATRIX_ROWS, device=self.device)
            for lo in range(0, n, _MATRIX_ROWS):
                hi = min(lo + _MATRIX_ROWS, n)
                d2 = squared_distances(p[lo:hi], catalogue, norms)  # chunk x M
                d_pos = d2[rows[: hi - lo], items[lo:hi]]  # chunk
                beats[lo:hi] = d2.gather(1, cands[lo:hi]) <= d_pos[:, None]
        else:
            # Large catalogue: ||p||^2 + ||v||^2 - 2 p.v for the gathered candidates only.
            p_norms = (p * p).sum(dim=1)  # n
            d_pos = p_norms + norms[items] - 2.0 * (p * catalogue[items]).sum(dim=1)
            for lo in range(0, n, _GATHER_ROWS):
                hi = min(lo + _GATHER_ROWS, n)
                v = embedding(cands[lo:hi], catalogue)  # chunk x (C - 1) x r
                dots = torch.bmm(v, p[lo:hi, :, None]).squeeze(-1)  # chunk x (C - 1)
                d_c = norms[cands[lo:hi]].sub_(dots, alpha=2.0).add_(p_norms[lo:hi, None])
                beats[lo:hi] = d_c <= d_pos[lo:hi, None]
        # Only candidates that beat the positive can change its rank, so only those are
        # checked against the user's own items (and the positive itself).
        rows, cols = beats.nonzero(as_tuple=True)
        beaten_by = cands[rows, cols]
        invalid = self.history.contains(users[rows], beaten_by) | (beaten_by == items[rows])
        ranks = beats.sum(dim=1) - torch.bincount(rows[invalid], minlength=n)
        hit = ranks < k
        gains = torch.where(hit, 1.0 / torch.log2(ranks.double() + 2.0), 0.0)
        return int(hit.sum()), float(gains.sum()), n

    def _item_norms(self) -> Tensor:
        """||v||^2 of every item row (M,), recomputed only when the table has changed
        (an optimiser step or growth bumps the tensor's version)."""
        items = self.d.items
        key = (id(items), items.data_ptr(), items._version, self.n_items)
        if self._norms_key != key:
            with torch.no_grad():
                catalogue = items[: self.n_items]
                self._norms = (catalogue * catalogue).sum(dim=1)
            self._norms_key = key
        return self._norms

    # ---- top-K --------------------------------------------------------------------------

    @torch.no_grad()
    def top_k(self, users: Tensor, k: int, exclude_seen: bool = False) -> tuple[Tensor, Tensor]:
        """The k nearest items (U, k) and their scores -d (U, k) for user rows (U,).

        With exclude_seen, a user's own items are left out; a row then holds fewer than
        k valid items only when the catalogue is that small (score -inf marks padding).
        """
        users = users.to(self.device, torch.long)
        k = min(k, self.n_items)
        values = self.memory()
        p, _ = self.d.read_users(users, values)  # U x r
        catalogue = self.d.items[: self.n_items]  # M x r
        norms = self._item_norms()  # M
        budget = _TOPK_BUDGET.get(self.device.type, _TOPK_BUDGET["cpu"])
        # blocks of (users x items) floats within the budget, at least 64 users a block
        item_block = max(1, min(self.n_items, budget // 64))
        block = (max(1, budget // item_block), item_block)
        seen = self.history.items_of(users) if exclude_seen else None
        d2, idx = nearest(p, catalogue, norms, k, block, seen)
        return idx, -torch.sqrt(d2)
