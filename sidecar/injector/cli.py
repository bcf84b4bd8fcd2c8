"""``hitl injector``: run the sidecar injector webhook, or see what it would do.

    hitl injector serve [--listen HOST:PORT] [--tls-cert PEM --tls-key PEM] --image IMAGE
    hitl injector render MANIFEST.yaml --image IMAGE     the manifest with sidecars injected

``render`` applies the webhook's own mutation to every Pod, and to the pod template
of every workload (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob), in
a YAML file (``-`` for stdin), and prints the result: what the cluster would run,
without a cluster. A pod template that opts in but cannot be injected stops it with
the injector's message and exit code 2, as the webhook would deny the pod."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sidecar.injector.config import (
    ENV_INJECTOR_LISTEN,
    ENV_INJECTOR_METRICS_ADDR,
    ENV_NATIVE_SIDECAR,
    ENV_PULL_POLICY,
    ENV_REGISTRY,
    ENV_REGISTRY_CA_CONFIGMAP,
    ENV_SIDECAR_IMAGE,
    ENV_SINK,
    ENV_TLS_CERT,
    ENV_TLS_KEY,
    PULL_POLICIES,
)
from sidecar.settings import ENV_LOG_LEVEL

TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


def add_commands(commands: Any) -> None:
    """Add ``injector`` and its actions to the ``hitl`` sub-command parser."""
    injector = commands.add_parser("injector", help="the Kubernetes sidecar injector webhook")
    actions = injector.add_subparsers(required=True, metavar="ACTION")

    serve = actions.add_parser("serve", help="serve the mutating admission webhook over HTTPS")
    serve.add_argument(
        "--listen", help=f"HOST:PORT (env {ENV_INJECTOR_LISTEN}, default 0.0.0.0:8443)"
    )
    serve.add_argument("--tls-cert", help=f"serving certificate PEM (env {ENV_TLS_CERT})")
    serve.add_argument("--tls-key", help=f"its private key PEM (env {ENV_TLS_KEY})")
    serve.add_argument(
        "--metrics-addr", help=f"Prometheus scrape HOST:PORT (env {ENV_INJECTOR_METRICS_ADDR})"
    )
    serve.add_argument("--log-level", help=f"debug, info, warning or error (env {ENV_LOG_LEVEL})")
    serve.add_argument("--port-file", help="write the bound address here once listening")
    _defaults(serve)
    serve.set_defaults(run=run_serve)

    render = actions.add_parser(
        "render", help="print a manifest with the sidecar injected, as the webhook would"
    )
    render.add_argument("manifest", help="YAML file of Kubernetes objects, - for stdin")
    _defaults(render)
    render.set_defaults(run=run_render)


def _defaults(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", help=f"the sidecar image to inject (env {ENV_SIDECAR_IMAGE})")
    parser.add_argument(
        "--pull-policy", choices=PULL_POLICIES, help=f"its imagePullPolicy (env {ENV_PULL_POLICY})"
    )
    parser.add_argument(
        "--native-sidecar",
        choices=("true", "false"),
        help="true: init container with restartPolicy Always (1.29+); false: plain container "
        f"(env {ENV_NATIVE_SIDECAR}, default true)",
    )
    parser.add_argument("--registry", help=f"default registry HOST:PORT (env {ENV_REGISTRY})")
    parser.add_argument(
        "--registry-ca-configmap",
        help=f"default ConfigMap with the registry's TLS CA (env {ENV_REGISTRY_CA_CONFIGMAP})",
    )
    parser.add_argument("--sink", help=f"default escalation sink (env {ENV_SINK})")


def _default_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "image": args.image,
        "pull_policy": args.pull_policy,
        "native": args.native_sidecar,
        "registry": args.registry,
        "registry_ca_configmap": args.registry_ca_configmap,
        "sink": args.sink,
    }


def run_serve(args: argparse.Namespace) -> int:
    from sidecar.injector.app import serve
    from sidecar.injector.config import InjectorConfig
    from sidecar.telemetry.logs import configure_logging

    config = InjectorConfig.load(
        {
            **_default_overrides(args),
            "listen": args.listen,
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "metrics_addr": args.metrics_addr,
            "log_level": args.log_level,
            "port_file": args.port_file,
        }
    )
    configure_logging(config.log_level)
    serve(config)
    return 0


def run_render(args: argparse.Namespace) -> int:
    import yaml

    from sidecar.errors import DataError
    from sidecar.injector.config import SidecarDefaults

    defaults = SidecarDefaults.load(_default_overrides(args))
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
        mutation = plan(template, defaults)
    except InjectionRefused as exc:
        name = (document.get("metadata") or {}).get("name", "")
        raise InjectionRefused(f"{kind}/{name}: {exc}") from None
    mutated = apply(template, mutation.patch)
    template.clear()
    template.update(mutated)
    return document
