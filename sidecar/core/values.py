"""The decorator for value types built for every prediction (the request, its
signals, the decision, the answer, the escalation).

``value`` makes a slotted dataclass that the type checker treats as frozen: mypy
rejects any assignment to a field, so these values are immutable in the code as it
is checked. At run time the class is not frozen, because a frozen dataclass sets
each field through ``object.__setattr__``, several times slower to build, and a
prediction builds five or six such values (measured: see
docs/performance.md#value-types-frozen-for-the-type-checker-only). Equality and
hashing are a frozen dataclass's: by the fields. Long-lived state (policy,
configuration) stays a real frozen dataclass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, dataclass_transform, overload

T = TypeVar("T")


@overload
def value(cls: type[T], /) -> type[T]: ...


@overload
def value(*, eq: bool = True) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(frozen_default=True)
def value(
    cls: type[T] | None = None, /, *, eq: bool = True
) -> type[T] | Callable[[type[T]], type[T]]:
    """``@value`` or ``@value(eq=False)``: an immutable-by-type-check slotted dataclass."""

    def wrap(klass: type[T]) -> type[T]:
        # unsafe_hash: hashed by its fields as a frozen one is; only mypy forbids change
        return dataclass(slots=True, eq=eq, unsafe_hash=eq)(klass)

    return wrap if cls is None else wrap(cls)
