"""Experiments: arms chosen by a stable hash of a unit key, each with thresholds."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field

from sidecar.core.hashing import bound, draw, salt_for
from sidecar.core.request import RouteInput
from sidecar.core.thresholds import ThresholdTable

ATTRIBUTE_PREFIX = "attributes."


@dataclass(frozen=True, slots=True)
class Arm:
    """An arm and its share; ``thresholds`` None means the model's own apply."""

    name: str
    weight: float
    thresholds: ThresholdTable | None = None


@dataclass(frozen=True, slots=True)
class Experiment:
    """Assigns each unit to one arm in proportion to the weights.

    The unit key is the request_id, or a named attribute (``attributes.user_id``)
    so that one user always sees one arm. A request without that attribute gets
    the first arm, which by convention is the control."""

    name: str
    unit: str
    arms: tuple[Arm, ...]
    _salt: bytes = field(init=False, repr=False, compare=False)
    _edges: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        total = sum(arm.weight for arm in self.arms)
        running, edges = 0.0, []
        for arm in self.arms[:-1]:
            running += arm.weight
            edges.append(bound(running / total))
        object.__setattr__(self, "_salt", salt_for(f"experiment:{self.name}"))
        object.__setattr__(self, "_edges", tuple(edges))

    def choose(self, request: RouteInput) -> Arm:
        return self.arm_for(
            self.unit_key(request.request_id, request.string_attributes, request.numeric_attributes)
        )

    def arm_for(self, key: str | None) -> Arm:
        """The arm of a unit key (None: the request does not carry it)."""
        if key is None:
            return self.arms[0]
        return self.arms[bisect_right(self._edges, draw(self._salt, key))]

    def unit_key(
        self,
        request_id: str,
        strings: Mapping[str, str] | None,
        numbers: Mapping[str, float] | None,
    ) -> str | None:
        if self.unit == "request_id":
            return request_id
        name = self.unit.removeprefix(ATTRIBUTE_PREFIX)
        text = (strings or {}).get(name)
        if text is not None:
            return text
        number = (numbers or {}).get(name)
        return None if number is None else repr(number)
