"""Permissive expressions: a tiny boolean language, parsed without ``eval``.

Grammar::

    expr    := or
    or      := and ('or' and)*
    and     := not ('and' not)*
    not     := 'not' not | cmp | '(' expr ')'
    cmp     := operand (('<'|'<='|'>'|'>='|'=='|'!=') operand)?
    operand := NAME | NUMBER | 'true' | 'false'

A bare operand is truthy when its value is not 0. ``true``/``false`` are 1/0.

Missing data never permits a write: if any name used anywhere in the
expression is absent from the values or is not a finite number (NaN, ±inf),
:meth:`PermissiveExpr.evaluate` returns ``False`` whatever the rest of the
expression says (so ``not (x < 3)`` with ``x`` missing is ``False`` too).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = [
    "And",
    "Compare",
    "Const",
    "Name",
    "Not",
    "Or",
    "PermissiveExpr",
    "PermissiveSyntaxError",
    "Truthy",
    "parse_permissive",
]


class PermissiveSyntaxError(ValueError):
    """Bad permissive syntax; ``column`` is 1-based."""

    def __init__(self, message: str, column: int) -> None:
        self.message = message
        self.column = column
        super().__init__(f"column {column}: {message}")


def _fmt(v: float) -> str:
    return f"{v:.6g}"


# ---------------------------------------------------------------- AST nodes


@dataclass(frozen=True, slots=True)
class Name:
    """A signal name."""

    name: str

    def value(self, values: Mapping[str, float]) -> float:
        return float(values[self.name])

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Const:
    """A number or ``true``/``false``; ``text`` is the source spelling."""

    number: float
    text: str

    def value(self, values: Mapping[str, float]) -> float:
        return self.number

    def __str__(self) -> str:
        return self.text


Operand = Name | Const

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def _values_of(operands: tuple[Operand, ...], values: Mapping[str, float]) -> str:
    names = [o for o in operands if isinstance(o, Name)]
    if len(names) == 1:
        return f" ({_fmt(names[0].value(values))})"
    if names:
        return " (" + ", ".join(f"{n.name}={_fmt(n.value(values))}" for n in names) + ")"
    return ""


@dataclass(frozen=True, slots=True)
class Compare:
    """``left op right``."""

    left: Operand
    op: str
    right: Operand

    def holds(self, values: Mapping[str, float]) -> bool:
        return _OPS[self.op](self.left.value(values), self.right.value(values))

    def why(self, values: Mapping[str, float]) -> str:
        return f"{self} is false{_values_of((self.left, self.right), values)}"

    def operands(self) -> tuple[Operand, ...]:
        return (self.left, self.right)

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"


@dataclass(frozen=True, slots=True)
class Truthy:
    """A bare operand: true when its value is not 0."""

    operand: Operand

    def holds(self, values: Mapping[str, float]) -> bool:
        return self.operand.value(values) != 0.0

    def why(self, values: Mapping[str, float]) -> str:
        return f"{self} is false{_values_of((self.operand,), values)}"

    def operands(self) -> tuple[Operand, ...]:
        return (self.operand,)

    def __str__(self) -> str:
        return str(self.operand)


@dataclass(frozen=True, slots=True)
class Not:
    """``not inner``."""

    inner: Node

    def holds(self, values: Mapping[str, float]) -> bool:
        return not self.inner.holds(values)

    def why(self, values: Mapping[str, float]) -> str:
        return f"{self.inner} holds{_values_of(self.operands(), values)}"

    def operands(self) -> tuple[Operand, ...]:
        return self.inner.operands()

    def __str__(self) -> str:
        inner = str(self.inner)
        return f"not ({inner})" if isinstance(self.inner, (And, Or, Compare)) else f"not {inner}"


@dataclass(frozen=True, slots=True)
class And:
    """All items hold."""

    items: tuple[Node, ...]

    def holds(self, values: Mapping[str, float]) -> bool:
        return all(i.holds(values) for i in self.items)

    def why(self, values: Mapping[str, float]) -> str:
        return next(i.why(values) for i in self.items if not i.holds(values))

    def operands(self) -> tuple[Operand, ...]:
        return tuple(o for i in self.items for o in i.operands())

    def __str__(self) -> str:
        return " and ".join(f"({i})" if isinstance(i, Or) else str(i) for i in self.items)


@dataclass(frozen=True, slots=True)
class Or:
    """At least one item holds."""

    items: tuple[Node, ...]

    def holds(self, values: Mapping[str, float]) -> bool:
        return any(i.holds(values) for i in self.items)

    def why(self, values: Mapping[str, float]) -> str:
        return "; ".join(i.why(values) for i in self.items)

    def operands(self) -> tuple[Operand, ...]:
        return tuple(o for i in self.items for o in i.operands())

    def __str__(self) -> str:
        return " or ".join(str(i) for i in self.items)


Node = Compare | Truthy | Not | And | Or


@dataclass(frozen=True, slots=True)
class PermissiveExpr:
    """A parsed permissive: source ``text``, AST ``root`` and the ``names`` it uses."""

    text: str
    root: Node
    names: frozenset[str]

    def missing(self, values: Mapping[str, float]) -> list[str]:
        """Names used by the expression that are absent or not finite, sorted."""
        out = []
        for n in sorted(self.names):
            v = values.get(n)
            if v is None or not math.isfinite(float(v)):
                out.append(n)
        return out

    def evaluate(self, values: Mapping[str, float]) -> bool:
        """True when the permissive holds; False if any used name is missing or not finite."""
        if self.missing(values):
            return False
        return self.root.holds(values)

    def explain(self, values: Mapping[str, float]) -> str:
        """Short reason why the permissive fails; empty string when it holds."""
        missing = self.missing(values)
        if missing:
            parts = []
            for n in missing:
                parts.append(f"{n} is missing" if n not in values else f"{n} is not finite ({values[n]})")
            return "; ".join(parts)
        if self.root.holds(values):
            return ""
        return self.root.why(values)

    def __str__(self) -> str:
        return str(self.root)


# ---------------------------------------------------------------- tokenizer

_TOKEN_RE = re.compile(
    r"""
     (?P<ws>\s+)
    |(?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op><=|>=|==|!=|<|>)
    |(?P<lpar>\()
    |(?P<rpar>\))
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "true", "false"}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # num, name, op, lpar, rpar, and, or, not, true, false, end
    text: str
    col: int  # 1-based

    def describe(self) -> str:
        return "end of expression" if self.kind == "end" else f"'{self.text}'"


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise PermissiveSyntaxError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = m.lastgroup or ""
        word = m.group()
        if kind == "name" and word in _KEYWORDS:
            kind = word
        if kind != "ws":
            toks.append(_Tok(kind, word, pos + 1))
        pos = m.end()
    toks.append(_Tok("end", "", len(text) + 1))
    return toks


