"""The peer: what a team would build in a day instead of the sidecar, measured beside it
(``benchmarks.peer_bench``). FastAPI on uvicorn with uvloop and httptools, one worker,
POST /route with a JSON body: the same ONNX calibrator and the same decision (the
policy's thresholds, domains, rules, experiment and audit sample, through the
sidecar's own pure core, so the two can be checked request by request), one
buffered audit line per decision, and each escalation appended to a file and
fsync'd before the answer. No replay window, no tracing, no metrics, no hot reload,
no group commit: what such a service usually leaves out.

    python -m benchmarks.peer --policy P --state-dir D --port-file F [--floor]

``--floor`` serves the same endpoint doing nothing but parse the body and echo the
request id: the peer's framework floor, as ``benchmarks.floor`` is the sidecar's."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from sidecar.core.decision import CalibrationFailure, decide
from sidecar.core.request import RouteInput
from sidecar.core.signals import signals_of
from sidecar.policy.loader import build_snapshot, parse_policy_bytes


class RouteBody(BaseModel):
    request_id: str
    model: str
    logits: list[float]
    model_version: str = ""
    domain: str = ""
    string_attributes: dict[str, str] = {}
    numeric_attributes: dict[str, float] = {}
    input_ref: str = ""
    context: dict[str, str] = {}


def floor_app() -> FastAPI:
    app = FastAPI()

    @app.post("/route")
    async def route(body: RouteBody) -> dict[str, Any]:
        return {"request_id": body.request_id}

    return app


def peer_app(policy_file: Path, state: Path) -> FastAPI:
    snapshot = build_snapshot(
        parse_policy_bytes(policy_file.read_bytes(), str(policy_file)), policy_file.parent, "peer"
    )
    policy = snapshot.policy
    state.mkdir(parents=True, exist_ok=True)
    audit = (state / "audit.jsonl").open("ab", buffering=1 << 16)
    escalations = (state / "escalations.jsonl").open("ab", buffering=0)
    app = FastAPI()

    @app.post("/route")
    async def route(body: RouteBody) -> dict[str, Any]:
        calibrator = snapshot.calibrators.get(body.model)
        if calibrator is None or len(body.logits) != calibrator.metadata.class_count:
            raise HTTPException(400, "unknown model or wrong number of logits")
        logits = np.array(body.logits, dtype=np.float32)
        probabilities = calibrator(logits[np.newaxis, :])
        signals = signals_of(probabilities)[0] or CalibrationFailure.NON_FINITE
        request = RouteInput(
            body.request_id, body.model, logits, body.model_version, 1, body.domain,
            body.string_attributes, body.numeric_attributes, body.input_ref, body.context,
        )  # fmt: skip
        now = time.time()
        decision = decide(request, policy, signals, now)
        answer = {
            "request_id": body.request_id,
            "tier": decision.tier.name,
            "reason": decision.reason.name,
            "predicted_class": decision.predicted_class,
            "predicted_label": decision.predicted_label,
            "calibrated_confidence": decision.calibrated_confidence,
            "rule_id": decision.rule_id,
            "t_high": decision.t_high,
            "t_low": decision.t_low,
            "experiment_arm": decision.experiment_arm,
            "policy_revision": decision.policy_revision,
            "escalated": decision.escalate,
        }
        record = {**answer, "timestamp": now, "logits": body.logits, "domain": body.domain,
                  "string_attributes": body.string_attributes,
                  "numeric_attributes": body.numeric_attributes, "context": body.context}  # fmt: skip
        audit.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        if decision.escalate:
            escalations.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            await asyncio.to_thread(os.fsync, escalations.fileno())
        return answer

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path)
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--floor", action="store_true")
    args = parser.parse_args()
    if not args.floor and (args.policy is None or args.state_dir is None):
        parser.error("--policy and --state-dir are required without --floor")
    app = floor_app() if args.floor else peer_app(args.policy, args.state_dir)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)  # connections wait in the backlog until uvicorn accepts them
    config = uvicorn.Config(
        app, loop="uvloop", http="httptools", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    host, port = sock.getsockname()
    tmp = args.port_file.with_name(args.port_file.name + ".tmp")
    tmp.write_text(f"{host}:{port}")
    tmp.replace(args.port_file)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
