"""Top-K serving cost: exact K nearest items by squared distance (matmul + torch.topk,
chunked over items) for one user and for a batch of users, over synthetic catalogues; and the
model's own `WindowTrainer.top_k` (the same method in one item block, with the memory read
of the users) on a trainer grown to size.

`python -m bench.serving` or, small, `python -m bench.serving --items 1000,5000 --repeats 3`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import load, machine, percentiles, write_results
from model.memory import nearest

# (users, items) per matmul block: on CPU 64 x 32,768 floats (8 MiB, stays in cache; a
# 128 MiB block ran about 3x slower, the pass being memory-bound), on a GPU 128 MiB
CHUNKS = {"cpu": (64, 32_768), "cuda": (128, 262_144)}


@torch.no_grad()
def exact_top_k(queries: torch.Tensor, items: torch.Tensor, item_sq: torch.Tensor,
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores -d^2, item rows) of the k nearest items, (U, k) each, for queries (U, r),
    items (M, r), item_sq (M,) = squared norms: `model.memory.nearest` in the blocks of
    CHUNKS. Exact."""
    d2, idx = nearest(queries, items, item_sq, k, CHUNKS.get(items.device.type, CHUNKS["cpu"]))
    return -d2, idx


def _time_calls(fn, repeats: int, device: str) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return out


def _row(method: str, device: str, m: int, users: int, times: list[float]) -> dict[str, Any]:
    p = percentiles(times)
    return {"method": method, "device": device, "items": m, "users_per_call": users,
            "calls": len(times), "p50_ms": p["p50"] * 1e3, "p99_ms": p["p99"] * 1e3,
            "users_per_s": users / p["p50"], "load": load()}


def run_serving(items: tuple[int, ...] = (10_000, 100_000, 1_000_000), dim: int = 32,
                k: int = 10, batch: int = 1000, repeats: int = 30, batch_repeats: int = 5,
                trainer: bool = True,
                devices: tuple[str, ...] | None = None, budgets_ms: tuple[float, ...] = (10, 50),
                out_dir: Path | None = None) -> dict[str, Any]:
    """One row per (method, device, catalogue size, users per call)."""
    info = machine()
    devices = devices or (("cpu", "cuda") if torch.cuda.is_available() else ("cpu",))
    gen = torch.Generator().manual_seed(0)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for m in items:
        cat = torch.randn(m, dim, generator=gen) * 0.1
        qs = torch.randn(batch, dim, generator=gen) * 0.1
        for dev in devices:
            c, q = cat.to(dev), qs.to(dev)
            sq = (c * c).sum(1)
            rows.append(_row("exact matmul+topk", dev, m, 1, _time_calls(
                lambda: exact_top_k(q[:1], c, sq, k), repeats, dev)))
            rows.append(_row("exact matmul+topk", dev, m, batch, _time_calls(
                lambda: exact_top_k(q, c, sq, k), batch_repeats, dev)))
        if trainer:
            rows += _trainer_rows(m, dim, k, batch, repeats, batch_repeats)
    # where an approximate index would pay: exact single-user cost grows linearly in M
    cpu1 = [r for r in rows if r["method"].startswith("exact") and r["device"] == "cpu"
            and r["users_per_call"] == 1]
    payoff = []
    if cpu1:
        big = max(cpu1, key=lambda r: r["items"])
        ms_per_item = big["p50_ms"] / big["items"]
        for b in budgets_ms:
            payoff.append({"budget_ms": b, "exact_1_user_max_items_at_p50":
                           int(b / ms_per_item), "ms_per_million_items": ms_per_item * 1e6})
        batch_rows = [r for r in rows if r["method"].startswith("exact") and r["device"] == "cpu"
                      and r["users_per_call"] == batch]
        if batch_rows:
            bb = max(batch_rows, key=lambda r: r["items"])
            notes.append(f"exact batch of {batch} over {bb['items']} items: {bb['p50_ms']:.0f} ms"
                         f" p50, {bb['users_per_s']:.0f} users/s on CPU")
    result = {"machine": info, "dim": dim, "k": k, "rows": rows, "approximate_index": payoff}
    write_results("serving", result, {"Top-K latency": rows,
                                      "Exact single-user budget (linear in catalogue size)":
                                      payoff},
                  notes=notes + [
                      "synthetic N(0, 0.1^2) embeddings, r=%d, K=%d; exact = squared distance"
                      " via one matmul per %d-user x %d-item block (CPU) + torch.topk, merged"
                      % ((dim, k) + CHUNKS["cpu"]),
                      "WindowTrainer.top_k includes the memory read of the users (Eq. 3) and"
                      " ranks in blocks of at most 2^21 user x item floats (64 users x 32,768"
                      " items on CPU), with the item norms cached between model updates",
                  ], out_dir=out_dir)
    return result


def _trainer_rows(m: int, dim: int, k: int, batch: int, repeats: int,
                  batch_repeats: int) -> list[dict[str, Any]]:
    from model.config import ModelConfig
    from model.trainer import WindowTrainer

    t = WindowTrainer(ModelConfig(dim=dim), 0, "cpu")
    t.grow(batch, m)
    users = torch.arange(batch)
    rows = [_row("WindowTrainer.top_k", "cpu", m, 1,
                 _time_calls(lambda: t.top_k(users[:1], k), repeats, "cpu"))]
    rows.append(_row("WindowTrainer.top_k", "cpu", m, batch,
                     _time_calls(lambda: t.top_k(users, k), batch_repeats, "cpu")))
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__)
    p.add_argument("--items", default="10000,100000,1000000")
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--batch-repeats", type=int, default=5)
    p.add_argument("--no-trainer", action="store_true")
    p.add_argument("--out-dir", type=Path)
    a = p.parse_args(argv)
    return run_serving(tuple(int(x) for x in a.items.split(",")), a.dim, a.k, a.batch,
                       a.repeats, a.batch_repeats, not a.no_trainer, out_dir=a.out_dir)


if __name__ == "__main__":
    main()
