"""The NATS sink over TLS with credentials from files, against a real nats-server of
the test's own (TLS with a certificate from a throwaway CA, and a token or an NKey
user): escalations arrive with the right CA and credentials; a wrong CA, missing or
wrong credentials, or a server that does not offer TLS fail with a clear reason; no
secret reaches the logs or the errors."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from nats.js.errors import NotFoundError
from structlog.testing import capture_logs

from sidecar.config import SidecarConfig
from sidecar.errors import ConfigError, SinkUnavailable
from sidecar.escalation.sinks import NatsAccess, Sink, Spooled, open_sink
from tests.certs import Authority
from tests.escalations import escalation
from tests.natsserver import NatsServer, nkey_config, tls_server, token_config

nkeys = pytest.importorskip("nkeys")  # nats-py signs with it (the nats extra's nkeys)

from tests.natsauth import operator  # noqa: E402 (needs nkeys, checked just above)

pytestmark = pytest.mark.integration

TOKEN = "s3cret-nats-token-4f1a"  # noqa: S105 - the test server's token


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "pki", "nats test CA")


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "nats.token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def token_server(tmp_path: Path, authority: Authority) -> Iterator[NatsServer]:
    with tls_server(tmp_path, authority, token_config(TOKEN), token=TOKEN) as server:
        yield server


def _spooled(escalation_id: str) -> Spooled:
    record = escalation(escalation_id).to_dict()
    return Spooled(orjson.dumps(record), record, escalation_id)


def _deliver(sink: Sink, *ids: str) -> None:
    async def run() -> None:
        try:
            assert await sink.deliver([_spooled(i) for i in ids]) == []
        finally:
            await sink.close()

    asyncio.run(run())


def _sink(url: str, access: NatsAccess) -> Sink:
    return open_sink(url, "fraud", 5.0, nats=access)


def _failure(sink: Sink) -> str:
    """The SinkUnavailable message of a delivery that fails, with every log event of it."""
    with capture_logs() as logs, pytest.raises(SinkUnavailable) as failed:
        _deliver(sink, "e1")
    return f"{failed.value} {logs}"


def test_tls_url_with_the_ca_and_token_file_delivers(
    token_server: NatsServer, authority: Authority, token_file: Path
) -> None:
    """tls:// with the server's CA and the token from a file: the escalation is in the stream."""
    url = token_server.url.replace("nats://", "tls://")
    _deliver(_sink(url, NatsAccess(authority.ca_pem, token_file=token_file)), "e1", "e2")
    found = token_server.messages("HITL_FRAUD")
    assert [m["_msg_id"] for m in found] == ["e1", "e2"]


def test_nats_url_with_a_ca_is_tls_too(
    token_server: NatsServer, authority: Authority, token_file: Path
) -> None:
    """nats:// with a CA given verifies the server's certificate with it and delivers."""
    _deliver(_sink(token_server.url, NatsAccess(authority.ca_pem, token_file=token_file)), "e1")
    assert [m["_msg_id"] for m in token_server.messages("HITL_FRAUD")] == ["e1"]


def test_a_wrong_ca_fails_on_the_certificate_and_keeps_the_token(
    token_server: NatsServer, tmp_path: Path, token_file: Path
) -> None:
    """A CA that did not sign the server's certificate: a certificate error, no token shown."""
    other = Authority(tmp_path / "other", "another CA")
    reason = _failure(_sink(token_server.url, NatsAccess(other.ca_pem, token_file=token_file)))
    assert "CERTIFICATE_VERIFY_FAILED" in reason
    assert TOKEN not in reason


def test_tls_url_without_a_ca_checks_the_system_trust_store(
    token_server: NatsServer, token_file: Path
) -> None:
    """tls:// with no CA trusts only the system's CAs, which never signed a test CA."""
    url = token_server.url.replace("nats://", "tls://")
    assert "CERTIFICATE_VERIFY_FAILED" in _failure(_sink(url, NatsAccess(token_file=token_file)))


def test_no_credentials_fail_as_an_authorization_violation(
    token_server: NatsServer, authority: Authority
) -> None:
    """The right CA but no token: the server refuses the connection."""
    reason = _failure(_sink(token_server.url, NatsAccess(authority.ca_pem)))
    assert "authorization violation" in reason.lower()


def test_a_wrong_token_fails_and_is_never_logged(
    token_server: NatsServer, authority: Authority, tmp_path: Path
) -> None:
    """A token the server does not know: refused, and neither token is in the error or logs."""
    wrong = tmp_path / "wrong.token"
    wrong.write_text("wrong-token-9d2c")
    reason = _failure(_sink(token_server.url, NatsAccess(authority.ca_pem, token_file=wrong)))
    assert "authorization violation" in reason.lower()
    assert "wrong-token-9d2c" not in reason
    assert TOKEN not in reason


def test_a_plaintext_server_never_gets_the_token(tmp_path: Path, token_file: Path) -> None:
    """tls:// to a server that offers no TLS: refused before the token is sent."""
    server = NatsServer(tmp_path, token_config(TOKEN), {"token": TOKEN})
    server.start()
    try:
        url = server.url.replace("nats://", "tls://")
        reason = _failure(_sink(url, NatsAccess(token_file=token_file)))
    finally:
        server.stop()
    assert "did not offer TLS" in reason
    assert TOKEN not in reason


def test_a_plaintext_server_gets_no_escalation_when_tls_is_asked_for(
    tmp_path: Path, authority: Authority
) -> None:
    """nats:// with a CA to a server without TLS (and no auth): refused, the stream
    never made, so no escalation crossed in clear."""
    server = NatsServer(tmp_path)
    server.start()
    try:
        reason = _failure(_sink(server.url, NatsAccess(authority.ca_pem)))
        with pytest.raises(NotFoundError):
            server.messages("HITL_FRAUD")
    finally:
        server.stop()
    assert "did not offer TLS" in reason


