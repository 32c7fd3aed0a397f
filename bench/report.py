"""Result files of bench.paper: tables (md, csv), settings.json and the PNG figures."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench import plots

TABLE_METRICS = ("HR@1", "HR@3", "HR@10", "NDCG@1", "NDCG@3", "NDCG@10")
FULL_METRICS = ("HR@1", "HR@3", "HR@10", "HR@50", "NDCG@1", "NDCG@3", "NDCG@10", "NDCG@50")


def _stats(runs: list[dict[str, float]], metric: str) -> tuple[float, float]:
    arr = np.array([r[metric] for r in runs], dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _mean_runs(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}


def _csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _md_table(title: str, per_method: dict[str, list[dict]], metrics: tuple[str, ...]) -> str:
    head = "| method | seeds | " + " | ".join(metrics) + " |\n"
    head += "| --- | --- | " + " | ".join("---" for _ in metrics) + " |\n"
    for name, runs in per_method.items():
        cells = [f"{m:.4f} ± {s:.4f}" for m, s in (_stats(runs, k) for k in metrics)]
        head += f"| {name} | {len(runs)} | " + " | ".join(cells) + " |\n"
    return f"{title}\n\n{head}\n"


def write_all(out: Path, results: dict[str, dict], settings: dict[str, Any]) -> None:
    """Write every result file of one dataset into `out`."""
    table, full, speed, sweeps = [], [], [], []
    md = [f"# {settings['dataset']}: offline reproduction of Table 4\n"]
    for variant, res in results.items():
        note = settings["variants"][variant]["note"]
        md.append(f"## variant `{variant}`: {note}\n\n"
                  f"split: {res['counts']}, days: {res['days']}\n")
        for kind, rows, metrics in (("1000 sampled candidates", res["test"], TABLE_METRICS),
                                    ("full catalogue", res["full"], FULL_METRICS)):
            target = table if rows is res["test"] else full
            for name, runs in rows.items():
                row: dict[str, Any] = {"variant": variant, "method": name, "seeds": len(runs)}
                for k in metrics:
                    row[k], row[f"{k}_std"] = _stats(runs, k)
                target.append(row)
            md.append(_md_table(f"### {kind} (mean ± std over seeds)", rows, metrics))
        md.append("### chosen values (validation NDCG@10)\n\n" + "\n".join(
            f"- {m}: {c}" for m, c in res["chosen"].items()) + "\n")
        if "rolling" in res:
            title = "### rolling: last days as test days, seed 0 (mean ± std over days)"
            md.append(_md_table(title, res["rolling"], TABLE_METRICS))
        for sweep, key in (("q_sweep", "Q"), ("h_sweep", "H")):
            for name_or_x, val in res.get(sweep, {}).items():
                pts = val.items() if sweep == "q_sweep" else [(name_or_x, val)]
                for x, m in pts:
                    method = name_or_x if sweep == "q_sweep" else "MB-NMRN-attn"
                    sweeps.append({"variant": variant, "sweep": key, "x": x, "method": method,
                                   **{k: m[k] for k in ("HR@1", "HR@10", "NDCG@10")}})
        for r in res.get("speed", []):
            speed.append({"variant": variant, **r})
        _figures(out, variant, res)
    md.append("Run time per method (tuning + seeds), seconds: " + "; ".join(
        f"{v}/{m} {s:.0f}" for v, r in results.items() for m, s in r["seconds"].items()) + "\n")
    if speed:
        md.append("## speed (generator off)\n\n| method | H | s/epoch | epochs to plateau | "
                  "s to plateau | events/s | epoch ratio to NMRN | plateau ratio to NMRN |\n"
                  "| --- | --- | --- | --- | --- | --- | --- | --- |\n" + "".join(
                      f"| {r['method']} | {r['H']} | {r['epoch_s']:.2f} | "
                      f"{r['plateau_epochs']} | "
                      f"{r['plateau_s']:.1f} | {r['events_per_s']:.0f} | "
                      f"{r['epoch_ratio_to_nmrn']:.1f} | {r['plateau_ratio_to_nmrn']:.1f} |\n"
                      for r in speed) + f"\n{speed[0]['note']}\n")
        _csv(out / "speed.csv", speed)
    if sweeps:
        _csv(out / "sweeps.csv", sweeps)
    _csv(out / "table.csv", table)
    _csv(out / "full_ranking.csv", full)
    (out / "table.md").write_text("\n".join(md))
    keep = {v: {k: r[k] for k in ("counts", "days", "grid", "chosen", "trials", "seconds")}
            for v, r in results.items()}
    (out / "settings.json").write_text(json.dumps({**settings, "results": keep}, indent=1,
                                                  default=str))


def _figures(out: Path, variant: str, res: dict[str, Any]) -> None:
    """Fig. 4 (K), Fig. 5 (H), Fig. 6-7 (Q), Fig. 3 (speed) for one variant."""
    by_k = {name: _mean_runs(runs) for name, runs in res["test"].items()}
    ks = sorted(int(k.split("@")[1]) for k in next(iter(by_k.values())) if k.startswith("HR@"))
    k_series = {n: {k: {"HR": m[f"HR@{k}"], "NDCG": m[f"NDCG@{k}"]} for k in ks}
                for n, m in by_k.items()}
    plots.curves(out / f"{variant}_fig4_k.png", k_series, "K")
    if "h_sweep" in res:
        h_series = {f"H={h}": {k: {"HR": m[f"HR@{k}"], "NDCG": m[f"NDCG@{k}"]} for k in ks}
                    for h, m in res["h_sweep"].items()}
        plots.curves(out / f"{variant}_fig5_h.png", h_series, "K (MB-NMRN-attn)")
    if "q_sweep" in res:
        q_series = {n: {q: {"HR@1": m["HR@1"], "HR@10": m["HR@10"], "NDCG@10": m["NDCG@10"]}
                        for q, m in pts.items()} for n, pts in res["q_sweep"].items()}
        plots.curves(out / f"{variant}_fig6_q.png", q_series, "Q (candidates)",
                     metrics=("HR@1", "HR@10", "NDCG@10"), log_x=True)
    if res.get("speed"):
        plots.speed(out / f"{variant}_fig3_speed.png", res["speed"])
