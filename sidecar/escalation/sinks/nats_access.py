"""How a process reaches NATS: over TLS (verified with the CA that signed the
servers' certificates) and as whom (a credentials file or a token file), as the
options nats-py's ``connect`` takes. The sidecar's config builds one at start-up;
the NATS sinks use it at each connection. No NATS client here: a process that
never forwards to NATS never loads one.

TLS is on when any server URL is ``tls://`` or a CA is given (``nats://`` with a CA
is TLS too: the server must offer it). Without a CA a ``tls://`` server is verified
against the system's trust store. When TLS is on, the token is handed over only on
a connection the server has upgraded to TLS, so a server (or a man in the middle)
that does not offer TLS never sees it.

The credentials are files, read at each connection rather than once, so a rotated
Kubernetes Secret takes effect at the next reconnect: a ``.creds`` file (the user's
JWT and NKey seed, NATS's decentralised auth) or a bare NKey seed (a server listing
the user's public NKey), or a token. They never go in the URL, which is logged and
shown in the pod spec; a URL's own ``user:password@`` is still honoured, but
replaced by ``***`` wherever a URL is logged or reported."""

from __future__ import annotations

import importlib.util
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sidecar.errors import ConfigError

JWT_MARKER = "-----BEGIN NATS USER JWT-----"
SEED_PREFIX = "SU"  # an NKey user seed, base32: the only thing in a seed file


class CleartextRefused(ConnectionError):
    """The server did not offer TLS, so the token stayed with us."""


@dataclass(frozen=True, slots=True)
class NatsAccess:
    """TLS and credentials for NATS; the default is plaintext, no credentials."""

    ca: bytes | None = None  # PEM: verify servers with it (and insist on TLS)
    creds_file: Path | None = None  # a .creds file or an NKey seed file
    token_file: Path | None = None

    def tls(self, servers: Sequence[str]) -> bool:
        return self.ca is not None or any(s.startswith("tls://") for s in servers)

    def connect_options(
        self, servers: Sequence[str], encrypted: Callable[[], bool]
    ) -> dict[str, Any]:
        """nats.connect's keyword arguments for TLS and credentials; encrypted says
        whether the connection being set up has been upgraded to TLS (asked just
        before the token is sent)."""
        options: dict[str, Any] = {}
        tls = self.tls(servers)
        if tls:
            cadata = None if self.ca is None else self.ca.decode()
            options["tls"] = ssl.create_default_context(cadata=cadata)
        if self.creds_file is not None:
            kind = "user_credentials" if is_jwt_creds(self.creds_file) else "nkeys_seed"
            options[kind] = str(self.creds_file)
        if self.token_file is not None:
            token_file = self.token_file

            def token() -> str:
                if tls and not encrypted():
                    raise CleartextRefused("NATS server did not offer TLS; the token was not sent")
                return token_file.read_text().strip()

            options["token"] = token
        return options


def is_jwt_creds(path: Path) -> bool:
    """Whether path is a .creds file (a JWT and a seed) rather than a bare seed."""
    return JWT_MARKER in path.read_text(errors="replace")


def check_credentials(path: Path, var: str) -> None:
    """A .creds file or an NKey user seed, and nkeys (which nats-py signs with)
    installed; ConfigError naming var otherwise. The file is not kept: it is read
    again at each connection."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{var}: cannot read {path}: {exc}") from exc
    if JWT_MARKER not in text and not text.strip().startswith(SEED_PREFIX):
        raise ConfigError(
            f"{var}: {path} is neither a NATS .creds file (user JWT and NKey seed) nor an"
            " NKey user seed (SU...)"
        )
    if importlib.util.find_spec("nkeys") is None:
        raise ConfigError(f"{var}: NATS credentials need nkeys: pip install nkeys")


def redacted(url: str) -> str:
    """url with any user:password@ replaced by ***@, for logs and errors."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"***@{host}").geturl()
