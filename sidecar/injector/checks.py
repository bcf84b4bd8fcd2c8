"""Checks of the values the injector takes from annotations and from its own
settings: Kubernetes object names, addresses, sink and feedback URLs. Each raises
InjectionRefused naming the annotation or variable."""

from __future__ import annotations

import ipaddress
import re

from sidecar.escalation.sinks import sink_addresses
from sidecar.injector.errors import InjectionRefused

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?")


def dns_subdomain(name: str, value: str) -> None:
    if len(value) > 253 or not all(DNS_LABEL.fullmatch(part) for part in value.split(".")):
        raise InjectionRefused(
            f"{name} must name a Kubernetes object (a DNS subdomain: lower-case letters, "
            f"digits, '-' and '.'), got {value!r}"
        )


def check_address(name: str, value: str) -> None:
    """HOST:PORT with a DNS name, an IPv4 address or a bracketed IPv6 address."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        valid_host = _is_ip(host[1:-1], 6)
    else:
        valid_host = _is_ip(host, 4) or (
            len(host) <= 253 and all(_HOSTNAME.fullmatch(p) for p in host.split("."))
        )
    if not (sep and valid_host and port.isdigit() and 1 <= int(port) <= 65535):
        raise InjectionRefused(f"{name} must be HOST:PORT, got {value!r}")


def check_sink(value: str, name: str) -> None:
    try:
        _, addresses = sink_addresses(value)
    except ValueError as exc:
        raise InjectionRefused(f"{name} {exc}") from None
    for address in addresses:
        check_address(name, address)


def check_feedback(value: str, name: str) -> None:
    """Where a sidecar sends decision records: the feedback service's HOST:PORT, or
    NATS servers (nats:// or tls://HOST:PORT[,...]) whose JetStream it reads."""
    if value.startswith(("nats://", "tls://")):
        check_sink(value, name)
    elif "://" in value:
        raise InjectionRefused(
            f"{name} must be the feedback service's HOST:PORT or nats://HOST:PORT[,...]"
            f" (or tls://), got {value!r}"
        )
    else:
        check_address(name, value)


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False
