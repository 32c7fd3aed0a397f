"""Online (test-then-train) quality of the streaming MB-NMRN against online Top-Pop.

One chronological pass, window by window, as the stream job trains: each window's
interactions are scored with the model as it stands before it trains on them (999
uniform candidates from the known items, minus the user's history and the positive;
ties count against the positive). Top-Pop ("most bought so far") is scored under the
identical protocol. Personalisation: mean pairwise Jaccard of the top-10 lists of 100
sampled users at the end of the stream (1.0 = everyone gets the same list).

    python -m bench.stream_quality                       # screening grid, one seed (~10 min)
    python -m bench.stream_quality --final --seeds 3     # finalists + Top-Pop, three seeds
    python -m bench.stream_quality --stream taobao --final --only "paper defaults"
    python -m bench.stream_quality --only "residual, T 0.01"   # any named settings
    python -m bench.stream_quality --final --seeds 3 --only "residual, T 0.01" \
        "residual, T 0.01, lazy Adam" --out bench/results/stream_quality_lazy_adam.json

Results go to bench/results/stream_quality.json under "<stream>/<screen|final>".
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from model.config import ModelConfig
from model.recommender import Recommender
from model.trainer import WindowTrainer

RESULTS = Path(__file__).parent / "results" / "stream_quality.json"

STREAMS = {
    "online-retail": dict(name="online-retail-uci", since="2011-11-01", until="2011-12-09"),
    "taobao": dict(name="taobao-userbehavior-stream"),
}


def load_stream(stream: str) -> tuple[list[str], list[str]]:
    from streams.datasets import load_dataset

    spec = dict(STREAMS[stream])
    table = load_dataset(spec.pop("name"), **spec)
    return table["user_id"].to_pylist(), table["item_id"].to_pylist()


def _rows(ids: list[str]) -> np.ndarray:
    """Row ids in order of first appearance (what `model.vocab.IdVocab` assigns)."""
    index: dict[str, int] = {}
    return np.array([index.setdefault(x, len(index)) for x in ids], dtype=np.int64)


def online_toppop(
    user_ids: list[str], item_ids: list[str], window: int, *, seed: int = 0,
    candidates: int = 1000, k: int = 10,
) -> dict:
    """Online Top-Pop (item counts of the windows before) under the trainer's protocol."""
    users, items = _rows(user_ids), _rows(item_ids)
    counts = np.zeros(items.max() + 1)
    seen = np.zeros(0, dtype=np.int64)  # sorted packed (user << 32 | item) keys
    n_users = n_items = 0
    hits = evaluated = 0
    ndcg = 0.0
    split = {True: [0, 0], False: [0, 0]}  # repeat pair? -> [hits, evaluated]
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for w, lo in enumerate(range(0, len(users), window)):
        u, i = users[lo : lo + window], items[lo : lo + window]
        known = (u < n_users) & (i < n_items)
        if known.any() and n_items >= 2:
            ku, ki = u[known], i[known]
            cands = rng.integers(0, n_items, (len(ku), candidates - 1))
            query = (ku[:, None] << 32) | cands
            pos = np.searchsorted(seen, query).clip(max=max(len(seen) - 1, 0))
            invalid = (cands == ki[:, None])
            if len(seen):
                invalid |= seen[pos] == query
            beats = (counts[cands] >= counts[ki][:, None]) & ~invalid
            ranks = beats.sum(axis=1)
            hit = ranks < k
            hits += int(hit.sum())
            ndcg += float((1.0 / np.log2(ranks[hit] + 2.0)).sum())
            evaluated += len(ku)
            key = (ku << 32) | ki
            repeat = seen[np.searchsorted(seen, key).clip(max=max(len(seen) - 1, 0))] == key \
                if len(seen) else np.zeros(len(ku), bool)
            for flag in (True, False):
                split[flag][0] += int(hit[repeat == flag].sum())
                split[flag][1] += int((repeat == flag).sum())
        np.add.at(counts, i, 1)
        seen = np.unique(np.concatenate([seen, (u << 32) | i]))
        n_users, n_items = max(n_users, u.max() + 1), max(n_items, i.max() + 1)
    return dict(setting="online Top-Pop", hr10=hits / evaluated, ndcg10=ndcg / evaluated,
                jaccard=1.0, seconds=time.perf_counter() - start, evaluated=evaluated,
                **_split_fields(split))


def _split_fields(split: dict) -> dict:
    (rh, rn), (nh, nn) = split[True], split[False]
    return dict(repeat_share=rn / max(rn + nn, 1), hr10_repeat=rh / max(rn, 1),
                hr10_new=nh / max(nn, 1))


