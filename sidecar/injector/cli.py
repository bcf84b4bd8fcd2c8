"""``hitl injector``: run the sidecar injector webhook, or see what it would do.

    hitl injector serve [--listen HOST:PORT] [--tls-cert PEM --tls-key PEM] --image IMAGE
    hitl injector render MANIFEST.yaml --image IMAGE     the manifest with sidecars injected

``render`` applies the webhook's own mutation to every Pod, and to the pod template
of every workload (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob), in
a YAML file (``-`` for stdin), and prints the result: what the cluster would run,
without a cluster. A StatefulSet's volumeClaimTemplates count as volumes of its pod
(``hitl.dev/state-volume`` may name one), as they will once its controller creates
the pod. A pod template that opts in but cannot be injected stops it with
the injector's message and exit code 2, as the webhook would deny the pod."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sidecar.injector.config import InjectorConfig, SidecarDefaults
from sidecar.settings import add_flags, flag_values

TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


def add_commands(commands: Any) -> None:
    """Add ``injector`` and its actions to the ``hitl`` sub-command parser."""
    injector = commands.add_parser("injector", help="the Kubernetes sidecar injector webhook")
    actions = injector.add_subparsers(required=True, metavar="ACTION")

    serve = actions.add_parser("serve", help="serve the mutating admission webhook over HTTPS")
    add_flags(serve, InjectorConfig)
    add_flags(serve, SidecarDefaults)
    serve.set_defaults(run=run_serve)

    render = actions.add_parser(
        "render", help="print a manifest with the sidecar injected, as the webhook would"
    )
    render.add_argument("manifest", help="YAML file of Kubernetes objects, - for stdin")
    add_flags(render, SidecarDefaults)
    render.set_defaults(run=run_render)


def run_serve(args: argparse.Namespace) -> int:
    from sidecar.injector.app import serve
    from sidecar.telemetry.logs import configure_logging

    config = InjectorConfig.load(
        {**flag_values(args, SidecarDefaults), **flag_values(args, InjectorConfig)}
    )
    configure_logging(config.log_level)
    serve(config)
    return 0


def run_render(args: argparse.Namespace) -> int:
    import yaml

    from sidecar.errors import DataError

    defaults = SidecarDefaults.load(flag_values(args, SidecarDefaults))
    try:
        text = sys.stdin.read() if args.manifest == "-" else Path(args.manifest).read_text()
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except OSError as exc:
        raise DataError(args.manifest, exc.strerror or str(exc)) from exc
    except yaml.YAMLError as exc:
        raise DataError(args.manifest, f"not YAML: {exc}") from exc
    rendered = [render_object(d, defaults) for d in documents]
    sys.stdout.write(yaml.safe_dump_all(rendered, sort_keys=False))
    return 0


def render_object(document: Any, defaults: Any) -> Any:
    """The object with its pod (or pod template) mutated as the webhook would."""
    from sidecar.injector.errors import InjectionRefused
    from sidecar.injector.patch import apply, plan

    if not isinstance(document, dict):
        return document
    kind = document.get("kind", "")
    template: dict[str, Any] | None = None
    claims: dict[str, str] = {}
    if kind == "StatefulSet":
        claims = _claim_templates(document.get("spec") or {})
    if kind == "Pod":
        template = document
    elif kind in TEMPLATE_KINDS:
        template = (document.get("spec") or {}).get("template")
    elif kind == "CronJob":
        job = ((document.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}
        template = job.get("template")
    if not isinstance(template, dict):
        return document
    try:
        mutation = plan(template, defaults, claims)
    except InjectionRefused as exc:
        name = (document.get("metadata") or {}).get("name", "")
        raise InjectionRefused(f"{kind}/{name}: {exc}") from None
    mutated = apply(template, mutation.patch)
    template.clear()
    template.update(mutated)
    return document


def _claim_templates(spec: dict[str, Any]) -> dict[str, str]:
    """A StatefulSet's volumeClaimTemplates: name -> requested storage ("" if none)."""
    claims: dict[str, str] = {}
    for claim in spec.get("volumeClaimTemplates") or []:
        if not isinstance(claim, dict):
            continue
        name = (claim.get("metadata") or {}).get("name")
        requests = ((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}
        if isinstance(name, str):
            claims[name] = str(requests.get("storage", ""))
    return claims
