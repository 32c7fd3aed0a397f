"""Run `faust -A topology worker` as a child process, watch it over HTTP, stop it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


class WorkerError(RuntimeError):
    """The worker exited early or did not reach the expected state in time."""


@dataclass
class WorkerProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout_s: float = 5) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body) of GET `path`."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout_s) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def status(self) -> dict[str, Any]:
        return self.get("/status")[1]

    def wait_until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 120
    ) -> dict[str, Any]:
        """Poll /status until `predicate` holds; raises with the log tail on failure."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise WorkerError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                last = self.status()
                if predicate(last):
                    return last
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError, OSError):
                pass
            time.sleep(0.2)
        raise WorkerError(f"worker not ready in {timeout_s:.0f}s (last status {last}):\n"
                          f"{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM, wait for a clean stop, SIGKILL if it takes longer than `timeout_s`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("worker did not stop in %.0fs; killing it", timeout_s)
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def faust_command() -> list[str]:
    exe = shutil.which("faust", path=str(Path(sys.executable).parent)) or shutil.which("faust")
    if exe is None:
        raise WorkerError("the faust command is not installed (pip install -e .)")
    return [exe]


def start_worker(
    env: Mapping[str, str], log_path: Path, web_port: int, loglevel: str = "info"
) -> WorkerProcess:
    """Start `faust -A topology worker` with the given MBNMRN_*/KAFKA_* environment."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MBNMRN_")}
    full_env.update(env)
    full_env["MBNMRN_WEB_PORT"] = str(web_port)
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), full_env.get("PYTHONPATH", "")) if p
    )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = open(log_path, "ab")
    cmd = faust_command() + ["-A", "topology", "worker", "-l", loglevel,
                             "--web-port", str(web_port), "--web-host", "127.0.0.1"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=full_env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    log.info("worker pid %d on port %d, log %s", proc.pid, web_port, log_path)
    return WorkerProcess(proc, web_port, log_path)