class SplitTrainer(WindowTrainer):
    """A WindowTrainer that also counts online hits separately for repeat (user, item) pairs
    (seen in an earlier window) and new pairs. It re-draws `_evaluate`'s candidates from the
    saved generator state (its first draw), so the training run itself is unchanged."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.split = {True: [0, 0], False: [0, 0]}

    def _evaluate(self, users, items, values, n_items, candidates, k, rng):
        state = rng.get_state()
        out = super()._evaluate(users, items, values, n_items, candidates, k, rng)
        if out[2]:
            again = torch.Generator(device=self.device).set_state(state)
            cands = torch.randint(0, n_items, (users.numel(), candidates - 1), generator=again,
                                  device=self.device)
            invalid = self.history.contains(users[:, None], cands) | (cands == items[:, None])
            p, _ = self.d.read_users(users, values)
            d_pos = self.d.distances(p, items)
            hit = ((self.d.distances(p, cands) <= d_pos[:, None]) & ~invalid).sum(1) < k
            assert int(hit.sum()) == out[0], "SplitTrainer out of step with _evaluate"
            repeat = self.history.contains(users, items)
            for flag in (True, False):
                self.split[flag][0] += int(hit[repeat == flag].sum())
                self.split[flag][1] += int((repeat == flag).sum())
        return out


def list_jaccard(rec: Recommender, user_ids: list[str], n: int = 100, k: int = 10,
                 seed: int = 0) -> float:
    """Mean pairwise Jaccard of the top-k lists (own items not excluded) of n sampled users."""
    pool = sorted(set(user_ids))
    rng = np.random.default_rng(seed)
    chosen = [pool[j] for j in rng.choice(len(pool), size=min(n, len(pool)), replace=False)]
    lists = [set(r.item_id for r in v) for v in rec.recommend(chosen, k).values()]
    pairs = [len(a & b) / len(a | b) for a, b in itertools.combinations(lists, 2)]
    return float(np.mean(pairs))


def run_model(user_ids: list[str], item_ids: list[str], config: ModelConfig, seed: int = 0,
              name: str = "") -> dict:
    """One test-then-train pass of the Recommender; online HR@10/NDCG@10 over the stream."""
    torch.manual_seed(seed)
    trainer = SplitTrainer(config, seed)
    rec = Recommender(config, seed=seed, trainer=trainer)
    hits = evaluated = 0
    ndcg = 0.0
    h = config.window
    start = time.perf_counter()
    for lo in range(0, len(user_ids), h):
        report = rec.train_window(user_ids[lo : lo + h], item_ids[lo : lo + h])
        hits, evaluated = hits + report.hits, evaluated + report.evaluated
        ndcg += report.ndcg
    seconds = time.perf_counter() - start
    return dict(setting=name, seed=seed, hr10=hits / evaluated, ndcg10=ndcg / evaluated,
                jaccard=list_jaccard(rec, user_ids), seconds=seconds, evaluated=evaluated,
                **_split_fields(trainer.split),
                config={k: v for k, v in config.to_dict().items()
                        if v != getattr(ModelConfig(), k)})


PAPER = ModelConfig()

# (name, config overrides): the screening grid, one seed each
SCREEN: list[tuple[str, dict]] = [
    ("paper defaults", {}),
    ("lr 1e-2", dict(lr=1e-2)),
    ("margin 0.5", dict(margin=0.5)),
    ("margin 0.1", dict(margin=0.1)),
    ("steps 4", dict(steps_per_window=4)),
    ("H 512", dict(window=512)),
    ("H 256", dict(window=256)),
    ("T 0.05", dict(read_temperature=0.05)),
    ("T 0.01", dict(read_temperature=0.01)),
    ("user/key std 0.1", dict(user_init_std=0.1, key_init_std=0.1)),
    ("user/key std 1.0", dict(user_init_std=1.0, key_init_std=1.0)),
    ("residual", dict(user_residual=True)),
    ("residual, lr 1e-2", dict(user_residual=True, lr=1e-2)),
    ("no generator", dict(use_generator=False)),
    ("reward baseline", dict(reward_baseline=True)),
    ("conv", dict(aggregator="conv")),
]


# second round: combinations around the screening's winners
ROUND2: list[tuple[str, dict]] = [
    ("residual, steps 4", dict(user_residual=True, steps_per_window=4)),
    ("residual, H 512", dict(user_residual=True, window=512)),
    ("residual, lr 3e-3", dict(user_residual=True, lr=3e-3)),
    ("residual, user std 0.1", dict(user_residual=True, user_init_std=0.1)),
    ("residual, T 0.01", dict(user_residual=True, read_temperature=0.01)),
    ("residual, no generator", dict(user_residual=True, use_generator=False)),
    ("residual, margin 0.1", dict(user_residual=True, margin=0.1)),
    ("residual, steps 4, H 512", dict(user_residual=True, steps_per_window=4, window=512)),
    ("steps 4, H 512", dict(steps_per_window=4, window=512)),
    ("T 0.01, steps 4", dict(read_temperature=0.01, steps_per_window=4)),
]

# third round: residual + sharp read attention, and the init scale
ROUND3: list[tuple[str, dict]] = [
    ("init std 1e-3", dict(init_std=1e-3)),
    ("residual, init std 1e-3", dict(user_residual=True, init_std=1e-3)),
    ("residual, T 0.01, H 512", dict(user_residual=True, read_temperature=0.01, window=512)),
    ("T 0.01, H 512", dict(read_temperature=0.01, window=512)),
    ("residual, T 0.01, steps 2", dict(user_residual=True, read_temperature=0.01,
                                       steps_per_window=2)),
    ("residual, T 0.003", dict(user_residual=True, read_temperature=0.003)),
    ("residual, T 0.01, lr 3e-3", dict(user_residual=True, read_temperature=0.01, lr=3e-3)),
    ("residual, T 0.01, no generator", dict(user_residual=True, read_temperature=0.01,
                                            use_generator=False)),
]

# fourth round: a margin small enough for the hinge to switch off
ROUND4: list[tuple[str, dict]] = [
    ("margin 0.01", dict(margin=0.01)),
    ("residual, T 0.01, margin 0.01", dict(user_residual=True, read_temperature=0.01,
                                           margin=0.01)),
    ("residual, T 0.01, steps 2, margin 0.01", dict(user_residual=True, read_temperature=0.01,
                                                    steps_per_window=2, margin=0.01)),
    ("residual, T 0.01, margin 0.03", dict(user_residual=True, read_temperature=0.01,
                                           margin=0.03)),
]

# fifth round: more steps with the sharp, residual read
ROUND5: list[tuple[str, dict]] = [
    ("residual, T 0.01, steps 3", dict(user_residual=True, read_temperature=0.01,
                                       steps_per_window=3)),
    ("residual, T 0.003, steps 2", dict(user_residual=True, read_temperature=0.003,
                                        steps_per_window=2)),
    ("residual, T 0.01, steps 2, no generator", dict(user_residual=True, read_temperature=0.01,
                                                     steps_per_window=2, use_generator=False)),
    ("steps 2", dict(steps_per_window=2)),
    ("residual, steps 2", dict(user_residual=True, steps_per_window=2)),
]

# finalists, run with several seeds (--final --seeds 3)
FINAL: list[tuple[str, dict]] = [
    ("paper defaults", {}),
    ("residual, T 0.01", dict(user_residual=True, read_temperature=0.01)),
    ("residual, T 0.01, no generator", dict(user_residual=True, read_temperature=0.01,
                                            use_generator=False)),
    ("residual, T 0.01, steps 2", dict(user_residual=True, read_temperature=0.01,
                                       steps_per_window=2)),
    ("residual, T 0.01, H 512", dict(user_residual=True, read_temperature=0.01, window=512)),
    ("residual, steps 2", dict(user_residual=True, steps_per_window=2)),
    ("residual, T 0.01, steps 2, no generator", dict(user_residual=True, read_temperature=0.01,
                                                     steps_per_window=2, use_generator=False)),
    # the stream job's defaults since lazy Adam (bench/results/stream_quality_lazy_adam.json)
    ("residual, T 0.01, lazy Adam", dict(user_residual=True, read_temperature=0.01,
                                         lazy_adam=True)),
    ("residual, T 0.01, lazy Adam, lr 3e-3", dict(user_residual=True, read_temperature=0.01,
                                                  lazy_adam=True, lr=3e-3)),
    ("residual, T 0.01, lazy Adam, lr 1e-2", dict(user_residual=True, read_temperature=0.01,
                                                  lazy_adam=True, lr=1e-2)),
    ("residual, T 0.01, lazy Adam, lr 3e-2", dict(user_residual=True, read_temperature=0.01,
                                                  lazy_adam=True, lr=3e-2)),
]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stream", default="online-retail", choices=sorted(STREAMS))
    ap.add_argument("--only", nargs="*", help="names of settings to run (default: all)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-toppop", action="store_true", help="skip the Top-Pop rows")
    ap.add_argument("--final", action="store_true", help="only the finalists (use --seeds 3)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    user_ids, item_ids = load_stream(args.stream)
    ap_grid = FINAL if args.final else SCREEN + ROUND2 + ROUND3 + ROUND4 + ROUND5
    grid = [(n, o) for n, o in ap_grid if not args.only or n in args.only]
    rows = []
    windows = sorted({replace(PAPER, **o).window for _, o in grid})
    for h in windows if not args.no_toppop else []:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            row = online_toppop(user_ids, item_ids, h, seed=seed)
            row["setting"] += f" (H {h})"
            row["seed"] = seed
            rows.append(row)
            print(_fmt(row), flush=True)
    for name, overrides in grid:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            row = run_model(user_ids, item_ids, replace(PAPER, **overrides), seed, name)
            rows.append(row)
            print(_fmt(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    old[f"{args.stream}/{'final' if args.final else 'screen'}"] = rows
    args.out.write_text(json.dumps(old, indent=1))


def _fmt(row: dict) -> str:
    return (f"{row['setting']:<40} seed {row.get('seed', '-')!s:>2}  HR@10 {row['hr10']:.4f}  "
            f"NDCG@10 {row['ndcg10']:.4f}  Jaccard {row['jaccard']:.3f}  "
            f"HR repeat/new {row['hr10_repeat']:.3f}/{row['hr10_new']:.3f}  "
            f"{row['seconds']:6.1f} s")


if __name__ == "__main__":
    main()
