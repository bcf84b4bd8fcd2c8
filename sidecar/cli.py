"""The ``hitl`` command.

hitl sidecar --policy policy.yaml        run a sidecar on a policy file
hitl sidecar --registry HOST:PORT ...    run a sidecar fed by the registry
hitl demo                                the end-to-end demo on the embedded default
hitl route --model M --logits 0.1,2.3    send one Route to a running sidecar
hitl calibrate fit|evaluate|thresholds|export|compare   offline calibrator work
hitl review serve|next|resolve|list|export|submit   the review queue and its reviewers
hitl registry serve|keygen|principal|audit   the policy registry
hitl policy show|propose|proposals|approve|reject|history|rollback|diff   policies in it
hitl escalations status|dead-letters|replay   inspect a sidecar's spools
hitl injector serve|render                the Kubernetes sidecar injector webhook
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import io
import json
import signal
import sys
import uuid
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from calibrators.cli import add_commands as add_calibrate_commands
from sidecar.config import DEFAULT_LISTEN, SidecarConfig
from sidecar.errors import ConfigError, HitlError
from sidecar.escalation.cli import add_commands as add_escalation_commands
from sidecar.injector.cli import add_commands as add_injector_commands
from sidecar.registry.cli import add_commands as add_registry_commands
from sidecar.registry.cli import add_publish_command
from sidecar.review.cli import add_commands as add_review_commands


def main(argv: list[str] | None = None) -> int:
    # SIGUSR1 prints every thread's stack to stderr: how an SRE (or a test) sees where
    # a process that will not stop is waiting. (A stderr without a file descriptor, as
    # under pytest's capture, cannot take it.)
    with contextlib.suppress(io.UnsupportedOperation, ValueError):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except (ConfigError, HitlError) as exc:
        print(f"hitl: {exc}", file=sys.stderr)
        return 2
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hitl", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    side = commands.add_parser("sidecar", help="run the routing sidecar")
    side.add_argument("--policy", help="policy file, JSON or YAML (env HITL_POLICY)")
    side.add_argument(
        "--listen", help=f"HOST:PORT or unix:PATH (env HITL_LISTEN, default {DEFAULT_LISTEN})"
    )
    side.add_argument(
        "--health-listen",
        help="HOST:PORT of a listener serving only gRPC health, for probes from outside"
        " the pod (env HITL_HEALTH_LISTEN, default off)",
    )
    side.add_argument("--state-dir", help="local state directory (env HITL_STATE_DIR)")
    side.add_argument("--audit-log", help="audit log path, - for stdout (env HITL_AUDIT_LOG)")
    side.add_argument(
        "--sink",
        help="where escalations go: review://HOST:PORT or nats://HOST:PORT (env HITL_SINK)",
    )
    side.add_argument("--deployment", help="names the NATS stream (env HITL_DEPLOYMENT)")
    side.add_argument("--metrics-addr", help="Prometheus scrape HOST:PORT (env HITL_METRICS_ADDR)")
    side.add_argument("--log-level", help="debug, info, warning or error (env HITL_LOG_LEVEL)")
    side.add_argument("--port-file", help="write the bound address here once listening")
    side.add_argument(
        "--registry",
        help="take the policy from the registry at HOST:PORT instead of a file (env HITL_REGISTRY)",
    )
    side.add_argument(
        "--registry-token-file",
        help="file holding the registry bearer token (env HITL_REGISTRY_TOKEN_FILE)",
    )
    side.add_argument(
        "--registry-public-key",
        help="PEM key the registry signs policies with (env HITL_REGISTRY_PUBLIC_KEY)",
    )
    side.add_argument(
        "--registry-ca",
        help="CA certificate: connect to the registry over TLS (env HITL_REGISTRY_CA)",
    )
    side.add_argument(
        "--registry-cert", help="client certificate for mTLS (env HITL_REGISTRY_CERT)"
    )
    side.add_argument("--registry-key", help="its private key (env HITL_REGISTRY_KEY)")
    side.add_argument(
        "--registry-poll-seconds",
        help="poll interval while the Watch stream is down (env HITL_REGISTRY_POLL_SECONDS, 10)",
    )
    side.set_defaults(run=_run_sidecar)

    demo = commands.add_parser("demo", help="train, calibrate, route and report, end to end")
    demo.add_argument(
        "--workdir", default="demo-output", help="where the demo writes (default demo-output)"
    )
    demo.set_defaults(run=_run_demo)

    route = commands.add_parser(
        "route", help="send one Route to a running sidecar and print the answer"
    )
    route.add_argument("--target", default=DEFAULT_LISTEN, help="sidecar address")
    route.add_argument("--model", required=True)
    route.add_argument("--logits", required=True, help="comma-separated values")
    route.add_argument("--request-id", default="", help="default: a new UUID")
    route.add_argument("--domain", default="")
    route.add_argument(
        "--attr", action="append", default=[], help="NAME=VALUE (numbers become numeric)"
    )
    route.set_defaults(run=_run_route)

    add_publish_command(add_calibrate_commands(commands))
    add_review_commands(commands)
    add_escalation_commands(commands)
    add_injector_commands(commands)
    add_registry_commands(commands)
    return parser


def _run_sidecar(args: argparse.Namespace) -> int:
    from sidecar.app import serve
    from sidecar.telemetry.logs import configure_logging

    config = SidecarConfig.load(
        {
            "policy": args.policy,
            "listen": args.listen,
            "health_listen": args.health_listen,
            "state_dir": args.state_dir,
            "audit_log": args.audit_log,
            "sink": args.sink,
            "deployment": args.deployment,
            "metrics_addr": args.metrics_addr,
            "log_level": args.log_level,
            "port_file": args.port_file,
            "registry": args.registry,
            "registry_token_file": args.registry_token_file,
            "registry_public_key": args.registry_public_key,
            "registry_ca": args.registry_ca,
            "registry_cert": args.registry_cert,
            "registry_key": args.registry_key,
            "registry_poll_seconds": args.registry_poll_seconds,
        }
    )
    configure_logging(config.log_level)
    asyncio.run(serve(config))
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from sidecar.demo import run_demo

    return run_demo(Path(args.workdir))


def _run_route(args: argparse.Namespace) -> int:
    from sidecar.client import RouterClient, route_request

    strings: dict[str, str] = {}
    numbers: dict[str, float] = {}
    for item in args.attr:
        name, _, value = item.partition("=")
        try:
            numbers[name] = float(value)
        except ValueError:
            strings[name] = value
    request = route_request(
        args.request_id or str(uuid.uuid4()),
        args.model,
        [float(x) for x in args.logits.split(",")],
        domain=args.domain,
        string_attributes=strings,
        numeric_attributes=numbers,
    )
    import grpc

    with RouterClient(args.target) as client:
        try:
            response = client.route(request)
        except grpc.RpcError as exc:
            print(f"hitl: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(json.dumps(MessageToDict(response, always_print_fields_with_no_presence=True), indent=2))
    return 0
