"""Training throughput of the window trainer: events trained per second, MB-NMRN-conv and
MB-NMRN-attn at H = 256..4096 against interaction-wise NMRN, on the same stream.

    python -m bench.train_speed                      # Online Retail month, ~3 min on 2 cores
    python -m bench.train_speed --stream taobao --windows 512,2048

MB-NMRN runs `model.trainer.WindowTrainer` as the stream job does (its default settings:
generator on, lazy Adam, user residual, T = 0.01) over the whole stream once, twice: with
the job's online evaluation (512 interactions a window against 1000 candidates) and with
none. NMRN (`model.nmrn.NMRN`: one memory write and one WARP step per interaction, dense
Adam as in the paper) is timed on its first `--nmrn-events` interactions. Both on the
same device, in the same process, one after the other. Writes bench/results/train_speed.json
and .md.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import machine, write_results

WINDOWS = (256, 512, 1024, 2048, 4096)


def _rows(ids: list[str]) -> np.ndarray:
    index: dict[str, int] = {}
    return np.array([index.setdefault(x, len(index)) for x in ids], dtype=np.int64)


def mbnmrn_rate(users: np.ndarray, items: np.ndarray, aggregator: str, window: int,
                device: str, evaluate: bool, seed: int = 0) -> dict[str, Any]:
    from model.trainer import WindowTrainer
    from streams.settings import Settings

    s = Settings()
    config = replace(s.model_config(), aggregator=aggregator, window=window)
    trainer = WindowTrainer(config, seed, device)
    u, i = torch.from_numpy(users), torch.from_numpy(items)
    seconds = 0.0
    for lo in range(0, len(users), window):
        start = time.perf_counter()
        trainer.train_window(u[lo : lo + window], i[lo : lo + window],
                             eval_candidates=s.eval_candidates if evaluate else 0,
                             eval_sample=s.eval_sample)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
    return {"method": f"MB-NMRN-{aggregator}", "H": window, "online_eval": evaluate,
            "events": len(users), "seconds": seconds, "events_per_s": len(users) / seconds}


def nmrn_rate(users: np.ndarray, items: np.ndarray, n: int, seed: int = 0) -> dict[str, Any]:
    from model.nmrn import NMRN

    m = min(n, len(users))
    start = time.perf_counter()
    NMRN(seed=seed, max_interactions=m).fit(users, items, int(users.max()) + 1,
                                            int(items.max()) + 1)
    seconds = time.perf_counter() - start
    return {"method": "NMRN", "H": 1, "online_eval": False, "events": m, "seconds": seconds,
            "events_per_s": m / seconds}


def run_train_speed(stream: str = "online-retail", windows: tuple[int, ...] = WINDOWS,
                    nmrn_events: int = 3000, limit: int | None = None,
                    out_dir: Path | None = None) -> dict[str, Any]:
    from bench.stream_quality import load_stream

    info = machine()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    user_ids, item_ids = load_stream(stream)
    users, items = _rows(user_ids[:limit]), _rows(item_ids[:limit])
    rows = [nmrn_rate(users, items, nmrn_events)]
    for aggregator in ("conv", "attn"):
        for h in windows:
            for evaluate in (False, True):
                rows.append(mbnmrn_rate(users, items, aggregator, h, device, evaluate))
    nmrn = rows[0]["events_per_s"]
    for r in rows:
        r["ratio_to_nmrn"] = r["events_per_s"] / nmrn
        r["device"] = device
    at = {r["method"]: r["ratio_to_nmrn"] for r in rows
          if r["H"] == 2048 and not r["online_eval"]}
    result = {"machine": info, "stream": stream, "events": len(users),
              "users": int(users.max()) + 1, "items": int(items.max()) + 1,
              "device": device, "rows": rows, "speedup_vs_nmrn_h2048": at}
    write_results("train_speed", result, {"Events trained per second": rows}, notes=[
        f"stream {stream}: {len(users):,} events, {result['users']:,} users, "
        f"{result['items']:,} items; one pass; torch threads {torch.get_num_threads()}",
        "MB-NMRN: WindowTrainer with the stream job's default settings; online_eval = the"
        " job's test-then-train scoring (512 interactions a window, 1000 candidates) included",
        f"NMRN: model.nmrn.NMRN on its first {rows[0]['events']:,} interactions (dense Adam,"
        " one write and one WARP step per interaction)",
        "ratio_to_nmrn: events/s over NMRN's, same process and device",
    ], out_dir=out_dir)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__)
    p.add_argument("--stream", default="online-retail", choices=("online-retail", "taobao"))
    p.add_argument("--windows", default=",".join(map(str, WINDOWS)))
    p.add_argument("--nmrn-events", type=int, default=3000)
    p.add_argument("--limit", type=int, help="first N events only (smoke runs)")
    p.add_argument("--out-dir", type=Path)
    a = p.parse_args(argv)
    return run_train_speed(a.stream, tuple(int(w) for w in a.windows.split(",")),
                           a.nmrn_events, a.limit, a.out_dir)


if __name__ == "__main__":
    main()
