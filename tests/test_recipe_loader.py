"""Tests of recipe/site loading and checking (apc.recipe.loader, apc.recipe.errors)."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from apc.recipe.errors import Problem, RecipeError
from apc.recipe.loader import (
    Converter,
    check_files,
    check_main,
    load_recipe,
    load_site,
    signal_names_for,
)
from apc.recipe.schema import InputSpec, Recipe, Site
from apc.types import MvKind

FIXTURES = Path(__file__).parent / "fixtures" / "recipes"
VALID = FIXTURES / "valid_cell.yaml"


def line_of(path: Path, needle: str) -> int:
    """1-based line of the only line of ``path`` containing ``needle``."""
    hits = [i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def problems_of(name: str) -> list[Problem]:
    path = FIXTURES / name
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.problems, "RecipeError without problems"
    assert all(p.file == str(path) for p in info.value.problems)
    return info.value.problems


def one(problems: list[Problem], path: str) -> Problem:
    hits = [p for p in problems if p.path == path]
    assert len(hits) == 1, (path, [str(p) for p in problems])
    return hits[0]


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ---------------------------------------------------------------- valid input


def test_valid_recipe_loads_into_typed_dataclasses() -> None:
    """The valid fixture loads with enums, tuples, floats, nested sections and a file hash."""
    loaded = load_recipe(VALID)
    r = loaded.recipe
    assert isinstance(r, Recipe)
    assert loaded.path == VALID
    assert loaded.sha256 == hashlib.sha256(VALID.read_bytes()).hexdigest()
    assert r.period_s == 10.0 and isinstance(r.period_s, float)
    assert r.io.inputs["cell_voltage"].range == (0.0, 60.0)
    assert r.io.inputs["line_current"].role == "disturbance"
    assert r.io.inputs["bath_temp_dip"].max_age_s == 9000.0
    assert r.io.inputs["cell_voltage"].frozen is not None and r.io.inputs["cell_voltage"].frozen.cycles == 30
    assert r.io.mvs["oxide_feed"].kind is MvKind.SETPOINT
    assert r.io.mvs["anode_move"].kind is MvKind.INCREMENT
    assert r.io.mvs["anode_move"].sequence_tag == "CELL01.ANODE.SEQ"
    assert r.io.mvs["oxide_feed"].sequence_tag is None
    assert r.controller.baseline is not None and r.controller.baseline.nominal_feed_kg_h == 9.4
    assert r.controller.baseline.overfeed_duration_s == 3600.0  # default kept
    assert r.limits["oxide_feed"].operator == (2.0, 20.0)
    assert r.permissives["voltage_and_temp_ok"].applies_to == ("oxide_feed", "anode_move")
    assert r.estimator.filtered.back_emf_V == 1.6


def test_check_files_accepts_valid_recipe_and_site() -> None:
    """check_files returns no problems for the valid recipe and site fixtures."""
    assert check_files([VALID, FIXTURES / "site_valid.yaml"]) == []


def test_signal_names_include_inputs_mvs_and_provider() -> None:
    """signal_names_for = input names ∪ MV names ∪ provider names; model parameters excluded."""
    recipe = load_recipe(VALID).recipe
    assert signal_names_for(recipe) == {
        "cell_voltage", "line_current", "bath_temp_dip", "oxide_feed", "anode_move"
    }
    assert "R_slope" in signal_names_for(recipe, lambda r: {"R_slope"})
    assert "current_efficiency" not in signal_names_for(recipe)


def test_provider_and_extra_names_admit_estimate_names(tmp_path: Path) -> None:
    """A permissive using an estimate name loads when the provider or extra_names supplies it."""
    text = VALID.read_text().replace(
        'expr: "cell_voltage < 20 and not (bath_temp_dip < 1000)"', 'expr: "R_slope < 2"'
    )
    path = write(tmp_path, text)
    with pytest.raises(RecipeError, match="unknown signal 'R_slope'"):
        load_recipe(path)
    assert load_recipe(path, extra_names=frozenset({"R_slope"})).recipe.name == "nd_cell_baseline"
    assert load_recipe(path, provider=lambda r: ["R_slope"]).recipe.name == "nd_cell_baseline"


def test_failing_provider_becomes_a_problem(tmp_path: Path) -> None:
    """A provider raising (e.g. unknown model) is reported at model.name, not as a traceback."""

    def provider(recipe: Recipe) -> list[str]:
        raise KeyError(recipe.model.name)

    with pytest.raises(RecipeError) as info:
        load_recipe(VALID, provider=provider)
    p = one(info.value.problems, "model.name")
    assert p.line == line_of(VALID, "  name: nd_cell")


# ---------------------------------------------------------------- bad fixtures


def test_yaml_syntax_error_reports_line() -> None:
    """A YAML syntax error is one problem at the line of the error mark, naming the open construct."""
    path = FIXTURES / "bad_syntax.yaml"
    problems = problems_of("bad_syntax.yaml")
    assert len(problems) == 1
    assert problems[0].line == line_of(path, "operator: [2, 20]")
    assert "YAML syntax error" in problems[0].message
    assert f"started at line {line_of(path, 'engineering: [0, 30')}" in problems[0].message


def test_wrong_type_reports_value_line_and_expected_type() -> None:
    """`period_s: fast` is refused at its line with the expected type."""
    p = one(problems_of("bad_type.yaml"), "period_s")
    assert p.line == line_of(FIXTURES / "bad_type.yaml", "period_s: fast")
    assert "expected a number" in p.message and "'fast'" in p.message
    assert str(p) == f"{FIXTURES / 'bad_type.yaml'}:{p.line}: period_s: expected a number, got 'fast'"


def test_unknown_key_suggests_closest_key() -> None:
    """A typo `preiod_s` is refused at its line with a 'did you mean period_s' hint."""
    problems = problems_of("bad_unknown_key.yaml")
    p = one(problems, "preiod_s")
    assert p.line == line_of(FIXTURES / "bad_unknown_key.yaml", "preiod_s: 10")
    assert "unknown key" in p.message and "did you mean 'period_s'" in p.message
    missing = one(problems, "period_s")
    assert "required" in missing.message


def test_permissive_with_unknown_signal_is_refused() -> None:
    """A permissive naming an unknown signal is refused at the expr line with a suggestion."""
    p = one(problems_of("bad_unknown_signal.yaml"), "permissives.voltage_and_temp_ok.expr")
    assert p.line == line_of(FIXTURES / "bad_unknown_signal.yaml", "expr:")
    assert "unknown signal 'bath_temp'" in p.message and "bath_temp_dip" in p.message


def test_limits_for_unknown_mv_and_mv_without_limits() -> None:
    """Limits keyed by a non-MV are refused at the key; the MV left without limits is reported too."""
    path = FIXTURES / "bad_limits_unknown_mv.yaml"
    problems = problems_of(path.name)
    p = one(problems, "limits.anode_mov")
    assert p.line == line_of(path, "anode_mov:")
    assert "did you mean 'anode_move'" in p.message
    q = one(problems, "limits.anode_move")
    assert q.line == line_of(path, "limits:") and "no limits" in q.message


def test_operator_limits_outside_engineering_limits() -> None:
    """MvLimits.__post_init__'s error is reported at the operator line with path limits.<mv>.operator."""
    path = FIXTURES / "bad_operator_limits.yaml"
    p = one(problems_of(path.name), "limits.oxide_feed.operator")
    assert p.line == line_of(path, "operator: [2, 40]")
    assert "lie outside engineering limits" in p.message


