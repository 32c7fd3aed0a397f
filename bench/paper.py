"""Reproduce the paper's offline experiments on a shared dataset (Table 4, Fig. 3-7).

    python -m bench.paper --dataset online-retail-uci [--quick] [--seeds 3] [--rolling 7]

Writes bench/results/paper/<dataset>/: table.md, table.csv, full_ranking.csv, speed.csv,
settings.json and PNG figures. See model/evaluation.py for the protocol.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bench.methods import Method, methods
from bench.speed import run_speed
from model.evaluation import Split, evaluate, filter_table, make_candidates, split_by_day
from streams.datasets import load_dataset

logger = logging.getLogger(__name__)
KS = (1, 3, 10)
K_CURVE = tuple(range(1, 51))
RESULTS = Path(__file__).resolve().parent / "results" / "paper"


@dataclass(frozen=True)
class Variant:
    """One way of reading a dataset: which rows, which time zone, which test day."""

    name: str
    since: str | None = None
    until: str | None = None
    test_day: str | None = None
    utc_offset_hours: float = 0.0
    event_types: tuple[str, ...] = ()
    note: str = ""
    extras: bool = True  # speed, H and Q sweeps on this variant


VARIANTS: dict[str, list[Variant]] = {
    "online-retail-uci": [Variant(
        "purchase", since="2011-11-01", until="2011-12-09", test_day="2011-12-08",
        note="last month of purchases; test 2011-12-08 because 2011-12-09 is a half day")],
    "taobao-userbehavior-head": [
        Variant("buy", utc_offset_hours=8, event_types=("buy",), extras=False,
                note="buy events only: the test day has 13 interactions from 12 users; "
                     "the numbers are too noisy to rank methods"),
        Variant("all", utc_offset_hours=8,
                note="all behaviours (pv, cart, fav, buy) as interactions, train and test")],
}


def _progress(iterable: Any, **kw: Any) -> Any:
    return tqdm(iterable, disable=not sys.stderr.isatty(), **kw)


def tune(method: Method, split: Split, seed: int = 0) -> tuple[dict[str, Any], list[dict], Any]:
    """Best grid point and epoch count by validation NDCG@10 (1000 candidates), and the
    trained model when it is exactly the chosen one (best epoch = last), else None."""
    cands = make_candidates(split, split.valid, 1000, seed=seed)
    trials: list[dict[str, Any]] = []
    models: list[Any] = []
    for point in method.grid:
        model = method.build(seed=seed, epochs=method.max_epochs, **point)

        def on_epoch(epoch: int, point: dict = point, model: Any = model) -> None:
            trials.append({**point, "epochs": epoch, **evaluate(model, cands, (10,))})

        model.fit(split.train_users, split.train_items, split.n_users, split.n_items, on_epoch)
        models.append(model)
    best_i = max(range(len(trials)), key=lambda i: trials[i]["NDCG@10"])
    best = trials[best_i]
    chosen = {k: v for k, v in best.items() if not k.startswith(("HR@", "NDCG@"))}
    reuse = models[best_i // method.max_epochs] if best["epochs"] == method.max_epochs else None
    return chosen, trials, reuse


def _fit(method: Method, chosen: dict[str, Any], split: Split, seed: int, **over: Any) -> Any:
    model = method.build(seed=seed, **{**chosen, **over})
    return model.fit(split.train_users, split.train_items, split.n_users, split.n_items)


def run_variant(dataset: str, variant: Variant, seeds: int, quick: bool, nmrn_seeds: int,
                speed: bool, rolling: int) -> dict[str, Any]:
    """Tune, then test every method over seeds; sweeps and speed on `extras` variants."""
    table = filter_table(load_dataset(dataset, since=variant.since, until=variant.until),
                         list(variant.event_types) or None)
    split = split_by_day(table, variant.test_day, variant.utc_offset_hours)
    test_c = make_candidates(split, split.test, 1000, seed=0)
    full_c = make_candidates(split, split.test, None)
    out: dict[str, Any] = {"counts": split.counts(), "days": split.days, "grid": {},
                           "chosen": {}, "trials": {}, "test": {}, "full": {}, "seconds": {}}
    kept: dict[str, Any] = {}
    for method in _progress(methods(quick, nmrn_seeds), desc=f"{dataset}/{variant.name}"):
        start = time.perf_counter()
        chosen, trials, reuse = tune(method, split)
        out["grid"][method.name] = {"points": method.grid, "max_epochs": method.max_epochs}
        out["chosen"][method.name], out["trials"][method.name] = chosen, trials
        runs, fulls = [], []
        for seed in range(method.seeds or seeds):
            reused = seed == 0 and reuse is not None
            model = reuse if reused else _fit(method, chosen, split, seed)
            runs.append(evaluate(model, test_c, K_CURVE))
            fulls.append(evaluate(model, full_c, (1, 3, 10, 50)))
            if seed == 0:
                kept[method.name] = model
        out["test"][method.name], out["full"][method.name] = runs, fulls
        out["seconds"][method.name] = time.perf_counter() - start
        logger.info("%s/%s %s: chosen %s, test NDCG@10 %.4f, %.0f s", dataset, variant.name,
                    method.name, chosen, np.mean([r["NDCG@10"] for r in runs]),
                    out["seconds"][method.name])
    if variant.extras:
        out["q_sweep"] = _q_sweep(split, kept, quick)
        attn = methods(quick)[-1]
        out["h_sweep"] = _h_sweep(split, attn, out["chosen"][attn.name], quick)
        if speed:
            out["speed"] = run_speed(split, (256, 512) if quick else (256, 512, 1024, 2048),
                                     max_epochs=2 if quick else 8,
                                     nmrn_interactions=300 if quick else 5000)
    if rolling:
        out["rolling"] = _rolling(dataset, table, variant, out["chosen"], rolling, quick)
    return out


def _q_sweep(split: Split, kept: dict[str, Any], quick: bool) -> dict[str, dict]:
    """HR/NDCG@{1,10} of the seed-0 MB-NMRN-attn and LightGCN against Q (Fig. 6-7)."""
    qs = [100, 1000] if quick else [50, 100, 250, 500, 1000, 2000, 4000, 10000]
    qs = sorted({min(q, split.n_items) for q in qs})
    res: dict[str, dict] = {}
    for name in ("MB-NMRN-attn", "LightGCN"):
        res[name] = {q: evaluate(kept[name], make_candidates(split, split.test, q, seed=0),
                                 (1, 10)) for q in qs}
    return res


def _h_sweep(split: Split, method: Method, chosen: dict[str, Any], quick: bool) -> dict:
    """MB-NMRN-attn test metrics against H with the values chosen at H=2048 (Fig. 5)."""
    cands = make_candidates(split, split.test, 1000, seed=0)
    hs = (256, 512) if quick else (256, 512, 1024, 2048)
    return {h: evaluate(_fit(method, chosen, split, 0, window=h), cands, K_CURVE) for h in hs}


def _rolling(dataset: str, table: Any, variant: Variant, chosen: dict[str, dict],
             days: int, quick: bool) -> dict[str, list[dict]]:
    """Each of the last `days` days as the test day, trained on every day before it."""
    ts = table["timestamp"].to_numpy()
    all_days = np.unique(np.floor((ts + variant.utc_offset_hours * 3600) / 86400)).astype(int)
    last = [d for d in all_days if variant.test_day is None
            or d <= np.datetime64(variant.test_day, "D").astype(int)][-days:]
    res: dict[str, list[dict]] = {}
    for day in _progress(last, desc="rolling"):
        split = split_by_day(table, str(np.datetime64(int(day), "D")), variant.utc_offset_hours)
        cands = make_candidates(split, split.test, 1000, seed=0)
        for method in methods(quick):
            if method.name == "NMRN":  # serial loop: too slow for 7 refits here
                continue
            model = _fit(method, chosen[method.name], split, 0)
            res.setdefault(method.name, []).append(
                {"test_day": str(np.datetime64(int(day), "D")), **evaluate(model, cands, KS)})
    return res


def run(dataset: str, out_dir: Path | None = None, seeds: int = 3, quick: bool = False,
        nmrn_seeds: int = 1, speed: bool = True, rolling: int = 0) -> dict[str, Any]:
    """Run every variant of `dataset` and write the result files; returns the results."""
    if dataset not in VARIANTS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(VARIANTS)}")
    out_dir = Path(out_dir) if out_dir else RESULTS / dataset
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = {v.name: run_variant(dataset, v, 1 if quick else seeds, quick, nmrn_seeds,
                                   speed and v.extras, rolling) for v in VARIANTS[dataset]}
    from bench.report import write_all  # noqa: PLC0415 (keeps matplotlib out of imports)

    settings = {
        "dataset": dataset, "seeds": 1 if quick else seeds, "nmrn_seeds": nmrn_seeds,
        "quick": quick, "candidate_seed": 0, "seconds": time.perf_counter() - start,
        "variants": {v.name: {"note": v.note, "since": v.since, "until": v.until,
                              "test_day": v.test_day, "utc_offset_hours": v.utc_offset_hours,
                              "event_types": list(v.event_types)} for v in VARIANTS[dataset]},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "torch": torch.__version__, "numpy": np.__version__,
    }
    write_all(out_dir, results, settings)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, choices=sorted(VARIANTS))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--nmrn-seeds", type=int, default=1, help="NMRN is a serial loop: slow")
    ap.add_argument("--quick", action="store_true", help="1 seed, tiny grid, 2 epochs")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--rolling", type=int, default=0, help="last N days as test days")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    return run(args.dataset, args.out, args.seeds, args.quick, args.nmrn_seeds,
               not args.no_speed, args.rolling)


if __name__ == "__main__":
    main()
