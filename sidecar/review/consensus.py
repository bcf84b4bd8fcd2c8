"""Consensus: how many independent reviewers an item needs, and what their answers
come to. Pure: parsing, a lookup and counting; no I/O.

The policy is per tier and per rule (a rule's entry wins over its tier's), parsed
once at start-up from ``HITL_REVIEW_CONSENSUS``, e.g.
``HUMAN_PRIMARY=2:all,rule:large-amount=3:majority``. An item takes its requirement
when the queue admits it, so a policy change never moves items already queued.
Unnamed tiers and rules need one review: the queue as it always was."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from sidecar.errors import ConfigError
from sidecar.review.item import TIERS, Agreement, Resolution

ADJUDICATED = "adjudicated"  # how a lead's final resolution's agreement begins
MAX_REVIEWS = 9  # more independent answers than this is a panel, not a queue


@dataclass(frozen=True, slots=True)
class Requirement:
    reviews: int = 1
    agreement: Agreement = Agreement.ALL

    def describe(self) -> str:
        return f"{self.reviews}:{self.agreement.value}"


ONE_REVIEW = Requirement()


@dataclass(frozen=True, slots=True)
class ConsensusPolicy:
    tiers: Mapping[str, Requirement] = field(default_factory=lambda: MappingProxyType({}))
    rules: Mapping[str, Requirement] = field(default_factory=lambda: MappingProxyType({}))

    def requirement(self, tier: str, rule_id: str) -> Requirement:
        """The rule's requirement, else the tier's, else one review."""
        if rule_id and rule_id in self.rules:
            return self.rules[rule_id]
        return self.tiers.get(tier, ONE_REVIEW)

    def describe(self) -> str:
        parts = [f"{tier}={r.describe()}" for tier, r in self.tiers.items()]
        parts += [f"rule:{rule}={r.describe()}" for rule, r in self.rules.items()]
        return ",".join(parts) or "one review for every item"


def parse_consensus(text: str, var: str) -> ConsensusPolicy:
    """``TIER=N:all|majority`` and ``rule:RULE_ID=N:all|majority``, comma-separated
    (``:all`` may be left out). ConfigError names var and the part."""
    tiers: dict[str, Requirement] = {}
    rules: dict[str, Requirement] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"{var}: {part!r} is not TIER=N:AGREEMENT or rule:ID=N:AGREEMENT")
        requirement = _requirement(value.strip(), f"{var}: {part!r}")
        if name.startswith("rule:") and name.removeprefix("rule:").strip():
            rules[name.removeprefix("rule:").strip()] = requirement
            continue
        tier = name.upper().removeprefix("TIER_")
        if tier not in TIERS:
            raise ConfigError(f"{var}: {part!r}: {name!r} is not rule:ID nor one of {TIERS}")
        tiers[tier] = requirement
    return ConsensusPolicy(MappingProxyType(tiers), MappingProxyType(rules))


def _requirement(text: str, where: str) -> Requirement:
    count, _, agreement = text.partition(":")
    try:
        reviews = int(count)
        rule = Agreement((agreement or "all").strip().lower())
    except ValueError:
        raise ConfigError(f"{where}: want N:all or N:majority, N a whole number") from None
    if not 1 <= reviews <= MAX_REVIEWS:
        raise ConfigError(f"{where}: reviews must be 1 to {MAX_REVIEWS}, got {reviews}")
    if rule is Agreement.MAJORITY and reviews < 3:  # a majority of 2 is "all"
        raise ConfigError(f"{where}: a majority needs 3 reviews or more; use N:all")
    return Requirement(reviews, rule)


def agreed(answers: Sequence[Resolution], agreement: Agreement, now: float) -> Resolution | None:
    """The final resolution the complete answers agree on, or None (to adjudication).

    Agreement is on the class. The final resolution is the latest agreeing answer's
    (its reviewer, verdict, label, rationale and evidence), resolved now, with
    ``agreement`` "k of n"."""
    counts = Counter(a.label_class for a in answers)
    label_class, votes = counts.most_common(1)[0]
    needed = len(answers) if agreement is Agreement.ALL else len(answers) // 2 + 1
    if votes < needed:
        return None
    last = [a for a in answers if a.label_class == label_class][-1]
    return replace(last, resolved_at=now, agreement=f"{votes} of {len(answers)}")


def is_adjudicated(resolution: Resolution) -> bool:
    return resolution.agreement.startswith(ADJUDICATED)


def adjudicated(resolution: Resolution, answers: Sequence[Resolution]) -> Resolution:
    """A lead's resolution of a disagreement, recording how far the answers went."""
    votes = Counter(a.label_class for a in answers).most_common(1)[0][1] if answers else 0
    return replace(resolution, agreement=f"{ADJUDICATED} ({votes} of {len(answers)} agreed)")
