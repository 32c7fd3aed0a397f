"""`faust -A topology worker` as a user runs it: HTTP views, clean stop, restart, bad settings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from infra.broker import free_port
from infra.worker import REPO_ROOT, start_worker
from streams.datasets import load_dataset
from streams.replay import replay
from tests.conftest import distinct_events, worker_env

pytestmark = pytest.mark.integration

EVENTS = 2500


def test_worker_serves_lists_and_resumes_after_restart(kafka_bootstrap, unique_name, tmp_path):
    env = worker_env(kafka_bootstrap, unique_name, str(tmp_path / "data"), window_size=1024)
    topic = env["MBNMRN_INPUT_TOPIC"]
    events = load_dataset("online-retail-uci", since="2011-11-01", limit=EVENTS)
    users = sorted(set(events.column("user_id").to_pylist()))
    trained = distinct_events(events)

    worker = start_worker(env, tmp_path / "worker.log", free_port())
    try:
        worker.wait_until(lambda s: s["state"] == "running", timeout_s=90)
        replay(events, bootstrap=kafka_bootstrap, topic=topic, progress=False)
        status = worker.wait_until(
            lambda s: s["events_trained"] == trained and s["buffered"] == 0
            and s["last_trained_offsets"] == {f"{topic}/0": EVENTS - 1}, timeout_s=90)
        assert status["windows_trained"] == 3 and status["model_version"] == 3
        assert status["dead_letters"] == 0
        assert status["users"] == len(users)

        code, body = worker.get(f"/recommendations/{users[0]}")
        assert code == 200 and body["user_id"] == users[0]
        assert len({r["item_id"] for r in body["items"]}) == 10
        assert body["model_version"] == 3
        assert worker.get("/recommendations/not-a-customer")[0] == 404
        before = {u: worker.get(f"/recommendations/{u}")[1]["items"] for u in users[:10]}
    finally:
        assert worker.stop() == 0, worker.tail()

    restarted = start_worker(env, tmp_path / "worker2.log", free_port())
    try:
        status = restarted.wait_until(lambda s: s["state"] == "running", timeout_s=90)
        assert status["windows_trained"] == 3 and status["events_trained"] == trained
        after = {u: restarted.get(f"/recommendations/{u}")[1]["items"] for u in users[:10]}
        assert after == before
    finally:
        assert restarted.stop() == 0, restarted.tail()


def test_bad_setting_fails_at_start_up_naming_the_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MBNMRN_")}
    env.update(MBNMRN_WINDOW_SIZE="lots", MBNMRN_DATA_DIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-c", "import topology"], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "MBNMRN_WINDOW_SIZE='lots'" in proc.stderr