def test_duplicate_key_is_refused() -> None:
    """A key given twice in one mapping is refused at the second occurrence, naming the first."""
    path = FIXTURES / "bad_duplicate_key.yaml"
    p = one(problems_of(path.name), "io.inputs.cell_voltage.max_age_s")
    assert p.line == line_of(path, "max_age_s: 60")
    assert f"first given at line {p.line - 1}" in p.message


def test_written_tag_read_as_input_is_refused() -> None:
    """An MV writing a tag that is read as an input is refused at the MV's tag line."""
    path = FIXTURES / "bad_tags.yaml"
    p = one(problems_of(path.name), "io.mvs.anode_move.tag")
    assert p.line == line_of(path, "readback: CELL01.ANODE.POS") - 1
    assert "io.inputs.cell_voltage.tag" in p.message


def test_baseline_controller_requires_baseline_section() -> None:
    """controller.kind baseline without controller.baseline is refused at the controller line."""
    path = FIXTURES / "bad_no_baseline.yaml"
    p = one(problems_of(path.name), "controller.baseline")
    assert p.line == line_of(path, "controller:")


def test_several_errors_are_all_reported() -> None:
    """Every independent error in one file is reported, each with its own line, sorted by line."""
    path = FIXTURES / "bad_many.yaml"
    problems = problems_of(path.name)
    expected = {
        "period_s": "period_s: fast",
        "estimator.warmup_s": "warmup_s: long",
        "limits.anode_move.min_intervall_s": "min_intervall_s",
        "permissives.voltage_and_temp_ok.expr": "expr:",
        "permissives.voltage_and_temp_ok.applies_to[1]": "applies_to:",
        "modes.shed_after_bad_cycles": "shed_after_bad_cycles: 2.5",
    }
    assert {p.path for p in problems} == set(expected)
    for field_path, needle in expected.items():
        assert one(problems, field_path).line == line_of(path, needle)
    assert [p.line for p in problems] == sorted(p.line or 0 for p in problems)
    assert "column 23" in one(problems, "permissives.voltage_and_temp_ok.expr").message
    assert "expected an integer" in one(problems, "modes.shed_after_bad_cycles").message