def test_an_nkey_seed_file_authenticates(tmp_path: Path, authority: Authority) -> None:
    """A credentials file holding an NKey user seed, for a server that lists the user."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    user = nkeys.from_seed(bytearray(seed))
    public = user.public_key.decode()
    creds = tmp_path / "user.nk"
    creds.write_bytes(seed + b"\n")
    with tls_server(
        tmp_path, authority, nkey_config(public), nkeys_seed_str=seed.decode()
    ) as server:
        _deliver(_sink(server.url, NatsAccess(authority.ca_pem, creds_file=creds)), "e1")
        assert [m["_msg_id"] for m in server.messages("HITL_FRAUD")] == ["e1"]
        reason = _failure(_sink(server.url, NatsAccess(authority.ca_pem)))
        assert "authorization violation" in reason.lower()


def test_a_creds_file_authenticates_with_decentralised_auth(
    tmp_path: Path, authority: Authority
) -> None:
    """A .creds file (user JWT and NKey seed) for a server in operator mode: the user
    of an account with JetStream publishes; without it the server refuses."""
    trusted = operator()
    creds = trusted.user_creds(tmp_path / "fraud-sidecar.creds", "fraud-sidecar")
    with tls_server(tmp_path, authority, trusted.config, user_credentials=str(creds)) as server:
        url = server.url.replace("nats://", "tls://")
        _deliver(_sink(url, NatsAccess(authority.ca_pem, creds_file=creds)), "e1")
        assert [m["_msg_id"] for m in server.messages("HITL_FRAUD")] == ["e1"]
        reason = _failure(_sink(url, NatsAccess(authority.ca_pem)))
        assert "authorization violation" in reason.lower()
        assert trusted.account.seed.decode() not in reason


def test_credentials_in_the_url_are_masked(token_server: NatsServer, authority: Authority) -> None:
    """A URL's user:password@ is replaced by *** in errors and logs."""
    url = token_server.url.replace("nats://", "nats://alice:pa55word@")
    reason = _failure(_sink(url, NatsAccess(authority.ca_pem)))
    assert "pa55word" not in reason
    assert "***@127.0.0.1" in reason


def _env(server: NatsServer, authority: Authority, **more: str) -> dict[str, str]:
    return {
        "HITL_POLICY": str(authority.cert),  # any readable file: the policy is not loaded here
        "HITL_SINK": server.url.replace("nats://", "tls://"),
        "HITL_DEPLOYMENT": "fraud",
        "HITL_NATS_CA": str(authority.cert),
        **more,
    }


def test_the_sidecar_settings_reach_a_tls_server(
    token_server: NatsServer, authority: Authority, token_file: Path
) -> None:
    """HITL_SINK=tls://, HITL_NATS_CA and HITL_NATS_TOKEN_FILE make a sink that delivers."""
    env = _env(token_server, authority, HITL_NATS_TOKEN_FILE=str(token_file))
    config = SidecarConfig.load(env=env)
    assert TOKEN not in repr(config)
    sink = open_sink(config.sink, config.deployment, 5.0, nats=config.nats_access())
    _deliver(sink, "e1")
    assert [m["_msg_id"] for m in token_server.messages("HITL_FRAUD")] == ["e1"]


def test_a_creds_file_setting_is_checked_and_kept_as_a_path(
    tmp_path: Path, authority: Authority
) -> None:
    """HITL_NATS_CREDS_FILE naming a .creds file: accepted, and read at each connection
    (the access names the file, it does not hold the seed)."""
    creds = operator().user_creds(tmp_path / "u.creds", "u")
    env = {
        "HITL_POLICY": str(authority.cert),
        "HITL_SINK": "tls://127.0.0.1:4222",
        "HITL_NATS_CREDS_FILE": str(creds),
    }
    access = SidecarConfig.load(env=env).nats_access()
    assert access.creds_file == creds
    assert access.token_file is None
    assert access.ca is None


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"token": "", "creds": None}, "HITL_NATS_TOKEN_FILE: "),
        ({"token": TOKEN, "creds": "SUAAAA"}, "are two ways to authenticate"),
        ({"token": None, "creds": "not a seed"}, "HITL_NATS_CREDS_FILE: "),
    ],
)
def test_bad_nats_credentials_fail_at_start_up(
    tmp_path: Path, authority: Authority, files: dict[str, str | None], message: str
) -> None:
    """An empty token file, two kinds of credentials or a file that is neither a .creds
    nor a seed: a ConfigError naming the variable, with no secret in it."""
    env = {
        "HITL_POLICY": str(authority.cert),
        "HITL_SINK": "tls://127.0.0.1:4222",
        "HITL_NATS_CA": str(authority.cert),
    }
    for kind, text in files.items():
        if text is not None:
            path = tmp_path / kind
            path.write_text(text)
            env[f"HITL_NATS_{kind.upper()}_FILE"] = str(path)
    with pytest.raises(ConfigError, match=message) as failed:
        SidecarConfig.load(env=env)
    assert TOKEN not in str(failed.value)


def test_credentials_in_the_url_and_a_file_are_refused(
    tmp_path: Path, authority: Authority, token_file: Path
) -> None:
    """user:password@ in HITL_SINK with a credentials file too: refused, keep them in the file."""
    env = {
        "HITL_POLICY": str(authority.cert),
        "HITL_SINK": "nats://alice:pw@127.0.0.1:4222",
        "HITL_NATS_TOKEN_FILE": str(token_file),
    }
    with pytest.raises(ConfigError, match="HITL_SINK names credentials"):
        SidecarConfig.load(env=env)
