"""Create Kafka topics with explicit partition counts and configs (kafka-python admin client).

Explicit creation matters: a broker that auto-creates topics (the bundled one does, with 4
partitions) would otherwise give a topic whatever its default is on the first produce.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from kafka import errors
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

logger = logging.getLogger(__name__)

# kafka-python 2.x raises NoBrokersAvailable where 3.x raises KafkaTimeoutError
_UNREACHABLE = tuple(getattr(errors, name) for name in (
    "NoBrokersAvailable", "KafkaConnectionError", "KafkaTimeoutError") if hasattr(errors, name))
_CONFIG_REJECTED = (errors.InvalidConfigurationError, errors.PolicyViolationError,
                    errors.UnsupportedVersionError)


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, partition count, replication factor and topic configs."""

    name: str
    partitions: int = 1
    replication: int = 1
    config: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> TopicSpec:
        """`name`, `name:partitions` or `name:partitions:replication`."""
        name, *rest = text.split(":")
        if not name or len(rest) > 2:
            raise ValueError(f"bad topic spec {text!r}; use name[:partitions[:replication]]")
        nums = [int(x) for x in rest]
        return cls(name, *nums)


def ensure_topics(
    bootstrap: str,
    specs: list[TopicSpec],
    timeout_s: float = 30,
    client_kwargs: dict[str, Any] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet and return the names created.

    Existing topics are left alone (their partition counts are not checked here; see
    `partition_counts`). Retries while the broker is unreachable, up to `timeout_s`.
    """
    admin = _connect(bootstrap, timeout_s, client_kwargs)
    try:
        existing = set(admin.list_topics())
        _warn_on_mismatch(admin, [s for s in specs if s.name in existing])
        created = []
        for spec in specs:
            if spec.name in existing:
                continue
            if _create(admin, spec):
                created.append(spec.name)
        return created
    finally:
        admin.close()


def partition_counts(
    bootstrap: str,
    names: list[str],
    timeout_s: float = 30,
    client_kwargs: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Partition count of each named topic that exists (missing topics are left out)."""
    admin = _connect(bootstrap, timeout_s, client_kwargs)
    try:
        present = set(admin.list_topics())
        wanted = [n for n in names if n in present]
        if not wanted:
            return {}
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(wanted)
                if t["name"] in present}
    finally:
        admin.close()


def topic_configs(
    bootstrap: str,
    name: str,
    client_kwargs: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The configs the broker reports for one topic (all of them, not only the modified)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = _connect(bootstrap, 10, client_kwargs)
    try:
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)],
                                     config_filter="all")
    finally:
        admin.close()
    entries = res.get("topic", {}).get(name, {})
    return {key: str(item.get("value")) for key, item in entries.items()}


def _warn_on_mismatch(admin: KafkaAdminClient, specs: list[TopicSpec]) -> None:
    """Existing topics are never altered (the bundled broker cannot add partitions)."""
    if not specs:
        return
    described = admin.describe_topics([s.name for s in specs])
    counts = {t["name"]: len(t["partitions"]) for t in described}
    for spec in specs:
        if counts.get(spec.name, spec.partitions) != spec.partitions:
            logger.warning("topic %s exists with %d partitions, not %d; left alone", spec.name,
                           counts[spec.name], spec.partitions)


def _create(admin: KafkaAdminClient, spec: TopicSpec) -> bool:
    """Create one topic; False if another client created it first."""
    topic = NewTopic(spec.name, spec.partitions, spec.replication,
                     topic_configs=dict(spec.config))
    try:
        admin.create_topics([topic])
    except TopicAlreadyExistsError:
        logger.info("topic %s was created concurrently; left alone", spec.name)
        return False
    except _CONFIG_REJECTED as exc:
        if not spec.config:
            raise
        logger.warning("broker rejected configs %s for topic %s (%s); creating it without them",
                       spec.config, spec.name, exc)
        return _create(admin, TopicSpec(spec.name, spec.partitions, spec.replication))
    logger.info("created topic %s (%d partitions, replication %d, configs %s)", spec.name,
                spec.partitions, spec.replication, spec.config or "default")
    return True


def _connect(bootstrap: str, timeout_s: float,
             client_kwargs: dict[str, Any] | None) -> KafkaAdminClient:
    """An admin client, retrying until the broker answers or `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        left_ms = int((deadline - time.monotonic()) * 1000)
        try:
            return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="mbnmrn-topics",
                                    bootstrap_timeout_ms=max(1000, min(left_ms, 5000)),
                                    **(client_kwargs or {}))
        except _UNREACHABLE as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no Kafka broker answered at {bootstrap} within"
                                   f" {timeout_s} s ({exc})") from exc
            logger.info("broker at %s not reachable yet (%s); retrying", bootstrap, exc)
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    """`python -m infra.topics --bootstrap HOST:PORT name[:partitions[:replication]] ...`."""
    parser = argparse.ArgumentParser(prog="python -m infra.topics", description=__doc__)
    parser.add_argument("--bootstrap", default="localhost:9092")
    parser.add_argument("--config", action="append", default=[], metavar="TOPIC:KEY=VALUE",
                        help="a topic config, e.g. recommendations:cleanup.policy=compact")
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("topics", nargs="+", metavar="name[:partitions[:replication]]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    configs: dict[str, dict[str, str]] = {}
    for item in args.config:
        topic, _, pair = item.partition(":")
        key, sep, value = pair.partition("=")
        if not sep:
            parser.error(f"bad --config {item!r}; use TOPIC:KEY=VALUE")
        configs.setdefault(topic, {})[key] = value
    specs = [TopicSpec.parse(text) for text in args.topics]
    specs = [TopicSpec(s.name, s.partitions, s.replication, configs.get(s.name, {}))
             for s in specs]
    try:
        created = ensure_topics(args.bootstrap, specs, timeout_s=args.timeout)
        counts = partition_counts(args.bootstrap, [s.name for s in specs])
    except (TimeoutError, errors.KafkaError) as exc:
        print(f"error: {exc}")
        return 1
    for spec in specs:
        state = "created" if spec.name in created else "exists"
        print(f"{spec.name}: {counts.get(spec.name, '?')} partition(s), {state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
