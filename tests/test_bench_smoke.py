"""The system benchmarks run end to end at tiny sizes and return the figures they promise."""

from __future__ import annotations

import json

import pytest

from bench.common import synthetic_values


def test_synthetic_values_are_distinct_valid_events() -> None:
    from streams.records import parse_values

    keys, values = synthetic_values(500, n_users=50, n_items=40, seed=3)
    events, rejections = parse_values(values)
    assert not rejections and len(set(values)) == 500
    assert keys[0] == json.loads(values[0])["user_id"].encode()


def test_train_speed_measures_both_aggregators_and_nmrn_on_the_same_stream(tmp_path) -> None:
    from bench.train_speed import run_train_speed

    result = run_train_speed(windows=(256, 512), nmrn_events=50, limit=1500, out_dir=tmp_path)
    rows = result["rows"]
    assert [r["method"] for r in rows][:1] == ["NMRN"] and len(rows) == 1 + 2 * 2 * 2
    assert all(r["events_per_s"] > 0 and r["ratio_to_nmrn"] > 0 for r in rows)
    assert {r["events"] for r in rows[1:]} == {1500}
    assert (tmp_path / "train_speed.md").exists()


def test_serving_reports_latency_and_throughput(tmp_path) -> None:
    from bench.serving import run_serving

    result = run_serving(items=(500, 2000), batch=20, repeats=3, batch_repeats=2,
                         out_dir=tmp_path)
    rows = result["rows"]
    assert {r["method"] for r in rows} == {"exact matmul+topk", "WindowTrainer.top_k"}
    assert all(r["p50_ms"] > 0 and r["users_per_s"] > 0 for r in rows)
    assert result["approximate_index"] and (tmp_path / "serving.md").exists()


def test_exact_top_k_matches_a_full_sort(monkeypatch) -> None:
    import torch

    from bench import serving

    gen = torch.Generator().manual_seed(1)
    items, q = torch.randn(1000, 8, generator=gen), torch.randn(5, 8, generator=gen)
    monkeypatch.setitem(serving.CHUNKS, "cpu", (2, 128))  # several blocks and merges
    scores, idx = serving.exact_top_k(q, items, (items * items).sum(1), 10)
    d = torch.cdist(q, items)
    expected = d.topk(10, largest=False).indices
    assert torch.equal(idx.sort(1).values, expected.sort(1).values)
    torch.testing.assert_close(scores, -(d.gather(1, idx) ** 2), rtol=1e-4, atol=1e-4)


def test_growth_reports_memory_time_and_checkpoint(tmp_path) -> None:
    from bench.growth import run_growth

    rows = run_growth(sizes=(300, 1200), windows=1, window=64, eval_candidates=20,
                      out_dir=tmp_path)["rows"]
    assert [r["users"] for r in rows] == [300 + 32, 1200 + 32]
    for r in rows:
        assert r["window_s_mean"] > 0 and r["rss_mib"] > 0 and r["checkpoint_disk_mib"] > 0
    assert json.loads((tmp_path / "growth.json").read_text())["machine"]["commit"]


@pytest.mark.integration
def test_e2e_measures_every_stage(kafka_bootstrap, tmp_path) -> None:
    from bench.e2e import run_e2e

    result = run_e2e(inputs=("synthetic",), synthetic_n=3000, window=256, faust_n=1000,
                     faust_max_s=20, job_max_s=60, paced_rate=1500, paced_seconds=2,
                     bootstrap=kafka_bootstrap, out_dir=tmp_path)
    stages = {r["stage"].split(" ")[0]: r for r in result["throughput"]}
    assert stages["raw"]["events"] == 3000
    assert stages["bare"]["events"] == 1000
    job = stages["full"]
    assert job["events"] == 3000 and not job["capped"] and job["events_per_s"] > 0
    assert set(job["phase_s_per_window"]) == {"train", "rank", "publish", "checkpoint",
                                              "commit"}
    assert 1 <= job["publishes"] <= job["windows"] and job["checkpoints"] >= 1
    assert result["ratios"][0]["job_over_faust"] > 0
    paced = result["paced"]
    assert paced["events"] == 3000 and paced["max_lag"] is not None
    assert paced["lag"] in ("bounded", "growing")


@pytest.mark.integration
def test_freshness_matches_every_quiet_event(kafka_bootstrap, tmp_path) -> None:
    from bench.freshness import run_freshness

    rows = run_freshness(configs=((1, 256),), events=3, rate=4, warmup=300,
                         bootstrap=kafka_bootstrap, out_dir=tmp_path)["rows"]
    assert rows[0]["matched"] == 3
    assert 0 < rows[0]["p50_s"] <= rows[0]["p99_s"]
