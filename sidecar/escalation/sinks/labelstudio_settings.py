"""The Label Studio settings the sidecar's sink and the bridge (``hitl labelstudio
serve``) share, each declared once here: the server's URL form, the API token file
and which project holds each model's tasks. No SDK here: ``hitl settings`` and the
sidecar's start-up read these without label-studio-sdk installed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.errors import ConfigError
from sidecar.settings import Settings, address, readable_file, setting

SCHEMES = {"labelstudio": "http", "labelstudios": "https"}
DEFAULT_PROJECT_PREFIX = "hitl: "
ENV_TOKEN_FILE = "HITL_LABELSTUDIO_TOKEN_FILE"  # noqa: S105 (a variable's name, no secret)


def base_url(url: str, var: str) -> str:
    """``labelstudio://HOST:PORT`` (HTTP) or ``labelstudios://HOST:PORT`` (HTTPS) as the
    server's base URL (``http://HOST:PORT``); ConfigError naming var otherwise."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ConfigError(f"{var} must be labelstudio://HOST:PORT or labelstudios://HOST:PORT")
    address(rest, var)
    return f"{SCHEMES[scheme]}://{rest}"


Projects = tuple[tuple[str, int], ...]  # (model, project id) pairs: dict() them to look up


def project_map(value: str, var: str) -> Projects:
    """``fraud=12,churn=13`` -> ((model, project id), ...); empty: one project per
    model, found or created by title."""
    found: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        model, sep, number = part.partition("=")
        if not sep or not model.strip() or not number.strip().isdigit():
            raise ConfigError(f"{var}: {part!r} is not MODEL=PROJECT_ID")
        if model.strip() in found:
            raise ConfigError(f"{var}: model {model.strip()!r} is named twice")
        found[model.strip()] = int(number)
    return tuple(found.items())


def token_setting() -> Any:
    return setting(
        ENV_TOKEN_FILE,
        None,
        "file holding the Label Studio API token (Account & Settings > Access Token) the"
        " sink and the bridge call Label Studio with",
        parse=readable_file,
    )


def projects_setting() -> Any:
    return setting(
        "HITL_LABELSTUDIO_PROJECTS",
        (),
        "MODEL=PROJECT_ID,...: the Label Studio project of each model's tasks; unset, each"
        " model gets the project titled HITL_LABELSTUDIO_PROJECT_PREFIX + model, created on"
        " its first escalation",
        parse=project_map,
        unset="",
        shown="one project per model",
    )


def prefix_setting() -> Any:
    return setting(
        "HITL_LABELSTUDIO_PROJECT_PREFIX",
        DEFAULT_PROJECT_PREFIX,
        "title prefix of the projects made one per model",
        parse=lambda value, var: value,
        unset=DEFAULT_PROJECT_PREFIX,
        shown=repr(DEFAULT_PROJECT_PREFIX),
    )


@dataclass(frozen=True, slots=True)
class LabelStudioSinkConfig(Settings):
    """What the sidecar's Label Studio sink (HITL_SINK=labelstudio://HOST:PORT) reads
    besides its URL (docs/labelstudio.md)."""

    token_file: Path | None = token_setting()
    projects: Projects = projects_setting()
    project_prefix: str = prefix_setting()

    @classmethod
    def check(cls, values: dict[str, Any]) -> None:
        if values["token_file"] is None:
            raise ConfigError(f"{ENV_TOKEN_FILE} is required with a labelstudio:// sink")
