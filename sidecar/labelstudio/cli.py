"""``hitl labelstudio``: Label Studio as a review backend (docs/labelstudio.md).

hitl labelstudio serve [--url labelstudio://HOST:PORT] ...   the bridge: webhook, poll, SLA
hitl labelstudio config --policy FILE --model M [--input text|image|hypertext|audio]
                                    a classification labeling config over M's labels"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sidecar.commands import add_serve_command
from sidecar.core.labelstudio import INPUT_TAGS, labeling_config
from sidecar.errors import ConfigError
from sidecar.labelstudio.config import LabelStudioConfig


def add_commands(commands: Any) -> None:
    """Add ``labelstudio`` and its actions to the ``hitl`` sub-command parser."""
    parser = commands.add_parser("labelstudio", help="Label Studio as a review backend")
    actions = parser.add_subparsers(required=True, metavar="ACTION")
    add_serve_command(
        actions,
        "run the bridge: webhook receiver, poll and SLA sweep for Label Studio",
        LabelStudioConfig,
        _serve,
    )
    config = actions.add_parser(
        "config", help="print a labeling config for a classification model of a policy"
    )
    config.add_argument("--policy", type=Path, required=True, help="the policy file (YAML/JSON)")
    config.add_argument("--model", required=True, help="the model whose labels to offer")
    config.add_argument(
        "--input",
        choices=sorted(INPUT_TAGS),
        default="text",
        help="what input_ref is: text (default), image, hypertext or audio",
    )
    config.set_defaults(run=run_config)


def _serve(config: LabelStudioConfig) -> None:
    from sidecar.labelstudio.app import serve

    serve(config)


def run_config(args: argparse.Namespace) -> int:
    labels = policy_labels(args.policy, args.model)
    try:
        sys.stdout.write(labeling_config(labels, args.input))
    except ValueError as exc:
        raise ConfigError(f"models.{args.model}.{exc}") from None
    return 0


def policy_labels(path: Path, model: str) -> tuple[str, ...]:
    """model's labels in the policy at path: its ``labels``, else its calibrator's."""
    from sidecar.policy.loader import build_snapshot, parse_policy_bytes, read_policy_bytes

    policy = parse_policy_bytes(read_policy_bytes(path), str(path))
    if model not in policy.models:
        known = ", ".join(sorted(policy.models)) or "none"
        raise ConfigError(f"--model: {path} has no model {model!r} (it has {known})")
    labels = policy.models[model].labels
    if labels is None:
        labels = build_snapshot(policy, path.parent, str(path)).policy.models[model].labels
    return labels or ()
