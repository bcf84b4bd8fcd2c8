"""What every hitl process's settings share: the declaration of a setting, the
loader, flags and reference table derived from it, the common variables, the checks
of a value (each failing with a ConfigError that names its variable), and where the
sidecar keeps its state.

A process's settings are a frozen dataclass whose fields are declared with
``setting(...)``: the environment variable, the default, the help and the parser
that validates a value, once. ``read`` loads them (flags over the environment over
the default), ``add_flags`` gives the command its ``--flags``, and ``reference``
writes the table of docs/configuration.md; a test keeps that page in step."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Self

from sidecar.errors import ConfigError

ENV_LOG_LEVEL = "HITL_LOG_LEVEL"
ENV_GRACE = "HITL_SHUTDOWN_GRACE_SECONDS"
ENV_STATE_DIR = "HITL_STATE_DIR"
LOG_LEVELS = ("debug", "info", "warning", "error")
# Under the state directory: the escalation spools, and the last-known-good policy
# (with its calibrators) of a sidecar fed by the registry.
SPOOL_DIR, DEAD_LETTER_DIR, POLICY_DIR = "spool", "dead-letter", "policy"
# The decision stream's (decision records and outcomes for the feedback service).
DECISIONS_DIR, DECISIONS_DEAD_LETTER_DIR = "decisions", "decisions-dead-letter"

Parse = Callable[[str, str], Any]
_SETTING = "hitl.setting"


@dataclass(frozen=True, slots=True)
class Setting:
    """One declared setting: its variable, what it means, how a value is read."""

    env: str
    help: str
    parse: Parse
    unset: str  # what the variable reads as when it is not set
    shown: str  # the default as the reference shows it
    flag: str  # the flag's name without "--"; "" derives it from the field's name


def setting(
    env: str,
    default: Any = MISSING,
    help: str = "",
    *,
    parse: Parse | None = None,
    flag: str = "",
    shown: str = "",
    unset: str | None = None,
    secret: bool = False,
) -> Any:
    """A dataclass field that is a setting. Without a default it is required.
    parse defaults by the default's type: text, a positive number, true/false."""
    if parse is None:
        parse = _PARSERS[type(default)]
    if unset is None:
        unset = "" if default is MISSING or default is None else _text(default)
    declared = Setting(env, help, parse, unset, shown or unset or "off", flag)
    metadata = {_SETTING: declared}
    if default is MISSING:
        return field(metadata=metadata, repr=not secret)
    return field(default=default, metadata=metadata, repr=not secret)


def declared(cls: type) -> Iterator[tuple[str, Setting]]:
    """(field name, setting) for every declared setting of a settings class."""
    for item in fields(cls):
        found = item.metadata.get(_SETTING)
        if isinstance(found, Setting):
            yield item.name, found


def env_of(cls: type, name: str) -> str:
    """The environment variable of cls's setting name (for messages naming it)."""
    return dict(declared(cls))[name].env


