"""PNG figures of the paper's Fig. 3-7 from the benchmark's result rows (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def curves(path: Path, series: dict[str, dict[int, dict[str, float]]], x_label: str,
           metrics: tuple[str, ...] = ("HR", "NDCG"), log_x: bool = False) -> None:
    """One panel per metric family: metric@K (or @10 for sweeps) against x, a line per series.

    series: name -> x -> {"HR@K": ..., "NDCG@K": ...} where the keys hold one K per x
    (Fig. 4) or a fixed K (Fig. 5-7, the caller picks the keys).
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6))
    for ax, metric in zip(axes, metrics):
        for name, points in series.items():
            xs = sorted(points)
            ax.plot(xs, [points[x][metric] for x in xs], marker="o", ms=3, label=name)
        ax.set_xlabel(x_label)
        ax.set_ylabel(metric)
        if log_x:
            ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def speed(path: Path, rows: list[dict[str, Any]]) -> None:
    """Fig. 3: seconds per epoch and to plateau against H, NMRN as a horizontal line."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    nmrn = next(r for r in rows if r["method"] == "NMRN")
    for ax, key, label in ((axes[0], "epoch_s", "seconds per epoch"),
                           (axes[1], "plateau_s", "seconds to validation plateau")):
        for name in ("MB-NMRN-conv", "MB-NMRN-attn"):
            pts = [r for r in rows if r["method"] == name]
            ax.plot([r["H"] for r in pts], [r[key] for r in pts], marker="o", label=name)
        ax.axhline(nmrn[key], color="k", ls="--", label="NMRN")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("H (window size)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
