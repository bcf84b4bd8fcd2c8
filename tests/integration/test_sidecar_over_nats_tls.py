"""A sidecar process publishing escalations to a TLS NATS server with its CA and a
token file (HITL_SINK=tls://, HITL_NATS_CA, HITL_NATS_TOKEN_FILE): every one
arrives, and the token is in no log line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.certs import Authority
from tests.integration.conftest import start_sidecar
from tests.integration.test_escalation_delivery import FAST_RETRY, drained, route_escalations
from tests.natsserver import tls_server, token_config

pytestmark = pytest.mark.integration

TOKEN = "s1decar-nats-token-77e0"  # noqa: S105 - the test server's token


def test_a_sidecar_delivers_over_tls_with_a_token_file(tmp_path: Path, policy_file: Path) -> None:
    """tls:// sink, the server's CA and a token file: five escalations in the stream."""
    authority = Authority(tmp_path / "pki", "nats test CA")
    token_file = tmp_path / "nats.token"
    token_file.write_text(TOKEN + "\n")
    env = {
        **FAST_RETRY,
        "HITL_NATS_CA": str(authority.cert),
        "HITL_NATS_TOKEN_FILE": str(token_file),
    }
    with tls_server(tmp_path, authority, token_config(TOKEN), token=TOKEN) as server:
        url = server.url.replace("nats://", "tls://")
        running = start_sidecar(
            tmp_path, policy_file, "--sink", url, "--deployment", "tls", env=env
        )
        try:
            running.wait_serving()
            ids = route_escalations(running, "tls", 5)
            drained(running)
            assert sorted(m["escalation_id"] for m in server.messages("HITL_TLS")) == sorted(ids)
        finally:
            assert running.stop() == 0
    assert TOKEN not in (tmp_path / "sidecar.log").read_text()
