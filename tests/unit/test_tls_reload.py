"""A control-plane gRPC server takes a renewed certificate, key or client CA from its
files at the next connection, without a restart, and keeps serving the previous
ones when the new files do not load; the review console's HTTPS listener takes a
renewal too: real servers on port 0, real certificates."""

from __future__ import annotations

import http.client
import os
import ssl
import time
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from structlog.testing import capture_logs

from sidecar.errors import ConfigError
from sidecar.review.app import build
from sidecar.review.config import ReviewConfig
from sidecar.serving import server_credentials
from tests.certs import Authority, Issued, Pki, serving_pair
from tests.registry import in_process


@dataclass
class Renewal:
    """A serving certificate in place (tls.crt and tls.key, from CA A) and its renewal
    from CA B, not yet in place."""

    current: Pki
    ca: Authority
    renewed: Issued

    def swap(self) -> None:
        """Put the renewal in place by rename, as the kubelet swaps a Secret's files."""
        os.replace(self.renewed.cert, self.current.cert)
        os.replace(self.renewed.key, self.current.key)


@pytest.fixture
def renewal(tmp_path: Path) -> Renewal:
    ca = Authority(tmp_path / "ca-b", "ca-b")
    return Renewal(serving_pair(tmp_path / "tls", "ca-a"), ca, ca.issue("server", server=True))


@contextmanager
def review_queue(tmp_path: Path, pki: Pki, client_ca: Path | None = None) -> Iterator[str]:
    """A review queue in process serving pki (mTLS with client_ca); its address."""
    config = ReviewConfig(
        listen="127.0.0.1:0",
        db=f"sqlite:{tmp_path / 'review.db'}",
        tls_cert=pki.cert,
        tls_key=pki.key,
        client_ca=client_ca,
    )
    review = build(config)
    review.start()
    try:
        yield review.address
    finally:
        review.stop(grace=0)


def connects(address: str, ca_pem: bytes, client: Issued | None = None) -> bool:
    """Whether a new connection that trusts ca_pem (presenting client's certificate)
    gets an answer: False when the handshake fails."""
    credentials = grpc.ssl_channel_credentials(
        ca_pem,
        client.key.read_bytes() if client else None,
        client.cert.read_bytes() if client else None,
    )
    # A channel of its own, never one the process already holds: a new handshake.
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.secure_channel(address, credentials, options=options) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                return False
            raise
    return True


def events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def test_a_renewed_certificate_is_served_from_the_next_connection(
    tmp_path: Path, renewal: Renewal
) -> None:
    """Once the files hold certificate B, a new connection gets B (a client trusting
    only B's CA fails before the swap and succeeds after), and tls.reloaded says when
    B expires."""
    first, new_ca = renewal.current, renewal.ca.ca_pem
    with capture_logs() as logs, review_queue(tmp_path, first) as address:
        assert connects(address, first.ca_pem)
        assert not connects(address, new_ca)
        renewal.swap()
        assert connects(address, new_ca)
        assert not connects(address, first.ca_pem)
        assert connects(address, new_ca)
    (reloaded,) = events(logs, "tls.reloaded")
    assert reloaded["cert"] == str(first.cert)
    expiry = x509.load_pem_x509_certificate(first.cert.read_bytes()).not_valid_after_utc
    assert reloaded["not_after"] == expiry.isoformat()
    assert not events(logs, "tls.reload_failed")


