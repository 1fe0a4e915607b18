"""Site groups: the groups section at load, and a potline whose line current is a line disturbance."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from apc.assembly import load_site_file
from apc.audit import make_logger
from apc.groups import give_line_current, line_current_reason
from apc.recipe.errors import RecipeError
from apc.types import Mode
from tests.helpers.sim_harness import ND_RECIPE, ROOT, SimUnit, scenario

MPC_RECIPE = ROOT / "tests" / "fixtures" / "mpc" / "nd_cell_mpc.yaml"
CURRENT_TAGS = ("current.sp_kA", "current.apc_active")


def potline_site(tmp_path: Path, groups: str, first_recipe: Path = ND_RECIPE) -> Path:
    """A site of three simulated cells (the first with ``first_recipe``) and the given groups section."""
    site = tmp_path / "site.yaml"
    site.write_text(
        "schema_version: 1\nsite: potline-test\nunits:\n"
        f"  - {{name: cell-01, recipe: {first_recipe}, plant: {{kind: sim, seed: 101}}}}\n"
        f"  - {{name: cell-02, recipe: {ND_RECIPE}, plant: {{kind: sim, seed: 102}}}}\n"
        f"  - {{name: cell-03, recipe: {ND_RECIPE}, plant: {{kind: sim, seed: 103}}}}\n"
        + groups)
    return site


LINE_GROUP = ("groups:\n  - name: potline-1\n    units: [cell-01, cell-02, cell-03]\n"
              "    line_current: disturbance\n")


def test_groups_section_loads_members_and_line_current(tmp_path: Path) -> None:
    """A group of three cells loads with its members, line current mode and the default (kA) current MV."""
    site = load_site_file(potline_site(tmp_path, LINE_GROUP + "  - name: bay-a\n    units: [cell-02]\n")).site
    assert [(g.name, g.units, g.line_current) for g in site.groups] == [
        ("potline-1", ("cell-01", "cell-02", "cell-03"), "disturbance"), ("bay-a", ("cell-02",), None)]


def test_group_errors_name_file_line_and_field(tmp_path: Path) -> None:
    """Unknown and repeated members, duplicate names, a cell in two lines, 'apc' without a rectifier unit and a wrong current MV: each at its line."""
    path = potline_site(tmp_path, (
        "groups:\n"
        "  - name: potline-1\n"
        "    units: [cell-01, cell-09, cell-01]\n"    # line 9
        "    line_current: disturbance\n"
        "  - name: potline-1\n"                       # line 11
        "    units: [cell-01]\n"                      # line 12
        "    line_current: apc\n"                     # line 13
    ))
    with pytest.raises(RecipeError) as err:
        load_site_file(path)
    text = str(err.value)
    assert f"{path}:9: groups[0].units[1]: no unit 'cell-09' in this site" in text
    assert f"{path}:9: groups[0].units[2]: unit 'cell-01' is listed twice" in text
    assert f"{path}:11: groups[1].name: duplicate group name 'potline-1'" in text
    assert f"{path}:12: groups[1].units[0]: unit 'cell-01' is already in line-current group 'potline-1'" in text
    assert f"{path}:13: groups[1].rectifier_unit: line_current 'apc' needs rectifier_unit" in text
    bad_mv = potline_site(tmp_path, LINE_GROUP + "    current_mv: anode_move\n")
    with pytest.raises(RecipeError, match=r"site.yaml:11: groups\[0\].current_mv: unit 'cell-01': MV 'anode_move'"):
        load_site_file(bad_mv)


def _events(buf: io.StringIO, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in buf.getvalue().splitlines() if line]
    return [e for e in lines if e["event"] == name]


def test_line_current_group_never_writes_the_current_and_the_mpc_plans_without_it(tmp_path: Path) -> None:
    """In a line-current group no cell writes the current tag or its flag over a run to ON; the MPC plans with the current held."""
    loaded = load_site_file(potline_site(tmp_path, LINE_GROUP, first_recipe=MPC_RECIPE))
    buf = io.StringIO()
    audit = make_logger(buf)
    cells = {su.name: SimUnit(loaded.recipes[su.name], scenario(), seed=su.plant.seed, audit=audit, name=su.name)
             for su in loaded.site.units}
    give_line_current(loaded.site.groups, {n: c.unit for n, c in cells.items()}, 0.0)
    outside = SimUnit(ND_RECIPE, scenario(), seed=104, name="cell-04")  # the same cell outside the group
    reason = line_current_reason("potline-1")
    assert reason == "line current is a line disturbance (group potline-1)"
    owned = {e["unit"]: (e["mv"], e["why"]) for e in _events(buf, "mv_line_owned")}
    assert owned == dict.fromkeys(cells, ("current_sp", reason))
    for c in [*cells.values(), outside]:
        c.request(Mode.ON)
        c.run_until(lambda r: r.mode.actual == "ON", 1000)
        c.step(36)  # three MPC solves
    for name, c in cells.items():
        assert c.unit.set_mv_enabled("current_sp", True, "pytest", "test", 0.0) == reason
        assert not c.unit.mvs["current_sp"].enabled
        writes = {w.tag for r in c.records for w in r.writes}
        assert writes.isdisjoint(CURRENT_TAGS), name
        assert "feed.sp_kg_h" in writes, "the other MVs are still driven"
    assert {w.tag for r in outside.records for w in r.writes} >= set(CURRENT_TAGS), "outside the group it is written"
    mpc = cells["cell-01"]
    solved = [r for r in mpc.records[-36:] if r.plan is not None and r.plan.status == "ok" and r.plan.iterations]
    assert len(solved) >= 2, "the MPC still solves"
    for r in mpc.records[-36:]:
        assert r.plan is not None and r.plan.moves.get("current_sp", r.readback["current_sp"]) == r.readback[
            "current_sp"], "no current move"
    held = mpc.records[-1].readback["current_sp"]
    planned = mpc.unit.controller.planned("current_sp")
    assert planned and planned == pytest.approx((held,) * len(planned)), "the plan holds the line current"


def _apc_line(audit: Any) -> tuple[dict[str, SimUnit], Any]:
    """Three warm baseline cells ON, cell-01 the rectifier unit of an 'apc' line group."""
    from apc.groups import share_line_limits
    from apc.recipe.group_schema import GroupSpec

    cells = {n: SimUnit(scen=scenario(), seed=300 + i, audit=audit, name=n)
             for i, n in enumerate(("cell-01", "cell-02", "cell-03"))}
    spec = GroupSpec("potline-1", tuple(cells), line_current="apc", rectifier_unit="cell-01")
    units = {n: c.unit for n, c in cells.items()}
    give_line_current([spec], units, 0.0)
    share_line_limits([spec], units, 0.0)
    for c in cells.values():
        c.go_on()
    return cells, spec


def test_apc_line_current_is_written_by_the_rectifier_unit_only_within_every_members_limits() -> None:
    """With cell-02's operator high cut to 5.8 kA the rectifier unit (cell-01, own limits up to 6.5) ramps its current set point down at the rate to 5.8 and never above the previous write; cells 02 and 03 never write the current."""
    buf = io.StringIO()
    cells, _ = _apc_line(make_logger(buf))
    assert _events(buf, "mv_line_shared")[0]["mv"] == "current_sp"
    owned = _events(buf, "mv_line_owned")
    assert len(owned) == 2 and all("by its rectifier unit cell-01" in e["why"] for e in owned)
    rect = cells["cell-01"]
    assert rect.unit.mvs["current_sp"].limits.operator == (5.0, 6.5)
    assert cells["cell-02"].unit.set_operator_limits("current_sp", 5.0, 5.8, "olga", "test", 0.0) == ""
    rate_step = rect.recipe.limits["current_sp"].rate_per_s * rect.period
    written = []
    for _ in range(40):
        for c in cells.values():
            rec = c.step()[0]
            if c is rect:
                written += [w.value for w in rec.writes if w.tag == "current.sp_kA"]
            else:
                assert not [w for w in rec.writes if w.tag in CURRENT_TAGS], "only the rectifier unit writes"
    assert written[0] == pytest.approx(6.0 - rate_step) and written[-1] == pytest.approx(5.8)
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(written)) and min(written) >= 5.8 - 1e-9


def test_apc_line_current_holds_when_the_members_limits_do_not_overlap() -> None:
    """cell-02 allows at most 5.2 kA and cell-03 at least 5.5 kA: the rectifier unit writes no current move and says why."""
    cells, _ = _apc_line(make_logger(io.StringIO()))
    assert cells["cell-02"].unit.set_operator_limits("current_sp", 5.0, 5.2, "olga", "test", 0.0) == ""
    assert cells["cell-03"].unit.set_operator_limits("current_sp", 5.5, 6.5, "olga", "test", 0.0) == ""
    rec = cells["cell-01"].step()[0]
    decision = rec.decisions["current_sp"]
    assert not decision.write and "do not overlap" in decision.reason
    assert not [w for w in rec.writes if w.tag == "current.sp_kA"]
