"""Overrides written into a recipe file's text, for review as a unified diff (``apc tune``).

Each value is spliced into the file where the loader found the field (comments and layout kept);
a field the file does not list is added as a new line of its mapping (or a new entry of a flow
mapping). :func:`recipe_with_overrides` checks that the new text reads back to the same YAML data
as the file with the overrides applied, so the diff shows exactly what was run.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from apc.recipe.overrides import Override, apply_overrides

__all__ = ["OverrideTextError", "recipe_diff", "recipe_with_overrides"]


class OverrideTextError(ValueError):
    """An override cannot be written into the file's text (the overrides file still holds it)."""


def _nested(keys: Sequence[str | int], value: str) -> str:
    """``{a: {b: value}}`` for keys ``a, b`` (flow style, for any context)."""
    text = value
    for key in reversed(keys):
        text = f"{{{key}: {text}}}"
    return text


def _line_end(text: str, index: int) -> int:
    nl = text.find("\n", index)
    return len(text) if nl < 0 else nl + 1


def _last_end(node: Node) -> int:
    """Index where the last value of a block collection ends."""
    while isinstance(node, (MappingNode, SequenceNode)) and not node.flow_style and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(node, MappingNode) else last
    return int(node.end_mark.index)


def _splice_one(text: str, ov: Override) -> str:
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        raise OverrideTextError("the file is empty")
    node: Node = root
    for depth, key in enumerate(ov.keys):
        if isinstance(key, int):
            if not isinstance(node, SequenceNode) or key >= len(node.value):
                raise OverrideTextError(f"{ov.label}: no such list item in the file")
            node = node.value[key]
            continue
        if not isinstance(node, MappingNode):
            raise OverrideTextError(f"{ov.label}: the file has no mapping here")
        found = [v for k, v in node.value if isinstance(k, ScalarNode) and k.value == key]
        if found:
            node = found[0]
            continue
        rest = ov.keys[depth + 1:]
        if any(isinstance(k, int) for k in rest):
            raise OverrideTextError(f"{ov.label}: cannot add a list item the file lacks")
        value = ov.value_text or "null"
        if node.flow_style:
            close = int(node.end_mark.index) - 1
            sep = ", " if node.value else ""
            return f"{text[:close]}{sep}{key}: {_nested(rest, value)}{text[close:]}"
        if not node.value:
            raise OverrideTextError(f"{ov.label}: the file's mapping here is empty")
        indent = " " * int(node.value[0][0].start_mark.column)
        at = _line_end(text, _last_end(node))
        head = "" if at == 0 or text[at - 1] == "\n" else "\n"
        return f"{text[:at]}{head}{indent}{key}: {_nested(rest, value)}\n{text[at:]}"
    start, end = int(node.start_mark.index), int(node.end_mark.index)
    if isinstance(node, (MappingNode, SequenceNode)) and not node.flow_style:
        end = _line_end(text, _last_end(node)) - 1
    return text[:start] + (ov.value_text or "null") + text[end:]


def recipe_with_overrides(text: str, overrides: Sequence[Override]) -> str:
    """The recipe text with every override written in; raises :class:`OverrideTextError` when the
    result would not read back to the same data as the overrides applied to ``text``."""
    out = text
    for ov in overrides:
        out = _splice_one(out, ov)
    expected = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(expected, MappingNode) or apply_overrides(expected, overrides):
        raise OverrideTextError("the overrides do not apply to this file")
    want = yaml.SafeLoader("").construct_document(expected)
    got = yaml.safe_load(out)
    if got != want:
        raise OverrideTextError("the overrides written into the file's text read back differently")
    return out


def recipe_diff(path: Path, overrides: Sequence[Override]) -> str:
    """Unified diff of the recipe file ``path`` against the same file with ``overrides`` written in."""
    text = path.read_text(encoding="utf-8")
    new = recipe_with_overrides(text, overrides)
    return "".join(difflib.unified_diff(text.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=f"a/{path.name}", tofile=f"b/{path.name}"))
