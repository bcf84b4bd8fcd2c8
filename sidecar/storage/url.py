"""A store's database named by one URL, for the review queue and the registry alike:
``postgresql://...`` (a libpq URI; ``postgres://`` too) or ``sqlite:PATH`` (or a bare
path)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sidecar.errors import ConfigError

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_PREFIX = "sqlite:"


def is_postgres(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix(SQLITE_PREFIX))


def check_db(url: str, var: str) -> str:
    """url, when it names a database this install can open; else ConfigError naming var."""
    if is_postgres(url):
        if importlib.util.find_spec("psycopg") is None:
            raise ConfigError(
                f"{var}: PostgreSQL needs psycopg: pip install 'hitl-sidecar[postgres]'"
            )
        return url
    foreign = "://" in url and not url.startswith(SQLITE_PREFIX)
    if foreign or not url.removeprefix(SQLITE_PREFIX):
        raise ConfigError(f"{var} must be sqlite:PATH or postgresql://..., got {url!r}")
    return url
