"""What the monitor's commands read, opened so that a bad setting is one line naming
it: the registry (unreachable, or refusing the credentials) and the feedback log (a
SQLite file that is not there is refused, never created empty; a database that cannot
be read names the setting)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from monitor.config import MonitorConfig
from sidecar.errors import ConfigError, StoreUnavailable
from sidecar.settings import env_of

if TYPE_CHECKING:
    from sidecar.feedback.store import FeedbackStore
    from sidecar.registry.client import RegistryClient


@contextmanager
def registry(config: MonitorConfig) -> Iterator[RegistryClient]:
    """The registry as the monitor's principal. A call it cannot reach or whose
    credentials it refuses raises ConfigError naming the setting; any other refusal
    propagates as it is (``reports_refusals`` prints it)."""
    import grpc

    with config.registry_client() as client:
        try:
            yield client
        except grpc.RpcError as exc:
            if not isinstance(exc, grpc.Call):
                raise
            code, detail = exc.code(), (exc.details() or "").partition("\n")[0]
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                var = env_of(MonitorConfig, "registry")
                raise ConfigError(
                    f"--registry ({var}) {config.registry}: cannot be reached: {detail}"
                ) from exc
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                var = env_of(MonitorConfig, "registry_token_file")
                raise ConfigError(
                    f"--registry-token-file ({var}): the registry refused it: {detail}"
                ) from exc
            raise


@contextmanager
def feedback_log(config: MonitorConfig) -> Iterator[FeedbackStore]:
    """``open_feedback_log``, closed afterwards."""
    store = open_feedback_log(config)
    try:
        yield store
    finally:
        store.close()


def open_feedback_log(config: MonitorConfig) -> FeedbackStore:
    """The feedback service's store; ConfigError naming the setting when it is not
    there (a mistyped SQLite path would otherwise be a new, empty log that the
    monitor watched forever) or cannot be read."""
    from sidecar.feedback.store import open_store
    from sidecar.storage.url import is_postgres, sqlite_path

    where = f"--db ({env_of(MonitorConfig, 'db')})"
    if not is_postgres(config.db) and not sqlite_path(config.db).is_file():
        raise ConfigError(f"{where}: {config.db}: no such feedback database")
    try:
        return open_store(config.db)
    except StoreUnavailable as exc:  # libpq's messages run over lines: one line here
        raise ConfigError(f"{where}: {' '.join(str(exc).split())}") from exc
