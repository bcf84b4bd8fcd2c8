"""What the services' commands share: ``hitl <service> serve``, ``hitl <service>
principal add|list`` (who may call a service, administered on its database
directly, since the first principals must exist before anyone can call it; each
service with its own roles and store), and how a refused call is reported.

The services' commands import the server, client or store they use when they run:
building ``hitl``'s parser loads none of them (``hitl --help`` starts in a third of
the time)."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from sidecar.auth import Principal, hash_token, new_token
from sidecar.settings import add_flags, declared, flag_values
from sidecar.storage.url import check_db

Run = Callable[[argparse.Namespace], int]


def add_serve_command(actions: Any, help: str, settings: Any, serve: Callable[[Any], None]) -> None:
    """``serve``: a flag for every setting of the settings class; it loads them (flags
    over the environment), sets up logging at their log level and runs serve."""
    parser = actions.add_parser("serve", help=help)
    add_flags(parser, settings)

    def run(args: argparse.Namespace) -> int:
        from sidecar.telemetry.logs import configure_logging

        config = settings.load(flag_values(args, settings))
        configure_logging(config.log_level)
        serve(config)
        return 0

    parser.set_defaults(run=run)


def moment(text: str) -> float:
    """A time given as Unix seconds or ISO 8601 with a zone (an argparse type)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither Unix seconds nor an ISO 8601 time"
        ) from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone (Z or +HH:MM)")
    return when.timestamp()


def reports_refusals(run: Run) -> Run:
    """A command calling a service: a refused call prints ``hitl: CODE: message`` on
    stderr and exits 1 (no traceback)."""

    @functools.wraps(run)
    def command(args: argparse.Namespace) -> int:
        import grpc

        try:
            return run(args)
        except grpc.RpcError as exc:
            code = exc.code().name if isinstance(exc, grpc.Call) else "ERROR"
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            print(f"hitl: {code}: {detail}", file=sys.stderr)
            return 1

    return command


class Closable(Protocol):
    def close(self) -> None: ...


def print_rows(store: Closable, rows: Callable[[], Iterable[Any]]) -> int:
    """A command listing a service's database directly: each row rows reads from the
    store (a dataclass) as a line of JSON, then the store closed."""
    try:
        for row in rows():
            print(json.dumps(asdict(row)))
    finally:
        store.close()
    return 0


class PrincipalStore(Protocol):
    def add_principal(
        self, name: str, roles: frozenset[str], token_sha256: str, cert_subject: str, now: float
    ) -> None: ...

    def principals(self) -> list[Principal]: ...

    def close(self) -> None: ...


Store = TypeVar("Store")


class StoreFlag(Generic[Store]):
    """``--db`` of a command that acts on a service's database directly: its variable
    and default are those of the ``db`` setting of the service's settings class."""

    def __init__(self, settings: type, open_store: Callable[[str], Store]) -> None:
        declared_db = dict(declared(settings))["db"]
        self._env, self._default = declared_db.env, declared_db.unset
        self._open_store = open_store

    def add(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--db",
            help=f"sqlite:PATH or postgresql://... (env {self._env}, default {self._default})",
        )

    def open(self, args: argparse.Namespace) -> Store:
        url = args.db or os.environ.get(self._env, self._default)
        return self._open_store(check_db(url, self._env))


def add_principal_commands(
    actions: Any, service: str, roles: Iterable[str], db: StoreFlag[Any]
) -> None:
    """Add ``principal add`` and ``principal list`` under a service's actions."""
    principal = actions.add_parser("principal", help=f"who may call the {service}")
    who = principal.add_subparsers(required=True, metavar="ACTION")
    add = who.add_parser("add", help="create or replace a principal; prints its new token")
    add.add_argument("name")
    add.add_argument("--role", action="append", required=True, choices=sorted(roles), dest="roles")
    add.add_argument("--cert-subject", default="", help="client certificate CN (mTLS)")
    add.add_argument("--no-token", action="store_true", help="certificate only, no token")
    db.add(add)
    add.set_defaults(run=lambda args: _add(args, db.open(args)))
    listing = who.add_parser("list", help="principals and their roles")
    db.add(listing)
    listing.set_defaults(run=lambda args: _list(args, db.open(args)))


def _add(args: argparse.Namespace, store: PrincipalStore) -> int:
    token = "" if args.no_token else new_token()
    try:
        store.add_principal(
            args.name,
            frozenset(args.roles),
            hash_token(token) if token else "",
            args.cert_subject,
            time.time(),
        )
    finally:
        store.close()
    # The token is shown once: only its hash is kept.
    print(json.dumps({"name": args.name, "roles": sorted(args.roles), "token": token}))
    return 0


def _list(args: argparse.Namespace, store: PrincipalStore) -> int:
    try:
        for principal in store.principals():
            print(json.dumps({"name": principal.name, "roles": sorted(principal.roles)}))
    finally:
        store.close()
    return 0
