"""Headline figures from the other benchmarks' result files: `python -m bench.summary`.

Reads bench/results/{train_speed,e2e,freshness}.json (each written by its own command;
without train_speed.json, the paper bench's bench/results/paper/online-retail-uci/speed.csv)
and writes bench/results/summary.json. It measures
nothing itself; each figure keeps the machine and commit it was measured on.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def summarise(results: Path = RESULTS) -> dict[str, Any]:
    e2e = json.loads((results / "e2e.json").read_text())
    fresh = json.loads((results / "freshness.json").read_text())
    ratios = {r["input"]: r for r in e2e["ratios"]}
    best = max(ratios.values(), key=lambda r: r["job_events_per_s"])
    if (results / "train_speed.json").exists():
        train = json.loads((results / "train_speed.json").read_text())
        speedup = train["speedup_vs_nmrn_h2048"]
        speed_machine = train["machine"]
    else:  # the per-epoch figure of the paper bench
        with open(results / "paper" / "online-retail-uci" / "speed.csv") as f:
            speed = list(csv.DictReader(f))
        speedup = {r["method"]: float(r["epoch_ratio_to_nmrn"]) for r in speed
                   if r["H"] == "2048" and r["method"].startswith("MB-NMRN")}
        speed_machine = json.loads(
            (results / "paper" / "online-retail-uci" / "settings.json").read_text()
        ).get("machine")
    p99 = [r for r in fresh["rows"] if r["flush_s"] == 1.0 and r["H"] == 2048]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=results).stdout.strip()
    return {
        "train_speedup_vs_nmrn_h2048": speedup,
        "train_speedup_measured_on": speed_machine,
        "e2e_events_per_s": {k: r["job_events_per_s"] for k, r in ratios.items()},
        "e2e_vs_bare_faust": {k: r["job_over_faust"] for k, r in ratios.items()},
        "e2e_best_input": best["input"],
        "e2e_measured_on": e2e["machine"],
        "freshness_p99_s": p99[0]["p99_s"] if p99 else None,
        "freshness_measured_on": fresh["machine"],
        "targets": {
            "train_speedup_vs_nmrn_h2048 >= 50": {k: v >= 50 for k, v in speedup.items()},
            "e2e_events_per_s >= 50000": best["job_events_per_s"] >= 50_000,
            "e2e_vs_bare_faust >= 5": best["job_over_faust"] >= 5,
            "freshness_p99_s < 2": bool(p99) and p99[0]["p99_s"] < 2.0,
        },
        "summarised_at_commit": commit,
    }


def main() -> int:
    summary = summarise()
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("_on")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
