"""Kafka client security settings (SASL/SSL), passed the same way to every client.

The worker has four kinds of client: its aiokafka consumer and producer, the
kafka-python admin client that creates topics, and Faust's own clients. Each takes
the same settings in its own spelling; this module is the one place that spells them.
"""

from __future__ import annotations

import ssl
from typing import Any

from streams.settings import Settings


def _ssl_context(s: Settings) -> ssl.SSLContext | None:
    if "SSL" not in s.kafka_security_protocol:
        return None
    from aiokafka.helpers import create_ssl_context

    return create_ssl_context(
        cafile=s.kafka_ssl_cafile or None,
        certfile=s.kafka_ssl_certfile or None,
        keyfile=s.kafka_ssl_keyfile or None,
    )


def _common(s: Settings) -> dict[str, Any]:
    """The protocol and SASL arguments, spelled the same by aiokafka and kafka-python."""
    kwargs: dict[str, Any] = {"security_protocol": s.kafka_security_protocol}
    if s.kafka_security_protocol.startswith("SASL"):
        kwargs.update(
            sasl_mechanism=s.kafka_sasl_mechanism,
            sasl_plain_username=s.kafka_sasl_username,
            sasl_plain_password=s.kafka_sasl_password,
        )
    return kwargs


def aiokafka_kwargs(s: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaConsumer / AIOKafkaProducer."""
    kwargs = _common(s)
    context = _ssl_context(s)
    if context is not None:
        kwargs["ssl_context"] = context
    return kwargs


def kafka_python_kwargs(s: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python clients (the admin client, test producers)."""
    kwargs = _common(s)
    if "SSL" in s.kafka_security_protocol:
        for key, value in (("ssl_cafile", s.kafka_ssl_cafile),
                           ("ssl_certfile", s.kafka_ssl_certfile),
                           ("ssl_keyfile", s.kafka_ssl_keyfile)):
            if value:
                kwargs[key] = value
    return kwargs


def faust_credentials(s: Settings) -> Any:
    """Faust's `broker_credentials`, or None for PLAINTEXT."""
    import faust

    protocol = s.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = _ssl_context(s)
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=s.kafka_sasl_username, password=s.kafka_sasl_password,
            ssl_context=context, mechanism=s.kafka_sasl_mechanism,
        )
    return faust.SSLCredentials(context)
