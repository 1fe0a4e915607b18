"""KPI expressions of a search's objective and constraints, parsed without ``eval``.

Allowed: numbers, KPI names, ``+ - * /``, unary minus, ``abs(x)``, ``min(a, b, ...)``, ``max(a, b, ...)``,
parentheses, comparisons (``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, chained) and ``and`` / ``or`` / ``not``
(constraints). A comparison is 1.0 when it holds, else 0.0; a NaN operand makes the value NaN.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["KpiExpr", "KpiExprError", "parse_kpi_expr"]

_BIN: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_CMP: dict[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge}
_FUNCS: dict[str, Callable[..., float]] = {"abs": abs, "min": min, "max": max}


class KpiExprError(ValueError):
    """An expression that is not in the language, or names an unknown KPI."""


@dataclass(frozen=True)
class KpiExpr:
    """A parsed expression; ``names``: the KPIs it reads."""

    text: str
    names: frozenset[str]
    _tree: ast.Expression

    def evaluate(self, kpis: Mapping[str, object]) -> float:
        """The value for one run's KPIs (NaN when a KPI it reads is missing or not finite)."""
        values: dict[str, float] = {}
        for n in self.names:
            v = kpis.get(n)
            values[n] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
        if any(math.isnan(v) for v in values.values()):
            return math.nan
        try:
            return float(_eval(self._tree.body, values))
        except ZeroDivisionError:
            return math.nan


def _eval(node: ast.AST, v: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, (int, float))  # _check refuses other constants
        return float(node.value)
    if isinstance(node, ast.Name):
        return v[node.id]
    if isinstance(node, ast.UnaryOp):
        x = _eval(node.operand, v)
        return -x if isinstance(node.op, ast.USub) else (x if isinstance(node.op, ast.UAdd) else float(not x))
    if isinstance(node, ast.BinOp):
        return _BIN[type(node.op)](_eval(node.left, v), _eval(node.right, v))
    if isinstance(node, ast.BoolOp):
        vals = [_eval(x, v) != 0.0 for x in node.values]
        return float(all(vals) if isinstance(node.op, ast.And) else any(vals))
    if isinstance(node, ast.Compare):
        left = _eval(node.left, v)
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, v)
            if not _CMP[type(op)](left, right):
                return 0.0
            left = right
        return 1.0
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        return float(_FUNCS[node.func.id](*(_eval(a, v) for a in node.args)))
    raise AssertionError(f"unchecked node {type(node).__name__}")  # _check refuses every other node


def _check(node: ast.AST, names: set[str], text: str) -> None:
    ok_simple = (ast.Expression, ast.Load, ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, *_BIN, *_CMP)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise KpiExprError(f"{text!r}: only numbers may be written as constants")
    elif isinstance(node, ast.Name):
        names.add(node.id)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS or node.keywords or not node.args:
            raise KpiExprError(f"{text!r}: the only functions are {', '.join(_FUNCS)}")
        if node.func.id == "abs" and len(node.args) != 1:
            raise KpiExprError(f"{text!r}: abs takes one argument")
        for a in node.args:
            _check(a, names, text)
        return
    elif not isinstance(node, (ast.UnaryOp, ast.BinOp, ast.BoolOp, ast.Compare, *ok_simple)):
        raise KpiExprError(f"{text!r}: {type(node).__name__} is not allowed here")
    for child in ast.iter_child_nodes(node):
        _check(child, names, text)


def parse_kpi_expr(text: str, known: frozenset[str] | None = None) -> KpiExpr:
    """Parse ``text``; with ``known``, every name must be one of those KPIs."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise KpiExprError(f"{text!r}: syntax error at column {exc.offset}") from None
    names: set[str] = set()
    _check(tree, names, text)
    if known is not None:
        import difflib

        for n in sorted(names - known):
            close = difflib.get_close_matches(n, sorted(known), n=1, cutoff=0.6)
            raise KpiExprError(f"{text!r}: unknown KPI '{n}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return KpiExpr(text, frozenset(names), tree)