# ---------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0
        self.names: set[str] = set()

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def fail(self, tok: _Tok, expected: str) -> PermissiveSyntaxError:
        return PermissiveSyntaxError(f"unexpected {tok.describe()}, expected {expected}", tok.col)

    def parse(self) -> Node:
        node = self.parse_or()
        tok = self.peek()
        if tok.kind != "end":
            raise self.fail(tok, "'and', 'or' or end of expression")
        return node

    def parse_or(self) -> Node:
        items = [self.parse_and()]
        while self.peek().kind == "or":
            self.take()
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def parse_and(self) -> Node:
        items = [self.parse_not()]
        while self.peek().kind == "and":
            self.take()
            items.append(self.parse_not())
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_not(self) -> Node:
        tok = self.peek()
        if tok.kind == "not":
            self.take()
            return Not(self.parse_not())
        if tok.kind == "lpar":
            self.take()
            node = self.parse_or()
            close = self.peek()
            if close.kind != "rpar":
                raise self.fail(close, "')'")
            self.take()
            return node
        return self.parse_cmp()

    def parse_cmp(self) -> Node:
        left = self.parse_operand()
        if self.peek().kind != "op":
            return Truthy(left)
        op = self.take().text
        return Compare(left, op, self.parse_operand())

    def parse_operand(self) -> Operand:
        tok = self.take()
        if tok.kind == "name":
            self.names.add(tok.text)
            return Name(tok.text)
        if tok.kind == "num":
            return Const(float(tok.text), tok.text)
        if tok.kind in ("true", "false"):
            return Const(1.0 if tok.kind == "true" else 0.0, tok.text)
        raise self.fail(tok, "a name, number, true, false, 'not' or '('")


def parse_permissive(text: str) -> PermissiveExpr:
    """Parse a permissive expression; raises :class:`PermissiveSyntaxError`."""
    parser = _Parser(text)
    root = parser.parse()
    return PermissiveExpr(text, root, frozenset(parser.names))
