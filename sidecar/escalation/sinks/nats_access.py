"""How a process reaches NATS: over TLS (verified with the CA that signed the
servers' certificates) and as whom (a credentials file or a token file), as the
options nats-py's ``connect`` takes. The sidecar's and the feedback service's
settings declare the same three (``nats_ca_setting``, ``nats_creds_setting``,
``nats_token_setting``), checked together by ``check_nats_settings``, and build one
at start-up (``nats_access_of``); the NATS sinks and the feedback service's consumer
use it at each connection. No NATS client here: a process that never forwards to
NATS never loads one.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sidecar.errors import ConfigError
from sidecar.settings import env_of, read_file, read_token, readable_file, setting

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


def nats_ca_setting(env: str) -> Any:
    return setting(
        env,
        None,
        "CA certificate of the NATS servers' TLS certificates; turns TLS on for nats://"
        " URLs too (tls:// URLs without it are checked against the system's CAs)",
        parse=readable_file,
    )


def nats_creds_setting(env: str) -> Any:
    return setting(
        env,
        None,
        "NATS credentials: a .creds file (user JWT and NKey seed) or an NKey user seed"
        " file; read at each connection (needs nkeys)",
        parse=creds_file,
    )


def nats_token_setting(env: str) -> Any:
    return setting(
        env,
        None,
        "file holding the NATS auth token; read at each connection, and sent only over"
        " TLS when TLS is on",
        parse=readable_file,
    )


def creds_file(value: str, var: str) -> Path | None:
    """A readable .creds or NKey seed file (check_credentials), or None."""
    found = readable_file(value, var)
    if found is not None:
        check_credentials(found, var)
    return found


def check_nats_settings(cls: type, values: Mapping[str, Any], urls: Sequence[str]) -> None:
    """cls's nats_creds_file and nats_token_file: one kind of NATS credentials, a token
    that is not empty, and no credentials spelt in the URL settings urls as well;
    ConfigError naming the variables."""
    creds, token_file = values["nats_creds_file"], values["nats_token_file"]
    creds_var, token_var = env_of(cls, "nats_creds_file"), env_of(cls, "nats_token_file")
    if creds is not None and token_file is not None:
        raise ConfigError(
            f"{creds_var} and {token_var} are two ways to authenticate to NATS: set one"
        )
    if token_file is not None:
        read_token(token_file, token_var)
    if creds is not None or token_file is not None:
        for name in urls:
            if "@" in values[name]:
                raise ConfigError(
                    f"{env_of(cls, name)} names credentials (user@) and a NATS credentials"
                    " file is set: keep them in the file"
                )


def nats_access_of(settings: Any) -> NatsAccess:
    """The NatsAccess of a process's settings nats_ca (its contents, read now),
    nats_creds_file and nats_token_file (read at each connection)."""
    ca = read_file(settings.nats_ca, env_of(type(settings), "nats_ca"))
    return NatsAccess(ca, settings.nats_creds_file, settings.nats_token_file)


def redacted_servers(servers: Sequence[str]) -> str:
    """servers as logs and errors show them: joined by commas, each ``redacted``."""
    return ",".join(redacted(url) for url in servers)


def redacted(url: str) -> str:
    """url with any user:password@ replaced by ***@, for logs and errors."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"***@{host}").geturl()
