"""The benchmark's FastAPI peer decides as the sidecar does: the comparison make bench
prints is of like with like."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.harness import prepare
from benchmarks.peer_bench import bodies_of, compare_decisions, start_peer
from tests.integration.conftest import start_sidecar

pytestmark = pytest.mark.integration


def test_the_peer_decides_every_request_as_the_sidecar(tmp_path: Path) -> None:
    """The benchmark's request mix, 200 requests: identical decisions field by field."""
    payloads = prepare(tmp_path)
    sidecar = start_sidecar(tmp_path, tmp_path / "policy.yaml")
    peer, url = start_peer(tmp_path, floor=False)
    try:
        sidecar.wait_serving()
        result = compare_decisions(sidecar.address, url, payloads, bodies_of(payloads), 200)
    finally:
        peer.stop()
        sidecar.stop()
    assert result == {"checked": 200, "same": 200, "differing": []}
    assert (tmp_path / "peer-state" / "escalations.jsonl").stat().st_size > 0
