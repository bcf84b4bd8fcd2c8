"""Field-by-field differences between policy documents."""

from __future__ import annotations

from sidecar.core.diff import FieldChange, diff


def test_changed_leaf_shows_both_values() -> None:
    """A changed threshold is one line with its path and JSON values."""
    before = {"models": {"m": {"thresholds": {"t_high": 0.9, "t_low": 0.5}}}}
    after = {"models": {"m": {"thresholds": {"t_high": 0.8, "t_low": 0.5}}}}
    assert diff(before, after) == [FieldChange("models.m.thresholds.t_high", "0.9", "0.8")]


def test_rules_compared_by_id_not_position() -> None:
    """A rule inserted first shows as that rule alone, not as every rule shifted."""
    rule_a = {"id": "a", "when": [{"field": "domain", "op": "eq", "value": "x"}]}
    rule_b = {"id": "b", "when": [{"field": "domain", "op": "eq", "value": "y"}]}
    changes = diff({"rules": [rule_a]}, {"rules": [rule_b, rule_a]})
    assert [c.path for c in changes] == ["rules.b.when"]
    assert changes[0].before == ""


def test_removed_field_has_empty_after() -> None:
    """A field present only before shows an empty after."""
    assert diff({"max_age_seconds": 60, "models": {}}, {"models": {}}) == [
        FieldChange("max_age_seconds", "60", "")
    ]


def test_no_document_before_lists_everything() -> None:
    """The first revision's diff is every field it sets."""
    changes = diff(None, {"models": {"m": {"audit_sample_rate": 0.1}}})
    assert changes == [FieldChange("models.m.audit_sample_rate", "", "0.1")]


def test_equal_documents_have_no_changes() -> None:
    """Same document, empty diff."""
    doc = {"models": {"m": {"labels": ["a", "b"]}}}
    assert diff(doc, doc) == []
