"""Model-update triggers: due by volume or by age, a dataset snapshot written and
announced to a real HTTP webhook (signed), recorded only once every destination
took it, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.clock import FakeClock
from sidecar.feedback.records import decided, received
from sidecar.feedback.store import FeedbackStore
from sidecar.feedback.trigger import ModelUpdates, webhook
from tests.unit.feedback.test_validation import decision, event

KEY = b"a shared secret"


class Hook:
    """A real HTTP server recording the bodies and signatures POSTed to it; it answers
    500 while ``failing``."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], str]] = []
        self.failing = False
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hook.failing:
                    self.send_response(500)
                else:
                    hook.received.append((json.loads(body), self.headers["X-Hitl-Signature"]))
                    hook.bodies.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return None

        self.bodies: list[bytes] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hook() -> Iterator[Hook]:
    running = Hook()
    yield running
    running.server.shutdown()
    running.server.server_close()


def label(store: FeedbackStore, request_id: str, at: float) -> None:
    store.add_decisions([decided(decision(request_id=request_id, decided_at=at), "s", at)])
    outcome = event(
        feedback_id=f"o-{request_id}", request_id=request_id, label=fpb.Label(class_index=1)
    )
    store.add([received(outcome, "s", at)])


def test_a_volume_of_new_labels_triggers_a_signed_announcement_once(
    store: FeedbackStore, hook: Hook, tmp_path: Path
) -> None:
    clock = FakeClock(1000.0)
    updates = ModelUpdates(store, clock, tmp_path / "ds", 3, 0.0, [webhook(hook.url, KEY)])
    for i in range(2):
        label(store, f"a{i}", 900.0)
    assert updates.check() == []
    label(store, "a2", 950.0)
    (announced,) = updates.check()
    assert (announced["model"], announced["rows"], announced["new_labels"]) == ("digits", 3, 3)
    assert Path(announced["path"]).name == f"{announced['dataset']}.jsonl"
    assert Path(announced["path"]).exists()
    assert Path(announced["manifest"]).exists()
    (body, signature), raw = hook.received[0], hook.bodies[0]
    assert body == announced
    assert signature == "sha256=" + hmac.new(KEY, raw, hashlib.sha256).hexdigest()
    assert updates.check() == []  # counted from the trigger on
    clock.advance(10)
    for i in range(3, 6):
        label(store, f"a{i}", clock.now())
    clock.advance(1)  # the snapshot takes what was received before it
    (again,) = updates.check()
    assert (again["rows"], again["new_labels"]) == (6, 3)


def test_a_failed_destination_is_tried_again_and_age_triggers_too(
    store: FeedbackStore, hook: Hook, tmp_path: Path
) -> None:
    clock = FakeClock(1000.0)
    updates = ModelUpdates(store, clock, tmp_path / "ds", 0, 60.0, [webhook(hook.url, None)])
    label(store, "b0", 990.0)
    assert updates.check() == []  # 10 s old
    clock.advance(60)
    hook.failing = True
    assert updates.check() == []
    assert updates.failures == 1
    hook.failing = False
    (announced,) = updates.check()
    assert announced["new_labels"] == 1
    assert hook.received[0][1] is None  # no key, no signature
    rating = event(feedback_id="r", request_id="b0", type=fpb.FEEDBACK_RATING, label=None)
    rating.rating = 0.5
    store.add([received(rating, "s", clock.now())])  # not a label: nothing new
    clock.advance(3600)
    assert updates.check() == []
