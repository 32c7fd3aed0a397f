"""Memory and time per window as the vocabularies grow (users and items to 1M), and the
checkpoint's size and write time against model size.

At each size point the Recommender's vocabularies hold that many users and items (filled
directly, then `trainer.grow`), and a few windows of H interactions are trained whose ids are
half Zipf-drawn known ids and half new ids, so the vocabularies keep growing. Sizes ascend in
one process: RSS is the process's VmRSS after the point's windows (memory freed by an earlier
point may not return to the OS, so it is an upper bound for small points).

`python -m bench.growth` or, small, `python -m bench.growth --sizes 1000,5000 --windows 1`.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import load, machine, rss_mib, write_results, zipf_ids


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_growth(sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000), windows: int = 3,
               window: int = 2048, eval_candidates: int = 1000, seed: int = 0,
               out_dir: Path | None = None) -> dict[str, Any]:
    """One row per size point: seconds per window, RSS, checkpoint bytes and write time."""
    import torch

    from model.recommender import Recommender
    from streams.settings import Settings
    from model.vocab import IdVocab
    from streams.checkpoint import Checkpoint, CheckpointStore

    info = machine()
    settings = Settings()  # the stream job's defaults
    rng = np.random.default_rng(seed)
    base_rss = rss_mib()
    rows: list[dict[str, Any]] = []
    for n in sizes:
        gc.collect()
        rec = Recommender(replace(settings.model_config(), window=window), seed, "cpu")
        t = time.perf_counter()
        rec.users = IdVocab(f"u{i}" for i in range(n))
        rec.items = IdVocab(f"i{i}" for i in range(n))
        rec.trainer.grow(n, n)
        setup_s = time.perf_counter() - t
        times, fresh = [], 0
        for _ in range(windows):
            half = window // 2
            known_u = zipf_ids(rng, half, n, 1.05)
            known_i = zipf_ids(rng, half, n, 1.2)
            new = np.arange(fresh, fresh + window - half) + n
            fresh += window - half
            users = [f"u{x}" for x in np.concatenate([known_u, new])]
            items = [f"i{x}" for x in np.concatenate([known_i, new])]
            t = time.perf_counter()
            rec.train_window(users, items, eval_candidates=eval_candidates,
                             eval_sample=settings.eval_sample)
            times.append(time.perf_counter() - t)
        rss = rss_mib()
        # checkpoint: state() then one atomic RocksDB write (sync on)
        t = time.perf_counter()
        tensors, meta, blobs = rec.state()
        state_s = time.perf_counter() - t
        model_bytes = sum(x.numel() * x.element_size() for x in tensors.values())
        blob_bytes = sum(len(b) for b in blobs.values())
        ckdir = Path(tempfile.mkdtemp(prefix="bench-growth-"))
        try:
            store = CheckpointStore(ckdir / "ckpt")
            t = time.perf_counter()
            store.save(Checkpoint(window=rec.windows, offsets={"t/0": 1}, tensors=tensors,
                                  meta=meta, blobs=blobs))
            save_s = time.perf_counter() - t
            store.close()
            disk = _dir_bytes(ckdir)
        finally:
            shutil.rmtree(ckdir, ignore_errors=True)
        rows.append({
            "users": len(rec.users), "items": len(rec.items), "windows": windows,
            "setup_s": setup_s, "window_s_mean": float(np.mean(times)),
            "window_s_max": float(np.max(times)), "events_per_s": window / float(np.mean(times)),
            "rss_mib": rss, "rss_over_start_mib": rss - base_rss,
            "model_tensor_mib": model_bytes / 2**20, "vocab_blob_mib": blob_bytes / 2**20,
            "state_s": state_s, "checkpoint_save_s": save_s,
            "checkpoint_disk_mib": disk / 2**20,
            "checkpoint_mib_per_s": (model_bytes + blob_bytes) / 2**20 / save_s,
            "load": load()})
        del rec, tensors, blobs
    result = {"machine": info, "window": window, "eval_candidates": eval_candidates,
              "torch_threads": torch.get_num_threads(), "rows": rows}
    write_results("growth", result, {"Growth": rows}, notes=[
        "model.recommender.Recommender on CPU with the stream job's model settings (r=32,"
        f" L=64, J=100, generator on, lazy Adam), H={window}, online evaluation of"
        f" {settings.eval_sample} interactions a window against {eval_candidates} candidates",
        "checkpoint = Recommender.state() + streams.checkpoint.CheckpointStore.save (one"
        " RocksDB write batch, sync); the stream job does this at most every"
        " MBNMRN_CHECKPOINT_INTERVAL_S, or 10x the last checkpoint's duration if longer",
        "RSS measured in one process with ascending sizes (an upper bound for small points)",
    ], out_dir=out_dir)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__)
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--window", type=int, default=2048)
    p.add_argument("--eval-candidates", type=int, default=1000)
    p.add_argument("--out-dir", type=Path)
    a = p.parse_args(argv)
    return run_growth(tuple(int(x) for x in a.sizes.split(",")), a.windows, a.window,
                      a.eval_candidates, out_dir=a.out_dir)


if __name__ == "__main__":
    main()
