"""The ``groups:`` section of a site file: units operated together (a potline, a furnace bay).

A group lists units of the site. An operator may request one mode for all of them at once (each
unit still decides on its own readiness, see :mod:`apc.groups`). A group of cells in series may
declare the line current a disturbance: the rectifier belongs to the line, so no member writes its
current MV (``line_current: disturbance``); or it may give the rectifier to the APC
(``line_current: apc``): one member, the ``rectifier_unit``, writes the line's current set point
(its recipe's current MV tag is the rectifier's) within the limits of every member, and the others
take the current as a measured disturbance (:mod:`apc.groups`).

:func:`group_problems` checks what involves the units and their recipes; the loader reports each
problem at its line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from apc.types import MvKind

if TYPE_CHECKING:  # the site schema imports this module
    from apc.recipe.schema import Recipe

GROUP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
"""A group name: letters, digits, '-' and '_' (it names an HMI folder)."""
LINE_CURRENT_UNIT = "kA"
"""Unit of the MV taken as a member's line current when ``current_mv`` is not given."""


@dataclass(frozen=True)
class GroupSpec:
    """Units of the site operated together."""

    name: str
    """Unique among the site's groups; names the HMI folder ``Groups/<name>``."""
    units: tuple[str, ...]
    """Unit names of the site (at least one, each once)."""
    line_current: Literal["disturbance", "apc"] | None = None
    """Cells in series: ``disturbance``: the line current is the line's (its rectifier), no member
    writes its current MV and its controller treats the current as measured; ``apc``: one line
    current set point for the group, written by ``rectifier_unit`` within every member's limits;
    none: every member drives its own MVs."""
    current_mv: str | None = None
    """The members' MV that sets the cell current (default: the one setpoint MV in kA)."""
    rectifier_unit: str | None = None
    """``line_current: apc``: the member whose current MV is the rectifier's set point."""

    def __post_init__(self) -> None:
        if not GROUP_NAME_RE.match(self.name):
            raise ValueError(f"name {self.name!r} must be letters, digits, '-' or '_' (it names an HMI folder)")
        if not self.units:
            raise ValueError("units must list at least one unit")


@dataclass(frozen=True)
class GroupProblem:
    """One problem of the groups section: where (YAML keys from the top), field path, message."""

    keys: tuple[str | int, ...]
    field: str
    message: str


def line_current_mv(recipe: Recipe, current_mv: str | None) -> tuple[str, str]:
    """(MV name, '') of a member's line current MV, or ('', why not)."""
    mvs = recipe.io.mvs
    if current_mv is not None:
        spec = mvs.get(current_mv)
        if spec is None:
            return "", f"recipe {recipe.name!r} has no MV {current_mv!r} (MVs: {', '.join(mvs)})"
        if spec.kind is not MvKind.SETPOINT:
            return "", f"MV {current_mv!r} of recipe {recipe.name!r} is an {spec.kind.value}, not a current set point"
        return current_mv, ""
    found = [n for n, s in mvs.items() if s.unit == LINE_CURRENT_UNIT and s.kind is MvKind.SETPOINT]
    if len(found) != 1:
        which = "no" if not found else f"{len(found)} ({', '.join(found)})"
        return "", (f"recipe {recipe.name!r} has {which} setpoint MV in {LINE_CURRENT_UNIT}: "
                    "name the current MV with current_mv")
    return found[0], ""


def group_problems(groups: tuple[GroupSpec, ...], unit_names: tuple[str, ...],
                   recipes: Mapping[str, Recipe]) -> list[GroupProblem]:
    """Duplicate group names, unknown or repeated members, a unit in two line-current groups (a cell
    is in one potline), ``line_current: apc`` without a member as ``rectifier_unit``, and a line-current
    group whose member has no current MV. ``recipes``: the members' recipes that loaded (others are skipped)."""
    out: list[GroupProblem] = []
    known = set(unit_names)
    first_name: dict[str, int] = {}
    line_group: dict[str, str] = {}
    for i, g in enumerate(groups):
        base = f"groups[{i}]"
        if g.name in first_name:
            out.append(GroupProblem(("groups", i, "name"), f"{base}.name",
                                    f"duplicate group name {g.name!r} (first at groups[{first_name[g.name]}])"))
        first_name.setdefault(g.name, i)
        seen: set[str] = set()
        for j, unit in enumerate(g.units):
            where = (("groups", i, "units", j), f"{base}.units[{j}]")
            if unit not in known:
                out.append(GroupProblem(*where, f"no unit {unit!r} in this site (units: {', '.join(unit_names)})"))
                continue
            if unit in seen:
                out.append(GroupProblem(*where, f"unit {unit!r} is listed twice"))
                continue
            seen.add(unit)
            if g.line_current is not None:
                if unit in line_group:
                    out.append(GroupProblem(*where, f"unit {unit!r} is already in line-current group "
                                                    f"{line_group[unit]!r}: a cell is in one line"))
                line_group.setdefault(unit, g.name)
        if g.line_current == "apc" and g.rectifier_unit is None:
            out.append(GroupProblem(("groups", i, "line_current"), f"{base}.rectifier_unit",
                                    "line_current 'apc' needs rectifier_unit: the member whose current MV is the "
                                    "rectifier's set point"))
        elif g.line_current == "apc" and g.rectifier_unit not in g.units:
            out.append(GroupProblem(("groups", i, "rectifier_unit"), f"{base}.rectifier_unit",
                                    f"{g.rectifier_unit!r} is not a member of the group ({', '.join(g.units)})"))
        elif g.line_current != "apc" and g.rectifier_unit is not None:
            out.append(GroupProblem(("groups", i, "rectifier_unit"), f"{base}.rectifier_unit",
                                    "only for a group with line_current 'apc'"))
        if g.line_current is None:
            if g.current_mv is not None:
                out.append(GroupProblem(("groups", i, "current_mv"), f"{base}.current_mv",
                                        "only for a group with line_current"))
            continue
        for j, unit in enumerate(g.units):
            recipe = recipes.get(unit)
            if recipe is None:
                continue
            _, why = line_current_mv(recipe, g.current_mv)
            if why:
                keys: tuple[str | int, ...] = ("groups", i, "current_mv") if g.current_mv else ("groups", i, "units", j)
                out.append(GroupProblem(keys, f"{base}.current_mv" if g.current_mv else f"{base}.units[{j}]",
                                        f"unit {unit!r}: {why}"))
    return out
