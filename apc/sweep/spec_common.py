"""What sweep and tune spec files share: reading the file, named sets of overrides, KPI names.

Problems are reported like a recipe's (:class:`apc.recipe.errors.Problem`: file, line, field); an
override written in a spec names the spec's file and line when the recipe refuses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from apc.recipe.errors import Problem, RecipeError
from apc.recipe.loader import Converter, LoadedRecipe
from apc.recipe.overrides import Override, parse_override

__all__ = ["compose_spec", "kpi_problem", "load_variant", "overrides_of", "take_section", "value_text"]


def compose_spec(path: Path) -> MappingNode:
    """The spec file's YAML tree; raises :class:`RecipeError` (file, line) on unreadable or bad YAML."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError([Problem(file, None, "", f"cannot read file: {exc}")]) from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise RecipeError([Problem(file, None if mark is None else int(mark.line) + 1, "",
                                   f"YAML syntax error: {exc.problem or exc.context}")]) from exc
    if not isinstance(root, MappingNode):
        raise RecipeError([Problem(file, 1, "", "expected a mapping at top level")])
    return root


def take_section(root: MappingNode, key: str) -> tuple[Node | None, Node | None]:
    """Remove ``key`` from ``root`` (converted by hand) and return its (key node, value node)."""
    for j, (k, v) in enumerate(root.value):
        if isinstance(k, ScalarNode) and k.value == key:
            del root.value[j]
            return k, v
    return None, None


def value_text(node: Node) -> str:
    """YAML text of a value node: a scalar as written, a collection in flow style."""
    if isinstance(node, ScalarNode):
        if node.style in ("'", '"'):
            return yaml.safe_dump(node.value, default_style=node.style).strip().removesuffix("...").strip()
        return str(node.value)
    data: Any = yaml.SafeLoader("").construct_document(node)
    return yaml.safe_dump(data, default_flow_style=True, width=1 << 20).strip().removesuffix("...").strip()


def overrides_of(conv: Converter, node: Node, where: str) -> tuple[Override, ...]:
    """A mapping ``PATH: VALUE`` as overrides (each knowing its spec line); problems go to ``conv``."""
    if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return ()
    if not isinstance(node, MappingNode):
        conv.problem(conv.line(node), where, "expected a mapping of recipe field paths to values")
        return ()
    out: list[Override] = []
    for key, key_node, value_node in conv.pairs(node, where):
        line = int(key_node.start_mark.line) + 1
        try:
            out.append(parse_override(f"{key}={value_text(value_node)}", source=f"{conv.file}:{line}"))
        except RecipeError:
            conv.problem(line, f"{where}.{key}",
                         "expected a dotted recipe field path such as controller.mpc.horizon_steps")
    return tuple(out)


def load_variant(recipe_path: Path, overrides: tuple[Override, ...]) -> LoadedRecipe:
    """The recipe with ``overrides``, fully checked (raises :class:`RecipeError`)."""
    from apc.assembly import load

    return load(recipe_path, overrides)


def kpi_problem(conv: Converter, line: int, where: str, name: str, known: Iterable[str]) -> None:
    """Record that ``name`` is no KPI of the recipe's unit kind (with the closest one)."""
    import difflib

    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else f"; known: {', '.join(names)}"
    conv.problem(line, where, f"unknown KPI '{name}'{hint}")
