"""Command-line overrides of recipe fields (``apc sim --set PATH=VALUE``, sweeps, tuning).

An override replaces (or adds) one node of the recipe's composed YAML tree before the tree is
converted, so an overridden value is checked exactly like one written in the file. ``PATH`` is the
dotted field path the loader reports (``controller.mpc.horizon_steps``, ``limits.oxide_feed.rate_per_s``,
``io.inputs.cell_voltage.range[1]``); ``VALUE`` is YAML (a scalar or a flow collection:
``2.0``, ``[1045, 1050]``, ``{oxide_feed: 1.0}``).

The nodes an override puts in the tree carry a line number no file has, so each problem the loader
finds there is reported against the override (``--set controller.mpc.horizon_steps=abc: expected an
integer, got 'abc'``) instead of a line of the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import yaml
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from apc.recipe.errors import Problem, RecipeError

__all__ = ["Override", "apply_overrides", "attribute_problems", "override_suffix", "parse_override",
           "parse_overrides"]

_LINE_BASE = 1_000_000_000
"""0-based line of the nodes of override ``i``: ``_LINE_BASE + i`` (far beyond any recipe file)."""
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_INDEX = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class Override:
    """One ``PATH=VALUE``: the field path split into keys (names and list indices) and the YAML value text."""

    path: str
    keys: tuple[str | int, ...]
    value_text: str
    source: str = ""
    """Where it was written (``sweep.yaml:12``), empty for the command line."""

    @property
    def label(self) -> str:
        """How it was given, e.g. ``--set controller.mpc.horizon_steps=36`` (or ``sweep.yaml:12: PATH=VALUE``)."""
        if self.source:
            return f"{self.source}: {self.path}={self.value_text}"
        return f"--set {self.path}={self.value_text}"


def _split_path(path: str) -> tuple[str | int, ...] | None:
    keys: list[str | int] = []
    for part in path.split("."):
        m = _KEY.match(part)
        if m is None:
            return None
        keys.append(m.group(0))
        rest = part[m.end():]
        while rest:
            i = _INDEX.match(rest)
            if i is None:
                return None
            keys.append(int(i.group(1)))
            rest = rest[i.end():]
    return tuple(keys)


def parse_override(text: str, source: str = "") -> Override:
    """``PATH=VALUE`` as an :class:`Override`; raises :class:`RecipeError` naming the malformed text."""
    path, eq, value = text.partition("=")
    path = path.strip()
    keys = _split_path(path) if eq else None
    if not keys:
        where = f"{source}: {text}" if source else f"--set {text}"
        raise RecipeError([Problem(where, None, "", "expected PATH=VALUE, PATH a dotted field path such as "
                                                    "controller.mpc.horizon_steps")])
    return Override(path, keys, value.strip(), source)


def parse_overrides(texts: Iterable[str] | None) -> tuple[Override, ...]:
    """Each ``PATH=VALUE`` parsed; every malformed one reported together."""
    out: list[Override] = []
    problems: list[Problem] = []
    for text in texts or ():
        try:
            out.append(parse_override(text))
        except RecipeError as exc:
            problems.extend(exc.problems)
    if problems:
        raise RecipeError(problems)
    return tuple(out)


def _mark(i: int) -> Mark:
    return Mark("--set", 0, _LINE_BASE + i, 0, None, 0)


def _stamp(node: Node, i: int) -> None:
    """Give ``node`` and everything under it the line of override ``i``."""
    node.start_mark = node.end_mark = _mark(i)
    if isinstance(node, SequenceNode):
        for child in node.value:
            _stamp(child, i)
    elif isinstance(node, MappingNode):
        for k, v in node.value:
            _stamp(k, i)
            _stamp(v, i)


def _value_node(ov: Override, i: int, problems: list[Problem]) -> Node | None:
    try:
        node = yaml.compose(ov.value_text, Loader=yaml.SafeLoader) if ov.value_text else None
    except yaml.YAMLError as exc:
        detail = getattr(exc, "problem", None) or str(exc)
        problems.append(Problem(ov.label, None, "", f"VALUE is not YAML: {detail}"))
        return None
    if node is None:
        node = ScalarNode("tag:yaml.org,2002:null", "")
    _stamp(node, i)
    return node


def _where(keys: Sequence[str | int]) -> str:
    out = ""
    for k in keys:
        out = f"{out}[{k}]" if isinstance(k, int) else (f"{out}.{k}" if out else k)
    return out


def _child(node: MappingNode, key: str) -> int | None:
    for j, (k, _) in enumerate(node.value):
        if isinstance(k, ScalarNode) and k.value == key:
            return j
    return None


def _apply_one(root: MappingNode, ov: Override, i: int, problems: list[Problem]) -> None:
    value = _value_node(ov, i, problems)
    if value is None:
        return
    node: Node = root
    for depth, key in enumerate(ov.keys):
        last = depth == len(ov.keys) - 1
        here = _where(ov.keys[:depth]) or "the recipe"
        if isinstance(key, int):
            if not isinstance(node, SequenceNode):
                problems.append(Problem(ov.label, None, "", f"{here} is not a list, cannot take [{key}]"))
                return
            if key >= len(node.value):
                problems.append(Problem(ov.label, None, "", f"{here} has {len(node.value)} items, no [{key}]"))
                return
            if last:
                node.value[key] = value
                return
            node = node.value[key]
            continue
        if not isinstance(node, MappingNode):
            problems.append(Problem(ov.label, None, "", f"{here} is not a mapping, it has no field '{key}'"))
            return
        j = _child(node, key)
        if j is None:  # a new key: the conversion says whether the schema knows it
            key_node = ScalarNode("tag:yaml.org,2002:str", key)
            _stamp(key_node, i)
            child: Node = value if last else MappingNode("tag:yaml.org,2002:map", [], flow_style=False)
            _stamp(child, i)
            node.value.append((key_node, child))
            node = child
        elif last:
            node.value[j] = (node.value[j][0], value)
        else:
            node = node.value[j][1]


def apply_overrides(root: MappingNode, overrides: Sequence[Override]) -> list[Problem]:
    """Put each override's value into the composed tree ``root`` (in order; a later one wins); the
    problems of overrides that cannot be placed (a path through a scalar, an index past a list's end)."""
    problems: list[Problem] = []
    for i, ov in enumerate(overrides):
        _apply_one(root, ov, i, problems)
    return problems


def attribute_problems(problems: Iterable[Problem], overrides: Sequence[Override]) -> list[Problem]:
    """Problems found in an overridden node named by their override instead of a line of the file."""
    out: list[Problem] = []
    for p in problems:
        i = None if p.line is None else p.line - 1 - _LINE_BASE
        if i is None or not 0 <= i < len(overrides):
            out.append(p)
            continue
        ov = overrides[i]
        out.append(Problem(ov.label, None, "" if p.path == ov.path else p.path, p.message))
    return out


def override_suffix(overrides: Sequence[Override]) -> bytes:
    """What the overrides add to the file's bytes for the recipe's SHA-256 (empty without overrides)."""
    return b"".join(f"\n# {ov.label}".encode() for ov in overrides)
