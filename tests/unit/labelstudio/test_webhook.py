"""The webhook receiver in process (Starlette's TestClient): the bearer secret first,
then the payload; only annotation actions reach the bridge, by task and annotation id."""

from __future__ import annotations

from typing import Any, cast

import pytest
from starlette.testclient import TestClient

from sidecar.labelstudio.bridge import Bridge
from sidecar.labelstudio.webhook import webhook_application

SECRET = b"a-secret-of-the-tests-0123456789"
AUTH = {"Authorization": "Bearer " + SECRET.decode()}


class FakeBridge:
    """Records what the receiver asks of the bridge; fails when told to."""

    def __init__(self, fail: bool = False) -> None:
        self.asked: list[tuple[int, int]] = []
        self.fail = fail

    def on_webhook(self, task_id: int, annotation_id: int) -> str:
        if self.fail:
            raise ConnectionError("Label Studio is down")
        self.asked.append((task_id, annotation_id))
        return "resolved"


def client(bridge: FakeBridge) -> TestClient:
    return TestClient(webhook_application(cast(Bridge, bridge), SECRET, None))


def payload(action: str = "ANNOTATION_CREATED", **annotation: Any) -> dict[str, Any]:
    return {"action": action, "annotation": {"id": 5, "task": 7, **annotation}, "project": {}}


def test_an_annotation_is_handed_to_the_bridge_by_its_ids() -> None:
    bridge = FakeBridge()
    answer = client(bridge).post("/webhook", json=payload(), headers=AUTH)
    assert (answer.status_code, answer.json()) == (200, {"result": "resolved"})
    assert bridge.asked == [(7, 5)]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": SECRET.decode()}, 401),
        ({"Authorization": "Token " + SECRET.decode()}, 401),
        ({"Authorization": "Bearer wrong"}, 403),
        ({"Authorization": "Bearer " + SECRET.decode() + "x"}, 403),
    ],
)
def test_without_the_secret_nothing_happens(headers: dict[str, str], status: int) -> None:
    bridge = FakeBridge()
    answer = client(bridge).post("/webhook", json=payload(), headers=headers)
    assert answer.status_code == status
    assert "authorization" in answer.json()["error"]
    assert bridge.asked == []


@pytest.mark.parametrize(
    ("body", "field"),
    [(b"not json", "body"), (b"[1]", "body"), (b'{"action": "ANNOTATION_UPDATED"}', "annotation")],
)
def test_a_bad_payload_is_a_400_naming_what_is_wrong(body: bytes, field: str) -> None:
    bridge = FakeBridge()
    answer = client(bridge).post("/webhook", content=body, headers=AUTH)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith(f"{field}:")
    assert bridge.asked == []


def test_other_actions_are_ignored() -> None:
    bridge = FakeBridge()
    answer = client(bridge).post("/webhook", json=payload("PROJECT_UPDATED"), headers=AUTH)
    assert answer.status_code == 200
    assert bridge.asked == []


def test_a_failure_reading_back_is_a_503_for_the_poll_to_retry() -> None:
    answer = client(FakeBridge(fail=True)).post("/webhook", json=payload(), headers=AUTH)
    assert answer.status_code == 503
    assert "Label Studio is down" not in answer.text
