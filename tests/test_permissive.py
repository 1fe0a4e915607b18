"""Tests of the permissive expression language (apc.recipe.permissive)."""

from __future__ import annotations

import math

import pytest

from apc.recipe.permissive import PermissiveSyntaxError, parse_permissive


def ev(text: str, **values: float) -> bool:
    return parse_permissive(text).evaluate(values)


def test_not_binds_tighter_than_and_than_or() -> None:
    """`not a and b or c` parses as `((not a) and b) or c`."""
    expr = "not a and b or c"
    assert ev(expr, a=0, b=1, c=0) is True
    assert ev(expr, a=1, b=1, c=0) is False
    assert ev(expr, a=1, b=0, c=1) is True
    assert str(parse_permissive(expr)) == "not a and b or c"


def test_and_binds_tighter_than_or() -> None:
    """`a or b and c` is `a or (b and c)`, not `(a or b) and c`."""
    assert ev("a or b and c", a=1, b=0, c=0) is True
    assert ev("(a or b) and c", a=1, b=0, c=0) is False


def test_parentheses_override_precedence() -> None:
    """`not (a and b)` negates the conjunction, unlike `not a and b`."""
    assert ev("not (a and b)", a=1, b=0) is True
    assert ev("not a and b", a=1, b=0) is False
    assert ev("((a))", a=2) is True


@pytest.mark.parametrize(
    ("op", "results"),
    [
        ("<", (True, False, False)),
        ("<=", (True, True, False)),
        (">", (False, False, True)),
        (">=", (False, True, True)),
        ("==", (False, True, False)),
        ("!=", (True, False, True)),
    ],
)
def test_every_comparison_operator(op: str, results: tuple[bool, bool, bool]) -> None:
    """Each operator compares x with 5 correctly for x below, equal and above."""
    expr = parse_permissive(f"x {op} 5")
    assert tuple(expr.evaluate({"x": x}) for x in (4.0, 5.0, 6.0)) == results


def test_numbers_booleans_and_name_on_both_sides() -> None:
    """Negative, decimal and exponent numbers, true/false and name-vs-name comparisons work."""
    assert ev("x > -1.5e1", x=-10) is True
    assert ev("x < .5", x=0.25) is True
    assert ev("flag == true", flag=1) is True
    assert ev("false") is False
    assert ev("true") is True
    assert ev("a <= b", a=3, b=3) is True


def test_bare_name_is_truthy_when_nonzero() -> None:
    """A bare name holds when its value is not 0."""
    assert ev("running", running=1) is True
    assert ev("running", running=-0.5) is True
    assert ev("running", running=0) is False


def test_missing_or_nan_never_permits() -> None:
    """A missing or NaN value fails the whole permissive, even under `not` or `or`."""
    assert ev("x < 3", y=1) is False
    assert ev("x < 3", x=math.nan) is False
    assert ev("not (x < 3)", x=math.nan) is False
    assert ev("not (x < 3)") is False
    assert ev("y > 0 or x < 3", y=1) is False
    assert ev("x < 3", x=math.inf) is False


def test_explain_names_the_failing_part() -> None:
    """explain() gives the failing comparison with the value, or the missing name; '' when it holds."""
    expr = parse_permissive("cell_voltage < 20 and bath_temp_degC >= 1000")
    assert expr.explain({"cell_voltage": 5, "bath_temp_degC": 985.2}) == "bath_temp_degC >= 1000 is false (985.2)"
    assert expr.explain({"cell_voltage": 5, "bath_temp_degC": 1001}) == ""
    assert "bath_temp_degC is missing" in expr.explain({"cell_voltage": 5})
    assert "not finite" in expr.explain({"cell_voltage": math.nan, "bath_temp_degC": 1001})
    negated = parse_permissive("not (t < 1000)")
    assert negated.explain({"t": 985.2}) == "t < 1000 holds (985.2)"


def test_names_lists_every_name_for_unknown_name_checks() -> None:
    """.names holds every signal name used, without keywords or constants."""
    expr = parse_permissive("a < 1 and not (b or c >= d) or true")
    assert expr.names == frozenset({"a", "b", "c", "d"})
    assert expr.names - {"a", "b", "c"} == {"d"}


@pytest.mark.parametrize(
    ("text", "column", "token"),
    [
        ("__import__('os')", 12, "'"),
        ("__import__(os)", 11, "("),
        ("a <", 4, "end of expression"),
        ("a < b < c", 7, "<"),
        ("", 1, "end of expression"),
        ("(a", 3, "end of expression"),
        ("a and or b", 7, "or"),
        ("a = 3", 3, "="),
        ("a < 3)", 6, ")"),
        ("x.y > 1", 2, "."),
        ("a + 1 > 2", 3, "+"),
    ],
)
def test_bad_syntax_names_column_and_token(text: str, column: int, token: str) -> None:
    """Bad syntax raises PermissiveSyntaxError naming the 1-based column and the offending token."""
    with pytest.raises(PermissiveSyntaxError) as info:
        parse_permissive(text)
    assert info.value.column == column
    assert f"column {column}" in str(info.value)
    assert token in str(info.value)


def test_ast_is_immutable() -> None:
    """The parsed expression and its nodes are frozen."""
    expr = parse_permissive("a < 1")
    with pytest.raises(AttributeError):
        expr.text = "b"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        expr.root.op = ">"  # type: ignore[union-attr, misc]
