"""``hitl registry`` (run and administer the registry), ``hitl policy`` (work with
policies in it) and ``hitl calibrate publish``.

    hitl registry serve --signing-key KEY [--listen HOST:PORT] [--db sqlite:PATH | postgresql://...]
    hitl registry keygen --out DIR                 an Ed25519 pair: signing.key, signing.pub
    hitl registry principal add NAME --role R...   prints a new bearer token once
    hitl registry principal list | audit           (these three act on the database directly)

    hitl policy show [--revision N]                the policy in force, as YAML-ready JSON
    hitl policy propose FILE --reason WHY          uploads the calibrators the file names
    hitl policy proposals [--state pending]
    hitl policy approve ID | reject ID [--reason WHY]
    hitl policy history [--limit N]
    hitl policy rollback REVISION --reason WHY
    hitl policy diff FROM [TO]                     revisions (TO: the head) or policy files
    hitl calibrate publish FILE.onnx --model M --reason WHY

Policy commands talk to a running registry (``--registry``, env HITL_REGISTRY) with
a token (``--token-file``, env HITL_REGISTRY_TOKEN_FILE, or env HITL_REGISTRY_TOKEN),
print JSON on stdout and exit 1 with the registry's status and message on stderr
when it refuses (``hitl: PERMISSION_DENIED: ...``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecar.commands import (
    StoreFlag,
    add_principal_commands,
    add_serve_command,
    print_rows,
    reports_refusals,
)
from sidecar.config import ENV_REGISTRY
from sidecar.registry.config import DEFAULT_REGISTRY_LISTEN, RegistryConfig
from sidecar.settings import add_client_flags, client_credentials

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from sidecar.registry.client import RegistryClient
    from sidecar.registry.store import RegistryStore

Run = Callable[[argparse.Namespace], int]
ROLES = ("viewer", "sidecar", "operator", "approver")
STATES = ("pending", "applied", "rejected", "superseded")


def add_commands(commands: Any) -> None:
    """Add ``registry`` and ``policy`` to the ``hitl`` sub-command parser."""
    _add_registry(commands)
    _add_policy(commands)


def _add_registry(commands: Any) -> None:
    registry = commands.add_parser("registry", help="run and administer the policy registry")
    actions = registry.add_subparsers(required=True, metavar="ACTION")
    add_serve_command(actions, "run the registry's gRPC server", RegistryConfig, _serve)

    keygen = actions.add_parser("keygen", help="write a new signing key pair")
    keygen.add_argument("--out", required=True, type=Path, help="directory for signing.key/.pub")
    keygen.set_defaults(run=run_keygen)

    database = _database()
    add_principal_commands(actions, "registry", ROLES, database)
    audit = actions.add_parser("audit", help="the newest calls, allowed or not")
    audit.add_argument("--limit", type=int, default=50)
    database.add(audit)
    audit.set_defaults(run=lambda args: run_audit(database.open(args), args.limit))


def _add_policy(commands: Any) -> None:
    policy = commands.add_parser("policy", help="show, propose, approve and roll back policies")
    acts = policy.add_subparsers(required=True, metavar="ACTION")
    show = _client(acts.add_parser("show", help="a revision (default: the head)"))
    show.add_argument("--revision", type=int, default=0)
    show.add_argument(
        "--document",
        action="store_true",
        help="print only the policy, as a YAML policy file to edit and propose",
    )
    show.set_defaults(run=run_show)
    propose = _client(acts.add_parser("propose", help="propose a policy file as the next revision"))
    propose.add_argument("file", type=Path, help="policy file, YAML or JSON")
    propose.add_argument("--reason", required=True, help="why (kept in the history)")
    propose.add_argument("--base", type=int, help="the head it was made against (default: now's)")
    propose.set_defaults(run=run_propose)
    pending = _client(acts.add_parser("proposals", help="proposals, newest first"))
    pending.add_argument("--state", choices=STATES, help="default: any")
    pending.add_argument("--limit", type=int, default=20)
    pending.set_defaults(run=run_proposals)
    for name in ("approve", "reject"):
        decide = _client(acts.add_parser(name, help=f"{name} a pending proposal"))
        decide.add_argument("number", metavar="proposal", type=int)
        decide.add_argument("--reason", default="")
        decide.set_defaults(run=run_settle, action=name)
    history = _client(acts.add_parser("history", help="revisions: who, why, when, what changed"))
    history.add_argument("--limit", type=int, default=20)
    history.add_argument("--before", type=int, default=0)
    history.set_defaults(run=run_history)
    rollback = _client(acts.add_parser("rollback", help="propose an earlier revision's policy"))
    rollback.add_argument("number", metavar="revision", type=int)
    rollback.add_argument("--reason", required=True)
    rollback.set_defaults(run=run_settle, action="rollback")
    diff = _client(acts.add_parser("diff", help="what changes between two policies"))
    diff.add_argument("before", help="a revision number or a policy file")
    diff.add_argument("after", nargs="?", default="0", help="the same (default: the head)")
    diff.set_defaults(run=run_diff)


def add_publish_command(calibrate_actions: Any) -> None:
    """Add ``publish`` to ``hitl calibrate``."""
    publish = _client(
        calibrate_actions.add_parser(
            "publish", help="upload an ONNX calibrator and propose the change that uses it"
        )
    )
    publish.add_argument("onnx", type=Path)
    publish.add_argument("--model", required=True, help="the model whose calibrator it replaces")
    publish.add_argument("--reason", required=True)
    publish.add_argument("--name", default="", help="name in the registry (default: file stem)")
    publish.set_defaults(run=run_publish)


def _client(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--registry",
        default=os.environ.get(ENV_REGISTRY, DEFAULT_REGISTRY_LISTEN),
        help=f"registry HOST:PORT (env {ENV_REGISTRY})",
    )
    add_client_flags(parser, "HITL_REGISTRY")
    return parser


def _connect(args: argparse.Namespace) -> RegistryClient:
    from sidecar.registry.client import RegistryClient

    given = client_credentials(args, "HITL_REGISTRY")
    return RegistryClient(args.registry, given.token, ca=given.ca, cert=given.cert, key=given.key)


def _print(message: Message) -> None:
    from google.protobuf.json_format import MessageToDict

    print(json.dumps(MessageToDict(message), indent=2, sort_keys=True))


# -- registry ------------------------------------------------------------------------


def _serve(config: RegistryConfig) -> None:
    import asyncio

    from sidecar.registry.app import serve

    asyncio.run(serve(config))


def run_keygen(args: argparse.Namespace) -> int:
    from sidecar.policy.signing import generate_key_pair

    key_id = generate_key_pair(args.out / "signing.key", args.out / "signing.pub")
    print(
        json.dumps(
            {
                "key_id": key_id,
                "private": str(args.out / "signing.key"),
                "public": str(args.out / "signing.pub"),
            }
        )
    )
    return 0


def _database() -> StoreFlag[RegistryStore]:
    from sidecar.registry.store import open_store

    return StoreFlag(RegistryConfig, open_store)


def run_audit(store: RegistryStore, limit: int) -> int:
    return print_rows(store, lambda: store.audit_trail(limit))


# -- policy --------------------------------------------------------------------------


@reports_refusals
def run_show(args: argparse.Namespace) -> int:
    import yaml

    from sidecar.registry.messages import document_from_policy

    with _connect(args) as client:
        revision = client.get_policy(args.revision)
    document = document_from_policy(revision.policy)
    if args.document:
        print(yaml.safe_dump(document, sort_keys=False), end="")
        return 0
    shown = {
        "revision": revision.revision,
        "proposed_by": revision.proposed_by,
        "approved_by": revision.approved_by,
        "reason": revision.reason,
        "created_at": revision.created_at,
        "key_id": revision.signed.key_id,
        "policy": document,
    }
    print(json.dumps(shown, indent=2))
    return 0


@reports_refusals
def run_propose(args: argparse.Namespace) -> int:
    from sidecar.registry.client import upload_policy_file

    with _connect(args) as client:
        policy = upload_policy_file(client, args.file)
        base = args.base if args.base is not None else _head(client)
        _print(client.propose(policy, args.reason, base))
    return 0


@reports_refusals
def run_proposals(args: argparse.Namespace) -> int:
    from hitl_client.stubs.hitl.v1 import registry_pb2 as pb

    state = pb.ProposalState.Value(args.state.upper()) if args.state else 0
    with _connect(args) as client:
        for proposal in client.proposals(state, args.limit):
            _print(proposal)
    return 0


@reports_refusals
def run_settle(args: argparse.Namespace) -> int:
    """approve or reject a proposal, or propose rolling back to a revision, with a reason."""
    with _connect(args) as client:
        _print(getattr(client, args.action)(args.number, args.reason))
    return 0


@reports_refusals
def run_history(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        for revision in client.history(args.limit, args.before):
            revision.ClearField("policy")
            _print(revision)
    return 0


@reports_refusals
def run_diff(args: argparse.Namespace) -> int:
    from sidecar.core.diff import diff

    with _connect(args) as client:
        before, after = _document(client, args.before), _document(client, args.after)
    for change in diff(before, after):
        print(f"{change.path}: {change.before or '(absent)'} -> {change.after or '(absent)'}")
    return 0


@reports_refusals
def run_publish(args: argparse.Namespace) -> int:
    from sidecar.registry.client import artefact_version
    from sidecar.registry.messages import document_from_policy, policy_from_document

    data = args.onnx.read_bytes()
    with _connect(args) as client:
        info = client.put_calibrator(data, args.name or args.onnx.stem, artefact_version(data))
        head = client.get_policy(0)
        doc = document_from_policy(head.policy)
        if args.model not in doc["models"]:
            print(f"hitl: the policy has no model {args.model!r}", file=sys.stderr)
            return 1
        doc["models"][args.model]["calibrator"] = {
            "name": info.name,
            "version": info.version,
            "sha256": info.sha256,
        }
        _print(client.propose(policy_from_document(doc), args.reason, head.revision))
    return 0


def _head(client: RegistryClient) -> int:
    import grpc

    try:
        return client.get_policy(0).revision
    except grpc.RpcError as exc:
        if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.NOT_FOUND:
            return 0
        raise


def _document(client: RegistryClient, which: str) -> dict[str, Any]:
    """A revision's document (a number; 0 the head) or a policy file's."""
    from sidecar.registry.messages import document_from_policy

    if which.isdigit():
        return document_from_policy(client.get_policy(int(which)).policy)
    import yaml

    from sidecar.policy.loader import read_policy_bytes

    doc = yaml.safe_load(read_policy_bytes(Path(which)))
    return {k: v for k, v in doc.items() if k not in ("revision", "issued_at")}
