"""A registry for tests: ``hitl registry serve`` as a real process, or the same server
in-process on its own event loop thread, on SQLite or PostgreSQL, with a signing
key, a calibrator uploaded and principals for every role.

Principals: ``alice`` operator, ``bob`` approver, ``carol`` operator and approver,
``vic`` viewer, ``sid`` sidecar. Their tokens are in ``tokens``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.auth import hash_token
from sidecar.policy.signing import generate_key_pair
from sidecar.registry.app import RegistryServer, build
from sidecar.registry.client import RegistryClient
from sidecar.registry.config import RegistryConfig
from sidecar.registry.model import Role
from sidecar.registry.store import RegistryStore, open_store
from tests.artefacts import temperature_artefact
from tests.postgres import dsn_for, fresh_schema

ROLES = {
    "alice": {Role.OPERATOR},
    "bob": {Role.APPROVER},
    "carol": {Role.OPERATOR, Role.APPROVER},
    "vic": {Role.VIEWER},
    "sid": {Role.SIDECAR},
}
BACKENDS = ("sqlite", "postgresql")


@dataclass
class Keys:
    private: Path
    public: Path


@dataclass
class Registry:
    address: str
    db: str
    keys: Keys
    tokens: dict[str, str]
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    server: RegistryServer | None = None
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    def client(self, who: str = "", **kw: Any) -> RegistryClient:
        return RegistryClient(self.address, self.tokens.get(who, ""), **kw)

    def token_file(self, who: str) -> Path:
        path = self.workdir / f"{who}.token"
        path.write_text(self.tokens[who])
        return path

    @property
    def store(self) -> RegistryStore:
        assert self.server is not None, "only an in-process registry exposes its store"
        return self.server.registry.store


@contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    """A fresh database URL for backend."""
    if backend == "sqlite":
        yield f"sqlite:{workdir / 'registry.db'}"
    else:
        with fresh_schema() as schema:
            yield dsn_for(schema)


def prepare(db: str, workdir: Path) -> tuple[Keys, dict[str, str]]:
    """A key pair and the test principals, written before the registry starts."""
    keys = Keys(workdir / "keys" / "signing.key", workdir / "keys" / "signing.pub")
    generate_key_pair(keys.private, keys.public)
    tokens = {name: f"token-{name}-{os.urandom(8).hex()}" for name in ROLES}
    store = open_store(db)
    try:
        for name, roles in ROLES.items():
            store.add_principal(name, frozenset(roles), hash_token(tokens[name]), "", time.time())
    finally:
        store.close()
    return keys, tokens


@contextmanager
def in_process(backend: str, workdir: Path, **settings: Any) -> Iterator[Registry]:
    """The registry server on an event loop thread of this process."""
    with database(backend, workdir) as db:
        keys, tokens = prepare(db, workdir)
        config = RegistryConfig(
            signing_key=keys.private,
            listen="127.0.0.1:0",
            db=db,
            head_poll_seconds=0.1,
            shutdown_grace_seconds=0.5,
            **settings,
        )
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()

        async def start() -> RegistryServer:
            server = build(config)
            await server.start()
            return server

        server = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
        try:
            yield Registry(server.address, db, keys, tokens, workdir, server=server, _loop=loop)
        finally:
            asyncio.run_coroutine_threadsafe(server.stop(0.2), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


@contextmanager
def as_process(backend: str, workdir: Path, *extra: str) -> Iterator[Registry]:
    """``hitl registry serve`` as a child process (killed afterwards)."""
    with ExitStack() as stack:
        db = stack.enter_context(database(backend, workdir))
        keys, tokens = prepare(db, workdir)
        registry = Registry("", db, keys, tokens, workdir)
        start_process(registry, *extra)
        try:
            yield registry
        finally:
            stop_process(registry)


def start_process(registry: Registry, *extra: str, listen: str = "127.0.0.1:0") -> None:
    """Start (or restart) the registry process; waits for its port file."""
    port_file = registry.workdir / "registry.addr"
    port_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "hitl", "registry", "serve"]
    command += ["--signing-key", str(registry.keys.private), "--db", registry.db]
    command += ["--listen", listen, "--port-file", str(port_file), *extra]
    with (registry.workdir / "registry.log").open("ab") as log:
        registry.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HITL_REGISTRY_HEAD_POLL_SECONDS": "0.1"},
        )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if registry.process.poll() is not None or time.monotonic() > deadline:
            registry.process.kill()
            log_text = (registry.workdir / "registry.log").read_text()
            raise AssertionError(f"registry did not start: {log_text}")
        time.sleep(0.02)
    registry.address = port_file.read_text()


def stop_process(registry: Registry) -> None:
    if registry.process is not None and registry.process.poll() is None:
        registry.process.kill()
        registry.process.wait()


def registry_policy(sha256: str, version: str = "t-v1", **model: Any) -> dict[str, Any]:
    """A registry policy document (no revision or issued_at) for model 'm'."""
    body: dict[str, Any] = {
        "calibrator": {"name": "cal", "sha256": sha256, "version": version},
        "thresholds": {"t_high": 0.9, "t_low": 0.5},
    }
    body.update(model)
    return {"models": {"m": body}}


def upload_artefact(
    registry: Registry, path: Path, temperature: float = 1.0, version: str = "t-v1"
) -> str:
    """Write a temperature artefact and upload it as alice; return its sha256."""
    sha = temperature_artefact(path, temperature, version)
    with registry.client("alice") as client:
        client.put_calibrator(path.read_bytes(), path.stem, version)
    return sha