def test_recipe_error_str_lists_every_problem() -> None:
    """str(RecipeError) renders each problem as file:line: path: message, one per line."""
    with pytest.raises(RecipeError) as info:
        load_recipe(FIXTURES / "bad_many.yaml")
    lines = str(info.value).splitlines()
    assert lines == [str(p) for p in info.value.problems]
    assert str(Problem("nd_cell.yaml", 42, "limits.oxide_feed.operator", "bad")) == (
        "nd_cell.yaml:42: limits.oxide_feed.operator: bad"
    )
    assert str(Problem("x.yaml", None, "", "cannot read file")) == "x.yaml: cannot read file"


# ---------------------------------------------------------------- sites


def test_load_site_loads_units_and_their_recipes() -> None:
    """load_site returns the typed site and each unit's recipe, resolved relative to the site file."""
    loaded = load_site(FIXTURES / "site_valid.yaml")
    assert isinstance(loaded.site, Site)
    assert [u.name for u in loaded.site.units] == ["cell01", "cell02"]
    assert loaded.site.units[0].requested_mode == "ON"  # YAML 1.1 'ON' stays a string
    assert loaded.site.units[1].requested_mode == "STANDBY"
    assert loaded.site.units[0].plant.seed == 1 and loaded.site.speed == 60.0
    assert set(loaded.recipes) == {"cell01", "cell02"}
    assert loaded.recipes["cell01"].path == FIXTURES / "valid_cell.yaml"
    assert loaded.recipes["cell01"].recipe.name == "nd_cell_baseline"


def test_site_with_broken_recipe_reports_recipe_file_and_line() -> None:
    """A site pointing at a broken recipe reports the recipe's file:line; a missing recipe the site's line."""
    site = FIXTURES / "site_broken_recipe.yaml"
    with pytest.raises(RecipeError) as info:
        load_site(site)
    problems = info.value.problems
    bad = FIXTURES / "bad_type.yaml"
    p = one(problems, "period_s")
    assert (p.file, p.line) == (str(bad), line_of(bad, "period_s: fast"))
    q = one(problems, "units[2].recipe")
    assert (q.file, q.line) == (str(site), line_of(site, "does_not_exist.yaml"))
    assert check_files([site]) == problems


def test_check_files_detects_site_by_units_key() -> None:
    """check_files treats a file with top-level `units` as a site and checks its recipes."""
    problems = check_files([FIXTURES / "site_broken_recipe.yaml"])
    assert {p.file for p in problems} == {str(FIXTURES / "bad_type.yaml"), str(FIXTURES / "site_broken_recipe.yaml")}


def test_check_main_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """check_main returns 0 for good files, 1 with problems printed to stderr, 2 without files."""
    assert check_main([str(VALID)]) == 0
    assert check_main([str(VALID), str(FIXTURES / "bad_type.yaml")]) == 1
    err = capsys.readouterr().err
    assert "bad_type.yaml:" in err and "period_s" in err and "Traceback" not in err
    assert check_main([]) == 2


