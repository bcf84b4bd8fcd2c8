"""Where the forwarder delivers escalations: one interface (``base``), one module per
sink, and ``open_sink`` to choose one by URL. Each sink's module is imported when it
is chosen: the NATS and Label Studio sinks need an optional extra (nats-py,
label-studio-sdk), so a process that forwards to the review queue never loads
either, and the review queue's sink is left out of the ``hitl`` command's start-up."""

from __future__ import annotations

from sidecar.errors import ConfigError
from sidecar.escalation.messages import LabelsOf
from sidecar.escalation.sinks.base import (
    YIELD_EVERY,
    Rejection,
    Sink,
    Spooled,
    sink_addresses,
)
from sidecar.escalation.sinks.labelstudio_settings import LabelStudioSinkConfig, base_url
from sidecar.escalation.sinks.nats_access import NatsAccess
from sidecar.settings import ClientCredentials

__all__ = [
    "YIELD_EVERY",
    "NatsAccess",
    "Rejection",
    "Sink",
    "Spooled",
    "open_sink",
    "sink_addresses",
]


def open_sink(
    url: str,
    deployment: str,
    timeout: float,
    credentials: ClientCredentials | None = None,
    labels_of: LabelsOf | None = None,
    nats: NatsAccess | None = None,
) -> Sink:
    """A sink from its URL (``sink_addresses``); credentials are the review queue's,
    labels_of gives the class labels the review queue's escalations carry, nats is
    how NATS servers are reached (TLS, credentials)."""
    if url.startswith(("labelstudio://", "labelstudios://")):
        return _labelstudio_sink(url, timeout, labels_of)
    try:
        scheme, addresses = sink_addresses(url)
    except ValueError as exc:
        raise ConfigError(f"HITL_SINK {exc}") from None
    if scheme == "review":
        # Here rather than at the top: the sink loads sidecar.serving and the
        # OpenTelemetry metrics SDK, which every ``hitl`` command would otherwise
        # load too (this package's settings are part of hitl's parser).
        from sidecar.escalation.sinks.review import ReviewQueueSink

        given = credentials or ClientCredentials()
        return ReviewQueueSink(addresses[0], timeout, given, labels_of)
    from sidecar.escalation.sinks.nats import NatsSink

    return NatsSink(url.split(","), deployment, timeout, nats)


def _labelstudio_sink(url: str, timeout: float, labels_of: LabelsOf | None) -> Sink:
    """``labelstudio://HOST:PORT`` (``labelstudios://`` for HTTPS), with the settings of
    ``labelstudio_settings`` (docs/labelstudio.md); needs the ``labelstudio`` extra."""
    base = base_url(url, "HITL_SINK")
    config = LabelStudioSinkConfig.load()
    try:
        from sidecar.escalation.sinks.labelstudio import LabelStudioSink
    except ImportError as exc:
        raise ConfigError(
            "HITL_SINK: a Label Studio sink needs label-studio-sdk:"
            " pip install 'hitl-sidecar[labelstudio]'"
        ) from exc
    return LabelStudioSink(base, config, timeout, labels_of)
