"""A real Label Studio server for tests: ``label-studio start`` from its own virtual
environment (``.venv-labelstudio`` at the repository's root, or the one
HITL_LABELSTUDIO_VENV names; ``.ci/run`` makes it), offline on a loopback port with
SQLite, its admin and API token made by the environment at the first start.

``prepare`` makes a data folder once (the first start migrates its database, about a
minute; a start on a prepared folder takes seconds); ``start`` runs the server on
it. Either raises LabelStudioUnavailable naming what failed, which the fixture turns
into a skip: the tests need the real server and say so when it cannot run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "admin@example.com"
# Label Studio's legacy token is 40 hex characters (LABEL_STUDIO_USER_TOKEN).
TOKEN = "5f3c0a9e1b7d24c68e0f1a2b3c4d5e6f708192a3"  # noqa: S105 (a test server's)
START_SECONDS = 240.0  # a first start on a loaded 2-core machine
_LISTENING = re.compile(r"Starting development server at http://127\.0\.0\.1:(\d+)/")


class LabelStudioUnavailable(Exception):
    """Label Studio cannot run here; the message says why."""


@dataclass
class LabelStudio:
    process: subprocess.Popen[bytes]
    url: str  # http://127.0.0.1:PORT, the port it really bound
    log: Path

    def stop(self) -> None:
        """SIGTERM by pid, then SIGKILL if it has not gone in 20 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def venv() -> Path:
    return Path(os.environ.get("HITL_LABELSTUDIO_VENV") or ROOT / ".venv-labelstudio")


def environment(data: Path) -> dict[str, str]:
    """The settings that make Label Studio start offline on loopback (issue 33)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(data),
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LABEL_STUDIO_USERNAME": ADMIN,
        "LABEL_STUDIO_PASSWORD": "hitl-admin-password",
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "SSRF_PROTECTION_ENABLED": "false",  # else a webhook to 127.0.0.1 is refused
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "SECRET_KEY": "hitl-tests-label-studio-secret-key",
        "SENTRY_DSN": "",
        "DJANGO_DB": "sqlite",
        "PYTHONUNBUFFERED": "1",  # the "Starting development server at" line, at once
    }


def start(data: Path, log: Path) -> LabelStudio:
    """Label Studio on data, on a free loopback port, answering /health."""
    command = venv() / "bin" / "label-studio"
    if not command.exists():
        raise LabelStudioUnavailable(
            f"no Label Studio at {command}: create it with python3 -m venv {venv()} &&"
            f" {venv()}/bin/pip install 'label-studio==1.23.2' 'sentry-sdk<3'"
            " (or set HITL_LABELSTUDIO_VENV)"
        )
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    arguments = ["start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(port)]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(command), *arguments],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment(data),
            cwd=data,
        )
    server = LabelStudio(process, "", log)
    try:
        bound = _bound_port(process, log)
        if bound != port:  # it moves to the next port when the one asked for is taken
            raise LabelStudioUnavailable(f"Label Studio bound port {bound}, not {port}")
        server.url = f"http://127.0.0.1:{bound}"
        _wait_healthy(server)
    except BaseException:
        server.stop()
        raise
    return server


def _bound_port(process: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        found = _LISTENING.search(log.read_text(errors="replace"))
        if found:
            return int(found[1])
        if process.poll() is not None:
            raise LabelStudioUnavailable(
                f"Label Studio exited {process.returncode} at start: {_tail(log)}"
            )
        time.sleep(0.5)
    raise LabelStudioUnavailable(f"Label Studio did not start in {START_SECONDS:g} s: {_tail(log)}")


def _wait_healthy(server: LabelStudio) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=5) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if server.process.poll() is not None:
            raise LabelStudioUnavailable(f"Label Studio exited: {_tail(server.log)}")
        time.sleep(0.5)
    raise LabelStudioUnavailable(f"Label Studio's /health never answered: {_tail(server.log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]
