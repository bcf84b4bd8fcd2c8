"""The ``hitl`` command.

hitl sidecar --policy policy.yaml        run a sidecar on a policy file
hitl sidecar --registry HOST:PORT ...    run a sidecar fed by the registry
hitl demo                                the end-to-end demo on the embedded default
hitl route --model M --logits 0.1,2.3 [--str K=V] [--num K=N]   one Route to a running sidecar
hitl calibrate fit|evaluate|thresholds|export|compare   offline calibrator work
hitl review serve|next|resolve|list|export|submit   the review queue and its reviewers
hitl feedback serve|principal|record|get   the feedback service and its event log
hitl registry serve|keygen|principal|audit   the policy registry
hitl policy show|propose|proposals|approve|reject|history|rollback|diff   policies in it
hitl escalations status|dead-letters|replay   inspect a sidecar's spools
hitl injector serve|render                the Kubernetes sidecar injector webhook
hitl settings                            every setting of every process, as Markdown
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
from monitor.cli import add_commands as add_monitor_commands
from monitor.config import MonitorConfig
from monitor.report_cli import add_commands as add_report_commands
from sidecar.commands import reports_refusals
from sidecar.config import DEFAULT_LISTEN, SidecarConfig
from sidecar.errors import ConfigError, HitlError
from sidecar.escalation.cli import add_commands as add_escalation_commands
from sidecar.escalation.sinks.labelstudio_settings import LabelStudioSinkConfig
from sidecar.feedback.cli import add_commands as add_feedback_commands
from sidecar.feedback.config import FeedbackConfig
from sidecar.injector.cli import add_commands as add_injector_commands
from sidecar.injector.config import InjectorConfig, SidecarDefaults
from sidecar.labelstudio.cli import add_commands as add_labelstudio_commands
from sidecar.labelstudio.config import LabelStudioConfig
from sidecar.registry.cli import add_commands as add_registry_commands
from sidecar.registry.cli import add_publish_command
from sidecar.registry.config import RegistryConfig
from sidecar.review.cli import add_commands as add_review_commands
from sidecar.review.config import ReviewConfig
from sidecar.settings import add_flags, flag_values, reference


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
    except OSError as exc:  # a file or directory a command cannot read or write
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"hitl: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hitl", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    side = commands.add_parser("sidecar", help="run the routing sidecar")
    add_flags(side, SidecarConfig)
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
    scores = route.add_mutually_exclusive_group(required=True)
    scores.add_argument("--logits", type=_numbers, help="comma-separated values, one per class")
    scores.add_argument(
        "--probabilities", type=_numbers, help="comma-separated probabilities summing to 1"
    )
    route.add_argument("--request-id", default="", help="default: a new UUID")
    route.add_argument("--model-version", default="")
    route.add_argument("--domain", default="")
    route.add_argument(
        "--str", dest="strings", action="append", default=[], type=_pair,
        metavar="NAME=TEXT", help="a string attribute (repeatable)",
    )  # fmt: skip
    route.add_argument(
        "--num", dest="numbers", action="append", default=[], type=_number_pair,
        metavar="NAME=NUMBER", help="a numeric attribute (repeatable)",
    )  # fmt: skip
    route.add_argument("--input-ref", default="", help="where a reviewer finds the input")
    route.add_argument(
        "--context", action="append", default=[], type=_pair, metavar="NAME=TEXT",
        help="carried to the reviewer and the audit log (repeatable)",
    )  # fmt: skip
    route.set_defaults(run=_run_route)

    settings = commands.add_parser(
        "settings", help="print every process's settings as Markdown (docs/configuration.md)"
    )
    settings.set_defaults(run=_run_settings)

    add_publish_command(add_calibrate_commands(commands))
    add_review_commands(commands)
    add_feedback_commands(commands)
    add_monitor_commands(commands)
    add_report_commands(commands)
    add_escalation_commands(commands)
    add_injector_commands(commands)
    add_registry_commands(commands)
    add_labelstudio_commands(commands)
    return parser


def _run_sidecar(args: argparse.Namespace) -> int:
    from sidecar.app import serve
    from sidecar.telemetry.logs import configure_logging

    config = SidecarConfig.load(flag_values(args, SidecarConfig))
    configure_logging(config.log_level)
    asyncio.run(serve(config))
    return 0


# Each process's settings, in the order docs/configuration.md lists them.
SETTINGS_PAGES = (
    ("The sidecar (`hitl sidecar`)", SidecarConfig),
    ("The registry (`hitl registry serve`)", RegistryConfig),
    ("The review queue (`hitl review serve`)", ReviewConfig),
    ("The feedback service (`hitl feedback serve`)", FeedbackConfig),
    ("The calibration monitor (`hitl monitor serve|check`)", MonitorConfig),
    ("The injector's webhook (`hitl injector serve`)", InjectorConfig),
    ("What the injector gives each sidecar (`hitl injector serve|render`)", SidecarDefaults),
    ("The Label Studio bridge (`hitl labelstudio serve`)", LabelStudioConfig),
    ("What the Label Studio sink reads (`HITL_SINK=labelstudio://...`)", LabelStudioSinkConfig),
)


def settings_page() -> str:
    """docs/configuration.md: generated from the settings' declarations."""
    sections = [
        "# Configuration reference\n\n"
        "<!-- Generated by `hitl settings > docs/configuration.md`; a test keeps it in step. -->"
        "\n\nEvery setting is an environment variable and a flag of the same name; the flag"
        " wins. A bad value stops the process at start-up with a message naming the"
        " variable. `HITL_LOG_LEVEL` and `HITL_SHUTDOWN_GRACE_SECONDS` are shared by every"
        " process.\n"
    ]
    sections += [f"## {title}\n\n{reference(cls)}" for title, cls in SETTINGS_PAGES]
    return "\n".join(sections)


def _run_settings(args: argparse.Namespace) -> int:
    sys.stdout.write(settings_page())
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from hitl.demo import run_demo

    return run_demo(Path(args.workdir))


def _numbers(text: str) -> list[float]:
    """Comma-separated numbers, for argparse (a bad one is a usage error, exit 2)."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated numbers") from None


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def _number_pair(text: str) -> tuple[str, float]:
    name, value = _pair(text)
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a number") from None


@reports_refusals
def _run_route(args: argparse.Namespace) -> int:
    from hitl_client.router import RouterClient, route_request

    request = route_request(
        args.request_id or str(uuid.uuid4()),
        args.model,
        args.logits if args.logits is not None else args.probabilities,
        model_version=args.model_version,
        domain=args.domain,
        string_attributes=dict(args.strings),
        numeric_attributes=dict(args.numbers),
        input_ref=args.input_ref,
        context=dict(args.context),
        probabilities=args.probabilities is not None,
    )
    with RouterClient(args.target) as client:
        response = client.route(request)
    print(json.dumps(MessageToDict(response, always_print_fields_with_no_presence=True), indent=2))
    return 0