def read(
    cls: type, overrides: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Every setting of cls: the override (not None) over env (default os.environ) over
    the default, parsed; a bad or missing value is a ConfigError naming the variable."""
    environ = os.environ if env is None else env
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    values: dict[str, Any] = {}
    for name, declared_setting in declared(cls):
        text = str(given.get(name, environ.get(declared_setting.env, declared_setting.unset)))
        if not text and _required(cls, name):
            raise ConfigError(
                f"{declared_setting.env} (or --{flag_of(name, declared_setting)}) is required:"
                f" {declared_setting.help}"
            )
        values[name] = declared_setting.parse(text, declared_setting.env)
    return values


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """A --flag for every setting of cls, its help naming the variable and default."""
    for name, declared_setting in declared(cls):
        default = "required" if _required(cls, name) else declared_setting.shown
        parser.add_argument(
            f"--{flag_of(name, declared_setting)}",
            dest=name,
            help=f"{declared_setting.help} (env {declared_setting.env}, default {default})",
        )


def flag_values(args: argparse.Namespace, cls: type) -> dict[str, object]:
    """The flags add_flags declared, as overrides for read (None where not given)."""
    return {name: getattr(args, name, None) for name, _ in declared(cls)}


def reference(cls: type) -> str:
    """The Markdown table of cls's settings, for docs/configuration.md."""
    rows = ["| Variable | Flag | Default | Meaning |", "| --- | --- | --- | --- |"]
    for name, declared_setting in declared(cls):
        shown = "required" if _required(cls, name) else declared_setting.shown
        default = shown if " " in shown or shown in {"off", "required"} else f"`{shown}`"
        help_text = declared_setting.help.replace("|", "\\|")
        rows.append(
            f"| `{declared_setting.env}` | `--{flag_of(name, declared_setting)}` | {default}"
            f" | {help_text} |"
        )
    return "\n".join(rows) + "\n"


def flag_of(name: str, declared_setting: Setting) -> str:
    return declared_setting.flag or name.replace("_", "-")


def _required(cls: type, name: str) -> bool:
    item: Field[Any] = next(f for f in fields(cls) if f.name == name)
    return item.default is MISSING and item.default_factory is MISSING


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# Parsers: (text, variable) -> value, or a ConfigError naming the variable.


def text(value: str, var: str) -> str:
    return value


def optional_path(value: str, var: str) -> Path | None:
    return Path(value) if value else None


def path(value: str, var: str) -> Path:
    if not value:
        raise ConfigError(f"{var} must name a file")
    return Path(value)


def readable_file(value: str, var: str) -> Path | None:
    """A file that exists and can be read now, so a typo fails at start-up; or None."""
    if not value:
        return None
    if not os.access(value, os.R_OK) or not os.path.isfile(value):
        raise ConfigError(f"{var}: {value} is not a readable file")
    return Path(value)


_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def boolean(value: str, var: str) -> bool:
    try:
        return _BOOLEANS[value.lower()]
    except KeyError:
        raise ConfigError(f"{var} must be true or false, got {value!r}") from None


def positive(value: str, var: str) -> float:
    """value as a finite number above 0; ConfigError naming var otherwise."""
    number = _number(value, var)
    if number <= 0:
        raise ConfigError(f"{var} must be positive, got {value!r}")
    return number


def non_negative(value: str, var: str) -> float:
    """value as a finite number, 0 or above; ConfigError naming var otherwise."""
    number = _number(value, var)
    if number < 0:
        raise ConfigError(f"{var} must be 0 or more, got {value!r}")
    return number


def _number(value: str, var: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{var} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{var} must be a finite number, got {value!r}")
    return number


def count(low: int = 1, high: int | None = None) -> Parse:
    """A parser of a whole number between low and high (inclusive)."""

    def parse(value: str, var: str) -> int:
        number = positive(value, var) if low > 0 else non_negative(value, var)
        if number < low or (high is not None and number > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ConfigError(f"{var} must be {bound}, got {value!r}")
        return int(number)

    return parse


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(value: str, var: str) -> float:
    """A positive duration: seconds, or a number with s, m, h or d (900, 15m, 2h, 7d)."""
    unit = _UNITS.get(value[-1:].lower(), 0.0)
    number = value[:-1] if unit else value
    try:
        amount = float(number) * (unit or 1.0)
    except ValueError:
        raise ConfigError(f"{var}={value!r} is not a duration (900, 15m, 2h, 1d)") from None
    if not (math.isfinite(amount) and amount > 0):
        raise ConfigError(f"{var}={value!r} must be a positive duration")
    return amount


def fraction(value: str, var: str) -> float:
    """A share, 0 to 1."""
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{var} must be a number from 0 to 1, got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"{var} must be from 0 to 1, got {value!r}")
    return number


def seconds_between(low: float, high: float) -> Parse:
    """A parser of a duration in seconds between low and high (inclusive)."""

    def parse(value: str, var: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{var} must be a number, got {value!r}") from None
        if not low <= number <= high:
            raise ConfigError(f"{var} must be between {low:g} and {high:g}, got {value!r}")
        return number

    return parse


def one_of(*choices: str) -> Parse:
    def parse(value: str, var: str) -> str:
        if value not in choices:
            raise ConfigError(f"{var} must be one of {list(choices)}, got {value!r}")
        return value

    return parse


def log_level(value: str, var: str) -> str:
    level = value.lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{var} must be one of {list(LOG_LEVELS)}, got {value!r}")
    return level


def address(value: str, var: str) -> str:
    """HOST:PORT with a port up to 65535."""
    split_host_port(value, var)
    return value


def optional_address(value: str, var: str) -> str:
    """HOST:PORT, or empty for off."""
    return address(value, var) if value else ""


def check_address(value: str, var: str) -> None:
    split_host_port(value, var)


def split_host_port(value: str, var: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{var} must be HOST:PORT, got {value!r}")
    return host, int(port)


_PARSERS: dict[type, Parse] = {str: text, bool: boolean, float: positive, int: count()}


# Settings every process shares.


def log_level_setting() -> Any:
    return setting(ENV_LOG_LEVEL, "info", "debug, info, warning or error", parse=log_level)


def grace_setting(default: float) -> Any:
    return setting(ENV_GRACE, default, "drain time on SIGTERM, seconds")


def metrics_setting(env: str) -> Any:
    return setting(
        env,
        "",
        "Prometheus scrape endpoint, HOST:PORT (OTLP by the standard OTEL_* variables)",
        parse=optional_address,
    )


def port_file_setting(env: str) -> Any:
    return setting(
        env, None, "the bound address is written here once listening", parse=optional_path
    )


def health_listen_setting(env: str) -> Any:
    return setting(
        env,
        "",
        "HOST:PORT of a plaintext listener serving only gRPC health and reflection, for"
        " probes that cannot speak TLS (the kubelet's); its port must differ from the"
        " service's and the metrics port",
        parse=optional_address,
    )


def check_health_listen(cls: type, values: Mapping[str, Any]) -> None:
    """cls's health_listen (when set) on a port of its own: gRPC binds with
    SO_REUSEPORT, so a port shared with the service would not fail to bind, it would
    split the service's connections. Beside a Unix socket any port will do; port 0
    never clashes."""
    health = values["health_listen"]
    if not health:
        return
    health_var = env_of(cls, "health_listen")
    _, port = split_host_port(health, health_var)
    if port == 0:
        return
    for name in ("listen", "metrics_addr"):
        other = values[name]
        other_port = other.rpartition(":")[2]
        if not other.startswith("unix:") and other_port.isdigit() and int(other_port) == port:
            raise ConfigError(
                f"{health_var} ({health}) must use another port than {env_of(cls, name)} ({other})"
            )


# What a process presents to a service it calls, declared the same way for each.


def token_file_setting(env_prefix: str, service: str) -> Any:
    return setting(
        f"{env_prefix}_TOKEN_FILE",
        None,
        f"file holding the bearer token this process presents to {service}",
        parse=readable_file,
    )


def service_ca_setting(env_prefix: str, service: str) -> Any:
    return setting(
        f"{env_prefix}_CA",
        None,
        f"CA certificate of {service}'s TLS certificate (turns TLS on)",
        parse=readable_file,
    )


def client_cert_setting(env_prefix: str, service: str) -> Any:
    return setting(
        f"{env_prefix}_CERT", None, f"client certificate for mTLS to {service}", parse=readable_file
    )


def client_key_setting(env_prefix: str) -> Any:
    return setting(
        f"{env_prefix}_KEY", None, "the client certificate's private key", parse=readable_file
    )


# A server's TLS, declared the same way by every service that serves it.


def tls_cert_setting(env: str) -> Any:
    return setting(env, None, "serve TLS with this certificate (PEM)", parse=optional_path)


def tls_key_setting(env: str) -> Any:
    return setting(env, None, "the TLS certificate's private key", parse=optional_path)


def client_ca_setting(env: str) -> Any:
    return setting(
        env, None, "require client certificates signed by this CA (mTLS)", parse=optional_path
    )


def check_tls(cls: type, values: Mapping[str, Any]) -> None:
    """A server's TLS settings (tls_cert, tls_key, client_ca) make sense together."""
    cert_var, key_var, ca_var = (env_of(cls, name) for name in ("tls_cert", "tls_key", "client_ca"))
    if (values["tls_cert"] is None) != (values["tls_key"] is None):
        raise ConfigError(f"{cert_var} and {key_var} go together")
    if values["client_ca"] is not None and values["tls_cert"] is None:
        raise ConfigError(f"{ca_var} (mTLS) needs {cert_var}")


class Settings:
    """The base of a process's settings: ``load`` reads every declared setting, lets
    ``check`` see the values together, and builds the settings from them."""

    __slots__ = ()

    @classmethod
    def load(
        cls, overrides: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None
    ) -> Self:
        """Settings from env (default: os.environ), with overrides (not None) on top."""
        values = read(cls, overrides, env)
        cls.check(values)
        return cls(**values)

    @classmethod
    def check(cls, values: dict[str, Any]) -> None:
        """The rules across settings, each broken one a ConfigError naming the
        variables; a process may also fill in here what derives from other settings."""


class ServerSettings(Settings):
    """A gRPC server's settings: with tls_cert, tls_key and client_ca, checked together,
    and health_listen on a port of its own."""

    __slots__ = ()

    @classmethod
    def check(cls, values: dict[str, Any]) -> None:
        check_tls(cls, values)
        check_health_listen(cls, values)


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """What a command presents to a hitl service: a bearer token and, for TLS, the
    service's CA (with a client certificate and key for mTLS)."""

    token: str = field(default="", repr=False)
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None


def add_target_flags(
    parser: argparse.ArgumentParser, env_prefix: str, default: str, what: str
) -> None:
    """--target (default <env_prefix>_TARGET, else default) and add_client_flags'."""
    var = f"{env_prefix}_TARGET"
    parser.add_argument(
        "--target",
        default=os.environ.get(var, default),
        help=f"{what} HOST:PORT (env {var}, default {default})",
    )
    add_client_flags(parser, env_prefix)


def add_client_flags(parser: argparse.ArgumentParser, env_prefix: str) -> None:
    """--token-file, --ca, --cert and --key of a command calling a service, each
    defaulting to <env_prefix>_TOKEN_FILE, _CA, _CERT and _KEY; <env_prefix>_TOKEN may
    hold the token itself."""
    parser.add_argument(
        "--token-file",
        type=Path,
        default=os.environ.get(f"{env_prefix}_TOKEN_FILE") or None,
        help=f"file holding your bearer token (env {env_prefix}_TOKEN_FILE,"
        f" or the token itself in {env_prefix}_TOKEN)",
    )
    flags = (
        ("ca", "CA of the service's TLS certificate (turns TLS on)"),
        ("cert", "client certificate for mTLS"),
        ("key", "its private key"),
    )
    for flag, what in flags:
        variable = f"{env_prefix}_{flag.upper()}"
        parser.add_argument(
            f"--{flag}",
            type=Path,
            default=os.environ.get(variable) or None,
            help=f"{what} (env {variable})",
        )


def client_credentials(args: argparse.Namespace, env_prefix: str) -> ClientCredentials:
    """The credentials add_client_flags asked for; ConfigError naming a file that
    cannot be read."""

    token = os.environ.get(f"{env_prefix}_TOKEN", "")
    if args.token_file is not None:
        token = (read_file(args.token_file) or b"").decode().strip()
    return ClientCredentials(token, read_file(args.ca), read_file(args.cert), read_file(args.key))


def read_token(path: Path, var: str) -> str:
    """The bearer token in the file at path; ConfigError naming var otherwise."""
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{var}: cannot read {path}: {exc}") from exc
    if not token:
        raise ConfigError(f"{var}: {path} is empty")
    return token


def credentials_of(settings: Any, service: str) -> ClientCredentials:
    """What a process presents to service, from its settings ``<service>_token_file``,
    ``_ca``, ``_cert`` and ``_key`` (the files read now; ConfigError naming one that
    cannot be)."""
    token_file = getattr(settings, f"{service}_token_file")
    token = (
        ""
        if token_file is None
        else read_token(token_file, env_of(type(settings), f"{service}_token_file"))
    )
    files = (getattr(settings, f"{service}_{part}") for part in ("ca", "cert", "key"))
    return ClientCredentials(token, *map(read_file, files))


def read_file(path: Path | None, var: str = "") -> bytes | None:
    """The bytes of a file a setting names (None when it names none); ConfigError
    naming the setting and the file when it cannot be read."""
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        where = f"{var}: " if var else ""
        raise ConfigError(f"{where}cannot read {path}: {exc.strerror}") from exc
