"""The stream job's settings: one typed object, read from environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from model.config import ModelConfig
from streams.records import EVENT_TYPES

PREFIX = "MBNMRN_"
CRASH_PHASES = ("trained", "publishing", "published", "checkpointed", "committed")
SECRET_FIELDS = frozenset({"kafka_sasl_password"})
# MBNMRN_* variables read by other parts of the project, not by the worker's settings.
OTHER_VARIABLES = frozenset({"MBNMRN_SHARED_DATA", "MBNMRN_TEST_BOOTSTRAP"})


class SettingsError(ValueError):
    """A setting has a bad value; the message names the environment variable."""


def _setting(default: Any, env: str, help: str, choices: tuple[str, ...] = ()) -> Any:
    meta = {"env": env, "help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap_servers: str = _setting(
        "localhost:9092", "KAFKA_BOOTSTRAP_SERVERS",
        "Kafka bootstrap servers, host:port[,host:port]",
    )
    kafka_security_protocol: str = _setting(
        "PLAINTEXT", "KAFKA_SECURITY_PROTOCOL", "security protocol of every Kafka client",
        ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl"),
    )
    kafka_sasl_mechanism: str = _setting(
        "PLAIN", "KAFKA_SASL_MECHANISM", "SASL mechanism",
        ("plain", "scram-sha-256", "scram-sha-512"),
    )
    kafka_sasl_username: str = _setting("", "KAFKA_SASL_USERNAME", "SASL user name")
    kafka_sasl_password: str = _setting(
        "", "KAFKA_SASL_PASSWORD", "SASL password (never logged or shown)"
    )
    kafka_ssl_cafile: str = _setting("", "KAFKA_SSL_CAFILE", "CA bundle to verify the brokers")
    kafka_ssl_certfile: str = _setting("", "KAFKA_SSL_CERTFILE", "client certificate (PEM)")
    kafka_ssl_keyfile: str = _setting("", "KAFKA_SSL_KEYFILE", "client private key (PEM)")
    input_topic: str = _setting("interactions", "MBNMRN_INPUT_TOPIC", "topic of interaction events")
    dlq_topic: str = _setting("interactions-dlq", "MBNMRN_DLQ_TOPIC", "dead-letter topic")
    recommendations_topic: str = _setting(
        "recommendations", "MBNMRN_RECOMMENDATIONS_TOPIC", "topic of published top-K lists"
    )
    metrics_topic: str = _setting("metrics", "MBNMRN_METRICS_TOPIC", "topic of per-window metrics")
    input_partitions: int = _setting(
        1, "MBNMRN_INPUT_PARTITIONS", "partitions of the input topic when the worker creates it"
    )
    output_partitions: int = _setting(
        4, "MBNMRN_OUTPUT_PARTITIONS", "partitions of recommendations/DLQ topics it creates"
    )
    group_id: str = _setting(
        "mbnmrn-trainer", "MBNMRN_GROUP_ID", "consumer group the trainer commits offsets to"
    )
    app_id: str = _setting("mbnmrn", "MBNMRN_APP_ID", "Faust application id")
    window_size: int = _setting(2048, "MBNMRN_WINDOW_SIZE", "H: interactions per window")
    flush_seconds: float = _setting(
        5.0, "MBNMRN_FLUSH_SECONDS",
        "train a partial window once its oldest event waited this long for more events "
        "(time spent training does not count; never while the consumer is behind)",
    )
    top_k: int = _setting(10, "MBNMRN_TOP_K", "K: length of published recommendation lists")
    exclude_purchased: bool = _setting(
        False, "MBNMRN_EXCLUDE_PURCHASED", "leave a user's own past items out of their list"
    )
    event_types: str = _setting(
        ",".join(sorted(EVENT_TYPES)),
        "MBNMRN_EVENT_TYPES",
        "comma-separated event types that train; other valid events are counted and skipped",
    )
    aggregator: str = _setting("attn", "MBNMRN_AGGREGATOR", "market aggregator", ("attn", "conv"))
    dim: int = _setting(32, "MBNMRN_DIM", "r: embedding size")
    slots: int = _setting(64, "MBNMRN_SLOTS", "L: memory slots")
    candidates: int = _setting(100, "MBNMRN_CANDIDATES", "J: candidate negatives per interaction")
    margin: float = _setting(5.0, "MBNMRN_MARGIN", "q: hinge margin")
    lr: float = _setting(
        3e-3, "MBNMRN_LR",
        "Adam learning rate (paper: 1e-3; 3e-3 measured best with lazy Adam, which moves a "
        "row only when a window touches it)",
    )
    use_generator: bool = _setting(
        True, "MBNMRN_GENERATOR", "pick negatives with the generator (false: uniform)"
    )
    reward_baseline: bool = _setting(
        False, "MBNMRN_REWARD_BASELINE", "subtract the mean reward in the generator's REINFORCE"
    )
    user_residual: bool = _setting(
        True, "MBNMRN_USER_RESIDUAL",
        "p' = p + u: add the user vector to the memory read (ours; false: the paper's Eq. 3)",
    )
    read_temperature: float = _setting(
        0.01, "MBNMRN_READ_TEMPERATURE",
        "T of the read attention softmax(-||u - k|| / T) (ours; 1: the paper's Eq. 2)",
    )
    steps_per_window: int = _setting(
        1, "MBNMRN_STEPS_PER_WINDOW", "D/G updates per window, fresh negatives each (paper: 1)"
    )
    eval_candidates: int = _setting(
        1000, "MBNMRN_EVAL_CANDIDATES", "candidates per interaction for online HR/NDCG"
    )
    eval_k: int = _setting(10, "MBNMRN_EVAL_K", "K of the online HR@K / NDCG@K")
    eval_sample: int = _setting(
        512, "MBNMRN_EVAL_SAMPLE",
        "score at most this many of a window's known interactions, drawn uniformly, for the "
        "online metrics (0: all; the model trains the same either way)",
    )
    lazy_adam: bool = _setting(
        True, "MBNMRN_LAZY_ADAM",
        "Adam updates only the embedding rows a window touches (ours; false: dense Adam, "
        "whose cost per window grows with the tables)",
    )
    publish_interval_s: float = _setting(
        1.0, "MBNMRN_PUBLISH_INTERVAL_S",
        "while the consumer is behind, publish lists at most this often, for every user "
        "trained since the last publish (caught up: after every window; 0: every window)",
    )
    checkpoint_interval_s: float = _setting(
        5.0, "MBNMRN_CHECKPOINT_INTERVAL_S",
        "checkpoint at the first publish this long after the last checkpoint (or 10x the "
        "last checkpoint's duration, if longer), and whenever the stream goes idle (0: after "
        "every window); a crash retrains what came after the last checkpoint",
    )
    data_dir: Path = _setting(
        Path(".mbnmrn"), "MBNMRN_DATA_DIR", "directory of the RocksDB checkpoint and Faust data"
    )
    checkpoint_keep: int = _setting(3, "MBNMRN_CHECKPOINT_KEEP", "checkpoints kept on disk")
    dedup_horizon: int = _setting(
        100_000, "MBNMRN_DEDUP_HORIZON",
        "recent events remembered by content, so a producer's retry does not train twice (0: off)",
    )
    device: str = _setting("auto", "MBNMRN_DEVICE", "torch device", ("auto", "cpu", "cuda"))
    seed: int = _setting(0, "MBNMRN_SEED", "seed of initialisation and per-window sampling")
    web_port: int = _setting(6066, "MBNMRN_WEB_PORT", "port of the worker's HTTP server")
    web_bind: str = _setting(
        "127.0.0.1", "MBNMRN_WEB_BIND", "address the HTTP server listens on (0.0.0.0: all)"
    )
    session_timeout_s: float = _setting(
        6.0, "MBNMRN_SESSION_TIMEOUT_S", "Kafka consumer session timeout (seconds)"
    )
    log_level: str = _setting(
        "info", "MBNMRN_LOG_LEVEL", "log level", ("debug", "info", "warning", "error")
    )
    crash_at: str = _setting(
        "", "MBNMRN_CRASH_AT",
        "testing only: SIGKILL the worker at PHASE:WINDOW, or the first later window there "
        "(phases: trained, publishing, published, checkpointed, committed)",
    )
    slow_window_s: float = _setting(
        0.0, "MBNMRN_SLOW_WINDOW_S", "testing only: extra seconds each window's training takes"
    )

    def __post_init__(self) -> None:
        positive = ("window_size", "top_k", "dim", "slots", "candidates", "eval_k", "web_port",
                    "steps_per_window")
        for name in positive + ("input_partitions", "output_partitions", "checkpoint_keep"):
            if getattr(self, name) < 1:
                self._fail(name, getattr(self, name), "must be >= 1")
        for name in ("flush_seconds", "margin", "lr", "session_timeout_s", "read_temperature"):
            if not getattr(self, name) > 0:
                self._fail(name, getattr(self, name), "must be > 0")
        if self.web_port > 65535:
            self._fail("web_port", self.web_port, "must be a port number, 1 to 65535")
        for server in self.kafka_bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                self._fail("kafka_bootstrap_servers", self.kafka_bootstrap_servers,
                           "expected host:port[,host:port...]")
        for name in ("dedup_horizon", "eval_sample", "publish_interval_s",
                     "checkpoint_interval_s"):
            if getattr(self, name) < 0:
                self._fail(name, getattr(self, name), "must be >= 0")
        if self.slow_window_s < 0:
            self._fail("slow_window_s", self.slow_window_s, "must be >= 0")
        if self.crash_at:
            phase, _, window = self.crash_at.partition(":")
            if phase not in CRASH_PHASES or not window.isdigit():
                self._fail("crash_at", self.crash_at,
                           f"expected PHASE:WINDOW with PHASE one of {', '.join(CRASH_PHASES)}")
        if self.eval_candidates < 2:
            self._fail("eval_candidates", self.eval_candidates, "must be >= 2")
        unknown = set(self.train_event_types) - EVENT_TYPES
        if unknown or not self.train_event_types:
            self._fail("event_types", self.event_types,
                       f"must be a subset of {sorted(EVENT_TYPES)}")

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            shown.append(f"{f.name}={'***' if f.name in SECRET_FIELDS and value else value!r}")
        return f"Settings({', '.join(shown)})"

    @classmethod
    def _fail(cls, name: str, value: Any, why: str) -> None:
        env = next(f.metadata["env"] for f in fields(cls) if f.name == name)
        raise SettingsError(f"{env}={value!r}: {why}")

    @property
    def train_event_types(self) -> frozenset[str]:
        return frozenset(t.strip().lower() for t in self.event_types.split(",") if t.strip())

    @property
    def checkpoint_dir(self) -> Path:
        return self.data_dir / "checkpoint"

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            dim=self.dim,
            slots=self.slots,
            candidates=self.candidates,
            margin=self.margin,
            window=self.window_size,
            lr=self.lr,
            aggregator=self.aggregator,
            use_generator=self.use_generator,
            reward_baseline=self.reward_baseline,
            user_residual=self.user_residual,
            read_temperature=self.read_temperature,
            steps_per_window=self.steps_per_window,
            lazy_adam=self.lazy_adam,
        )

    def torch_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise SettingsError("MBNMRN_DEVICE='cuda': no CUDA device is available")
        return self.device

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read every setting from `environ` (default os.environ); overrides win.

        Unknown MBNMRN_* variables are errors, so a typo does not silently fall back.
        """
        environ = os.environ if environ is None else environ
        known = {f.metadata["env"] for f in fields(cls)}
        typos = sorted(
            k for k in environ if k.startswith(PREFIX) and k not in known | OTHER_VARIABLES
        )
        if typos:
            raise SettingsError(f"unknown settings {typos}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            env = f.metadata["env"]
            if env in environ and f.name not in overrides:
                values[f.name] = _parse(f, environ[env])
        values.update(overrides)
        return cls(**values)

    @classmethod
    def documentation(cls) -> list[tuple[str, str, str]]:
        """(environment variable, default, help) for each setting, for the README."""
        rows = []
        for f in fields(cls):
            default = f.default if f.default is not MISSING else f.default_factory()
            if isinstance(default, bool):
                default = str(default).lower()
            help = f.metadata["help"]
            if f.metadata["choices"]:
                help += f" ({' or '.join(f.metadata['choices'])})"
            rows.append((f.metadata["env"], str(default), help))
        return rows


def _parse(f: Any, raw: str) -> Any:
    env, kind, text = f.metadata["env"], f.type, raw.strip()
    try:
        if kind == "bool":
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind == "int":
            return int(text)
        if kind == "float":
            value = float(text)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError("expected a finite number")
            return value
        if kind == "Path":
            if not text:
                raise ValueError("expected a path")
            return Path(text)
    except ValueError as exc:
        raise SettingsError(f"{env}={raw!r}: {exc}") from None
    choices = f.metadata["choices"]
    if choices and text.lower() not in choices:
        raise SettingsError(f"{env}={raw!r}: expected one of {', '.join(choices)}")
    if not text and f.default != "":
        raise SettingsError(f"{env} is empty")
    if choices and env.startswith("KAFKA_"):
        return text.upper()
    return text.lower() if choices else text


def markdown_table() -> str:
    """The README's settings table: `python -m streams.settings`."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for env, default, help in Settings.documentation():
        rows.append(f"| `{env}` | `{default}` | {help} |" if default else f"| `{env}` | | {help} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