# ---------------------------------------------------------------- converter details


def test_unreadable_empty_and_non_mapping_files(tmp_path: Path) -> None:
    """Missing, empty, non-UTF-8 and top-level-list files each give one problem, no traceback."""
    assert [p.line for p in check_files([tmp_path / "nope.yaml"])] == [None]
    assert "empty" in check_files([write(tmp_path, "", "e.yaml")])[0].message
    assert "mapping" in check_files([write(tmp_path, "- 1\n- 2\n", "l.yaml")])[0].message
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    assert "UTF-8" in check_files([binary])[0].message


def convert_input(text: str) -> tuple[object, list[Problem]]:
    import yaml

    conv = Converter("t.yaml")
    value = conv.convert(InputSpec, yaml.compose(textwrap.dedent(text), Loader=yaml.SafeLoader), "in")
    return value, conv.problems


def test_converter_type_rules() -> None:
    """bool is not a number, NaN is refused, tuples need the right length, 1e3 is a number."""
    _, problems = convert_input(
        """\
        tag: T
        unit: V
        range: [0, 1, 2]
        max_age_s: true
        accept_uncertain: 1
        """
    )
    by_path = {p.path: p for p in problems}
    assert "list of 2 items" in by_path["in.range"].message and by_path["in.range"].line == 3
    assert "expected a number" in by_path["in.max_age_s"].message and by_path["in.max_age_s"].line == 4
    assert "true or false" in by_path["in.accept_uncertain"].message
    value, problems = convert_input("tag: T\nunit: V\nrange: [0, .nan]\nmax_age_s: 1e3\nfrozen:\n")
    assert [(p.path, p.line) for p in problems] == [("in.range[1]", 3)]
    value, problems = convert_input("tag: 40001\nunit: V\nrange: [0, 5]\nmax_age_s: 1e3\nfrozen:\n")
    assert problems == [] and isinstance(value, InputSpec)
    assert value.max_age_s == 1000.0 and value.frozen is None and value.tag == "40001"


def test_converter_post_init_error_without_field_name_goes_to_mapping() -> None:
    """A __post_init__ error is reported at its field when the message starts with a field name."""
    _, problems = convert_input("tag: T\nunit: V\nrange: [5, 1]\nmax_age_s: 1\n")
    assert [(p.path, p.line) for p in problems] == [("in.range", 3)]
    _, problems = convert_input("tag: T\nunit: V\nrange: [0, 1]\nmax_age_s: 1\nfrozen: {epsilon: 0, cycles: 1}\n")
    assert [(p.path, p.line) for p in problems] == [("in.frozen.cycles", 5)]


def test_bad_enum_value_lists_choices(tmp_path: Path) -> None:
    """An unknown MV kind is refused at its line listing the valid values."""
    text = VALID.read_text().replace("kind: setpoint", "kind: setpont")
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    p = one(info.value.problems, "io.mvs.oxide_feed.kind")
    assert "'setpoint'" in p.message and "'increment'" in p.message


def test_status_bound_to_a_tag_the_apc_writes_is_refused(tmp_path: Path) -> None:
    """A remote status (or readback) bound to a tag the APC itself writes is refused at its line."""
    shipped = Path(__file__).resolve().parent.parent / "recipes" / "nd_cell_6ka.yaml"
    text = shipped.read_text().replace("remote_status: feed.remote", "remote_status: feed.apc_active")
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    p = one(list(info.value.problems), "io.mvs.oxide_feed.remote_status")
    assert p.line == line_of(path, "remote_status: feed.apc_active") and "must report it" in p.message


def test_increment_mv_without_sequence_tag_is_refused_at_its_line(tmp_path: Path) -> None:
    """An increment MV bound without a sequence tag is refused at the MV's line: without one a re-sent write could move it twice."""
    shipped = Path(__file__).resolve().parent.parent / "recipes" / "nd_cell_6ka.yaml"
    text = shipped.read_text().replace("      sequence_tag: anode.move_seq\n", "")
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    p = one(list(info.value.problems), "io.mvs.anode_move.sequence_tag")
    assert p.line == line_of(path, "      tag: anode.move_cm") - 1 and "required for an increment MV" in p.message
