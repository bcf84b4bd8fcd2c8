"""The feedback service's NATS settings (HITL_FEEDBACK_NATS and its CA, credentials
and token files): checked at start-up as the sidecar's are, each bad value named by
its variable and no secret in the message."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.errors import ConfigError
from sidecar.feedback.config import FeedbackConfig
from tests.certs import Authority

TOKEN = "unit-nats-token-5b7d"  # noqa: S105 - a test token
SEED = "SUAAAA"  # what an NKey user seed starts with: enough for the start-up check


def _file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _load(**env: str) -> FeedbackConfig:
    return FeedbackConfig.load(env={"HITL_FEEDBACK_NATS": "tls://127.0.0.1:4222", **env})


@pytest.mark.parametrize(
    "servers",
    ["tls://nats-0:4222", "nats://nats-0:4222", "tls://nats-0:4222,nats://nats-1:4222"],
)
def test_nats_and_tls_urls_are_accepted(servers: str) -> None:
    """One or more nats:// or tls:// servers."""
    assert _load(HITL_FEEDBACK_NATS=servers).nats == servers


@pytest.mark.parametrize("servers", ["http://nats:4222", "tls://", "tls://nats", "nats:4222"])
def test_other_urls_name_the_variable(servers: str) -> None:
    """Anything but nats:// or tls://HOST:PORT fails naming HITL_FEEDBACK_NATS."""
    with pytest.raises(ConfigError, match="HITL_FEEDBACK_NATS "):
        _load(HITL_FEEDBACK_NATS=servers)


def test_the_access_holds_the_ca_and_names_the_token_file(tmp_path: Path) -> None:
    """The CA's contents are read at start-up; the token file is kept as a path, read at
    each connection."""
    authority = Authority(tmp_path / "pki")
    token_file = _file(tmp_path, "nats.token", TOKEN)
    config = _load(
        HITL_FEEDBACK_NATS_CA=str(authority.cert), HITL_FEEDBACK_NATS_TOKEN_FILE=token_file
    )
    access = config.nats_access()
    assert access.ca == authority.ca_pem
    assert access.token_file == Path(token_file)
    assert access.creds_file is None
    assert TOKEN not in repr(config)


def test_a_missing_ca_names_its_variable(tmp_path: Path) -> None:
    """A CA file that is not there fails naming HITL_FEEDBACK_NATS_CA."""
    with pytest.raises(ConfigError, match="HITL_FEEDBACK_NATS_CA: "):
        _load(HITL_FEEDBACK_NATS_CA=str(tmp_path / "absent.pem"))


def test_an_empty_token_file_names_its_variable(tmp_path: Path) -> None:
    """A token file holding nothing fails at start-up naming HITL_FEEDBACK_NATS_TOKEN_FILE."""
    with pytest.raises(ConfigError, match=r"HITL_FEEDBACK_NATS_TOKEN_FILE: .* is empty"):
        _load(HITL_FEEDBACK_NATS_TOKEN_FILE=_file(tmp_path, "empty.token", "\n"))


def test_a_file_that_is_no_credentials_names_its_variable(tmp_path: Path) -> None:
    """Neither a .creds file nor an NKey seed: HITL_FEEDBACK_NATS_CREDS_FILE, without its text."""
    with pytest.raises(ConfigError, match="HITL_FEEDBACK_NATS_CREDS_FILE: ") as failed:
        _load(HITL_FEEDBACK_NATS_CREDS_FILE=_file(tmp_path, "creds", TOKEN))
    assert TOKEN not in str(failed.value)


def test_credentials_and_a_token_are_refused_together(tmp_path: Path) -> None:
    """Two ways to authenticate: refused, naming both of the service's variables."""
    pytest.importorskip("nkeys")  # a seed file is accepted only with nkeys installed
    with pytest.raises(ConfigError) as failed:
        _load(
            HITL_FEEDBACK_NATS_CREDS_FILE=_file(tmp_path, "user.nk", SEED),
            HITL_FEEDBACK_NATS_TOKEN_FILE=_file(tmp_path, "nats.token", TOKEN),
        )
    message = str(failed.value)
    assert "HITL_FEEDBACK_NATS_CREDS_FILE and HITL_FEEDBACK_NATS_TOKEN_FILE" in message
    assert TOKEN not in message


def test_credentials_in_the_url_and_a_file_are_refused(tmp_path: Path) -> None:
    """user:password@ in HITL_FEEDBACK_NATS with a token file too: keep them in the file."""
    with pytest.raises(ConfigError, match="HITL_FEEDBACK_NATS names credentials") as failed:
        _load(
            HITL_FEEDBACK_NATS="nats://alice:pa55word@127.0.0.1:4222",
            HITL_FEEDBACK_NATS_TOKEN_FILE=_file(tmp_path, "nats.token", TOKEN),
        )
    assert "pa55word" not in str(failed.value)


def test_the_servers_tls_rules_still_hold(tmp_path: Path) -> None:
    """The NATS checks come on top of the server's own: a certificate without its key
    still fails naming both."""
    with pytest.raises(ConfigError, match="HITL_FEEDBACK_TLS_CERT and HITL_FEEDBACK_TLS_KEY"):
        _load(HITL_FEEDBACK_TLS_CERT=_file(tmp_path, "cert.pem", "not read here"))
