"""Statements shared by every driver: ``:name`` parameters rendered for the driver."""

from __future__ import annotations

from sidecar.storage.sql import render_parameters


def test_parameters_become_the_drivers_placeholders() -> None:
    """Each ``:name`` (digits allowed after the first letter) becomes the placeholder."""
    statement = "SELECT a FROM t WHERE sha256 = :sha256 AND b = :b_2"
    assert render_parameters(statement, "%({name})s") == (
        "SELECT a FROM t WHERE sha256 = %(sha256)s AND b = %(b_2)s"
    )


def test_casts_and_text_are_left_alone() -> None:
    """A ``::type`` cast, a time of day and a word ending in a colon are not parameters."""
    statement = "SELECT :x::text, '12:30', 'note: y'"
    assert render_parameters(statement, "?{name}") == "SELECT ?x::text, '12:30', 'note: y'"