def test_a_half_written_certificate_keeps_the_previous_one_served(
    tmp_path: Path, renewal: Renewal
) -> None:
    """A certificate file caught half-written is logged once, however many connections
    come, and the previous certificate stays served; the whole file is then taken."""
    first, whole = renewal.current, renewal.renewed.cert.read_bytes()
    with capture_logs() as logs, review_queue(tmp_path, first) as address:
        first.cert.write_bytes(whole[: len(whole) // 2])
        assert all(connects(address, first.ca_pem) for _ in range(3))
        (failed,) = events(logs, "tls.reload_failed")
        assert failed["cert"] == str(first.cert)
        assert f"TLS file {first.cert} holds no PEM certificate" in failed["error"]
        renewal.swap()
        assert connects(address, renewal.ca.ca_pem)
    assert len(events(logs, "tls.reload_failed")) == 1
    assert len(events(logs, "tls.reloaded")) == 1


def test_a_key_that_does_not_match_keeps_the_previous_pair_served(
    tmp_path: Path, renewal: Renewal
) -> None:
    """A new certificate beside the old key (the key not yet swapped) is refused with
    the reason and the old pair stays served; the pair is taken once the key follows."""
    first, renewed = renewal.current, renewal.renewed
    with capture_logs() as logs, review_queue(tmp_path, first) as address:
        os.replace(renewed.cert, first.cert)
        assert connects(address, first.ca_pem)
        assert not connects(address, renewal.ca.ca_pem)
        (failed,) = events(logs, "tls.reload_failed")
        assert failed["error"] == (
            f"TLS key {first.key} does not match the certificate {first.cert}"
        )
        os.replace(renewed.key, first.key)
        assert connects(address, renewal.ca.ca_pem)
    assert len(events(logs, "tls.reloaded")) == 1


def test_a_renewed_client_ca_decides_whose_certificates_are_accepted(tmp_path: Path) -> None:
    """Under mTLS the client CA file is read again too: once it holds CA Y, a client
    certificate from Y is accepted and one from the previous CA X refused."""
    server = serving_pair(tmp_path / "tls", "server-ca")
    old, new = Authority(tmp_path / "ca-x", "ca-x"), Authority(tmp_path / "ca-y", "ca-y")
    client_ca = tmp_path / "client-ca" / "ca.crt"
    client_ca.parent.mkdir()
    client_ca.write_bytes(old.ca_pem)
    from_old, from_new = old.issue("sidecar-x"), new.issue("sidecar-y")
    with capture_logs() as logs, review_queue(tmp_path, server, client_ca) as address:
        assert connects(address, server.ca_pem, from_old)
        assert not connects(address, server.ca_pem, from_new)
        staged = client_ca.with_name("ca.crt.new")
        staged.write_bytes(new.ca_pem)
        os.replace(staged, client_ca)
        assert connects(address, server.ca_pem, from_new)
        assert not connects(address, server.ca_pem, from_old)
        assert not connects(address, server.ca_pem)  # a certificate is still required
    assert len(events(logs, "tls.reloaded")) == 1


def test_the_registry_serves_a_renewed_certificate(tmp_path: Path, renewal: Renewal) -> None:
    """The registry (an asyncio server) takes a renewed certificate the same way."""
    first = renewal.current
    with in_process("sqlite", tmp_path, tls_cert=first.cert, tls_key=first.key) as registry:
        assert connects(registry.address, first.ca_pem)
        renewal.swap()
        assert connects(registry.address, renewal.ca.ca_pem)
        assert not connects(registry.address, first.ca_pem)


def test_files_that_do_not_load_at_start_up_stop_the_server(tmp_path: Path) -> None:
    """At start-up a missing file or a key of another certificate is a ConfigError
    naming the file, not a server that fails every handshake."""
    pki = serving_pair(tmp_path / "tls", "ca-a")
    other = serving_pair(tmp_path / "other", "ca-b")
    with pytest.raises(ConfigError, match=r"cannot read TLS file .*missing\.crt"):
        server_credentials(tmp_path / "missing.crt", pki.key, None)
    with pytest.raises(ConfigError, match="does not match the certificate"):
        server_credentials(pki.cert, other.key, None)


def serves_https(address: str, ca_pem: bytes) -> bool:
    """Whether a new HTTPS connection trusting only ca_pem gets the console's sign-in
    page."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cadata=ca_pem.decode())
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=5)
    try:
        connection.request("GET", "/signin")
        return connection.getresponse().status == 200
    except ssl.SSLCertVerificationError:
        return False
    finally:
        connection.close()


def test_the_review_console_serves_a_renewed_certificate(tmp_path: Path, renewal: Renewal) -> None:
    """The console's HTTPS listener (the gRPC port's certificate) takes the renewal from
    a new connection once it has looked at the files again (at most a second later)."""
    first = renewal.current
    config = ReviewConfig(
        listen="127.0.0.1:0",
        db=f"sqlite:{tmp_path / 'review.db'}",
        tls_cert=first.cert,
        tls_key=first.key,
        console_listen="127.0.0.1:0",
    )
    review = build(config)
    review.start()
    try:
        assert review.console is not None
        address = review.console.address
        assert serves_https(address, first.ca_pem)
        assert not serves_https(address, renewal.ca.ca_pem)
        renewal.swap()
        deadline = time.monotonic() + 10
        while not serves_https(address, renewal.ca.ca_pem):
            assert time.monotonic() < deadline, "the renewed certificate was never served"
            time.sleep(0.2)
        assert not serves_https(address, first.ca_pem)
    finally:
        review.stop(grace=0)
