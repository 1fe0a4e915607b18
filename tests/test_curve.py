"""Tests of the heating-curve recipe sections (apc.recipe.curve_schema)."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
import yaml
from yaml.nodes import MappingNode, Node

from apc.recipe.curve_schema import (
    BatchSection,
    CurveSection,
    CurveSegmentError,
    Segment,
    check_against_model,
)
from apc.recipe.errors import RecipeError
from apc.recipe.loader import convert
from sim.models import get_model


def ramp(rate: float, target: float) -> Segment:
    return Segment("ramp", rate_degC_min=rate, target_degC=target)


def soak(time_min: float, lo: float, hi: float, target: float | None = None) -> Segment:
    return Segment("soak", time_min=time_min, band_degC=(lo, hi), target_degC=target)


def vim_curve(*segments: Segment, max_heat: float = 25.0) -> CurveSection:
    segs = segments or (ramp(25.0, 950.0), Segment("hold_until", condition="chamber_pressure_Pa < 2", timeout_min=20),
                        ramp(10.0, 1100.0), soak(10.0, 1090.0, 1110.0))
    return CurveSection("charge_temp_degC", 25.0, max_heat, 20.0, tuple(segs))


def annealer_curve(rate: float = 0.5) -> CurveSection:
    return CurveSection("core_temp_degC", 25.0, 5.0, 1.0,
                        (ramp(rate, 357.0), soak(120.0, 355.0, 365.0, 360.0), Segment("cool", rate_degC_min=0.5,
                                                                                       target_degC=200.0)))


def curve_node(text: str) -> Node:
    """The value node of the top-level ``curve`` key of a YAML text."""
    root = yaml.compose(textwrap.dedent(text))
    assert isinstance(root, MappingNode)
    return next(v for k, v in root.value if k.value == "curve")


# ---------------------------------------------------------------- segments


def test_nominal_curves_of_both_furnaces_are_accepted() -> None:
    """The nominal VIM and annealer curves build and know the temperature before each segment."""
    assert vim_curve().temperatures_before() == (25.0, 950.0, 950.0, 1100.0)
    assert annealer_curve().temperatures_before() == (25.0, 357.0, 360.0)


def test_soak_reference_is_band_middle_unless_target_given() -> None:
    """A soak's reference is its band's middle, or its target_degC when given."""
    assert soak(10, 1090, 1110).reference_degC == 1100.0
    assert soak(10, 355, 365, 360).reference_degC == 360.0
    assert soak(10, 355, 365, 357).reference_degC == 357.0


@pytest.mark.parametrize(("kwargs", "first_word"), [
    ({"kind": "soak", "time_min": 10, "band_degC": (1, 2), "rate_degC_min": 5}, "rate_degC_min"),
    ({"kind": "ramp", "rate_degC_min": 5}, "target_degC"),
    ({"kind": "cool", "target_degC": 5}, "rate_degC_min"),
    ({"kind": "hold_until", "condition": "x > 1"}, "timeout_min"),
    ({"kind": "hold_until", "condition": "x > 1", "timeout_min": 5, "target_degC": 3}, "target_degC"),
    ({"kind": "ramp", "rate_degC_min": 0, "target_degC": 5}, "rate_degC_min"),
    ({"kind": "soak", "time_min": -1, "band_degC": (1, 2)}, "time_min"),
    ({"kind": "soak", "time_min": 1, "band_degC": (2, 1)}, "band_degC"),
    ({"kind": "soak", "time_min": 1, "band_degC": (1, 2), "target_degC": 3}, "target_degC"),
    ({"kind": "hold_until", "condition": "x >", "timeout_min": 5}, "condition"),
    ({"kind": "melt", "condition": "x > 1", "timeout_min": 5}, "power_kW"),
    ({"kind": "melt", "power_kW": 0, "condition": "x > 1", "timeout_min": 5}, "power_kW"),
    ({"kind": "melt", "power_kW": 70, "condition": "x > 1", "timeout_min": 5, "target_degC": 3}, "target_degC"),
    ({"kind": "ramp", "rate_degC_min": 5, "target_degC": 50, "power_kW": 70}, "power_kW"),
])
def test_segment_fields_per_kind_are_enforced(kwargs: dict[str, object], first_word: str) -> None:
    """Each kind takes exactly its fields, with positive times and rates; the message starts with the field."""
    with pytest.raises(ValueError) as info:  # noqa: PT011 (the message is checked below)
        Segment(**kwargs)  # type: ignore[arg-type]
    assert str(info.value).split(" ", 1)[0] == first_word


# ---------------------------------------------------------------- curve checks


@pytest.mark.parametrize(("segments", "index", "words"), [
    ((ramp(25, 950), ramp(10, 900)), 1, "not above"),
    ((ramp(25, 950), Segment("cool", rate_degC_min=5, target_degC=990)), 1, "not below"),
    ((ramp(25, 950), ramp(30, 1100)), 1, "exceeds max_heating_rate_degC_min"),
    ((ramp(25, 950), Segment("cool", rate_degC_min=50, target_degC=500)), 1, "exceeds max_cooling_rate_degC_min"),
    ((ramp(25, 950), soak(10, 1090, 1110)), 1, "does not contain"),
    ((soak(10, 1090, 1110),), 0, "does not contain"),
])
def test_cross_segment_errors_name_the_segment(segments: tuple[Segment, ...], index: int, words: str) -> None:
    """Direction, rate limits and band consistency are checked; the error names the segment index."""
    with pytest.raises(CurveSegmentError) as info:
        vim_curve(*segments)
    assert info.value.index == index
    assert str(info.value).startswith(f"segments [{index}]")
    assert words in str(info.value)


def test_curve_needs_a_segment_and_positive_limits() -> None:
    """An empty curve and non-positive rate limits are refused."""
    with pytest.raises(ValueError, match="at least one segment"):
        CurveSection("charge_temp_degC", 25.0, 25.0, 20.0, ())
    with pytest.raises(ValueError, match="max_heating_rate_degC_min"):
        CurveSection("charge_temp_degC", 25.0, 0.0, 20.0, (ramp(1, 100),))
    with pytest.raises(ValueError, match="ramp_lag_limit_degC"):
        CurveSection("charge_temp_degC", 25.0, 25.0, 20.0, (ramp(1, 100),), ramp_lag_limit_degC=0.0)


def test_signal_names_and_fingerprint() -> None:
    """signal_names lists the controlled signal and hold_until names; the fingerprint follows the content."""
    assert vim_curve().signal_names() == frozenset({"charge_temp_degC", "chamber_pressure_Pa"})
    assert vim_curve().fingerprint() == vim_curve().fingerprint()
    assert vim_curve().fingerprint() != vim_curve(ramp(20, 950)).fingerprint()


@pytest.mark.parametrize("state_file", ["/var/apc/b.json", "../b.json", "a/../../b.json", " "])
def test_batch_state_file_must_stay_in_the_state_directory(state_file: str) -> None:
    """Absolute, empty and escaping state_file paths are refused."""
    with pytest.raises(ValueError, match="state_file"):
        BatchSection(state_file=state_file)


def test_batch_section_limits() -> None:
    """Negative extension, zero preview points or step, negative auto resume are refused."""
    assert BatchSection(state_file="vim1/batch.json", soak_extension_min=15.0).soak_extension_min == 15.0
    for kwargs in ({"soak_extension_min": -1.0}, {"preview_points": 0}, {"preview_step_s": 0.0},
                   {"auto_resume_after_s": -5.0}):
        with pytest.raises(ValueError, match=f"^{next(iter(kwargs))} must be"):
            BatchSection(state_file="b.json", **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- YAML through the loader


YAML_CURVE = """\
curve:
  controlled: charge_temp_degC
  start_degC: 25
  max_heating_rate_degC_min: 25
  max_cooling_rate_degC_min: 20
  ramp_lag_limit_degC: 15
  segments:
    - kind: ramp
      rate_degC_min: 25
      target_degC: 950
    - kind: hold_until
      condition: chamber_pressure_Pa < 2
      timeout_min: 20
    - kind: soak
      time_min: 10
      band_degC: [940, 960]
"""


def test_yaml_curve_converts_to_dataclasses() -> None:
    """A curve section converts through apc.recipe.loader.convert into frozen dataclasses."""
    curve = convert(CurveSection, curve_node(YAML_CURVE), "curve", file="vim.yaml")
    assert curve.segments[0] == ramp(25.0, 950.0)
    assert curve.segments[2].band_degC == (940.0, 960.0)
    assert curve.ramp_lag_limit_degC == 15.0


def test_yaml_bad_segment_field_reports_file_line_and_path() -> None:
    """A field that a soak does not take is reported at its file:line with the field path."""
    text = YAML_CURVE.replace("      time_min: 10\n", "      time_min: 10\n      rate_degC_min: 3\n")
    line = text.splitlines().index("      rate_degC_min: 3") + 1
    with pytest.raises(RecipeError) as info:
        convert(CurveSection, curve_node(text), "curve", file="vim.yaml")
    [problem] = info.value.problems
    assert (problem.file, problem.line, problem.path) == ("vim.yaml", line, "curve.segments[2].rate_degC_min")
    assert "not a field of a soak segment" in problem.message
    assert str(problem).startswith(f"vim.yaml:{line}: curve.segments[2].rate_degC_min:")


def test_yaml_unknown_kind_and_key_are_reported_with_lines() -> None:
    """A misspelt kind and an unknown key both come with their line."""
    text = YAML_CURVE.replace("kind: ramp", "kind: rampe").replace("timeout_min: 20", "timout_min: 20")
    lines = text.splitlines()
    with pytest.raises(RecipeError) as info:
        convert(CurveSection, curve_node(text), "curve", file="vim.yaml")
    by_path = {p.path: p for p in info.value.problems}
    assert by_path["curve.segments[0].kind"].line == lines.index("    - kind: rampe") + 1
    assert by_path["curve.segments[1].timout_min"].line == lines.index("      timout_min: 20") + 1
    assert "did you mean 'timeout_min'" in by_path["curve.segments[1].timout_min"].message


def test_yaml_cross_segment_error_is_filed_under_segments() -> None:
    """A ramp beyond max_heating_rate is reported under curve.segments with the segment index."""
    text = YAML_CURVE.replace("      rate_degC_min: 25", "      rate_degC_min: 40")
    with pytest.raises(RecipeError) as info:
        convert(CurveSection, curve_node(text), "curve", file="vim.yaml")
    [problem] = info.value.problems
    assert problem.path == "curve.segments"
    assert "[0]" in problem.message and "max_heating_rate_degC_min" in problem.message
    assert problem.line == text.splitlines().index("    - kind: ramp") + 1  # where the list starts


# ---------------------------------------------------------------- against the model


def test_nominal_curves_are_possible_per_the_models() -> None:
    """The nominal VIM (200 kW) and annealer (800 kW) curves have no impossible ramp."""
    assert check_against_model(vim_curve(), get_model("vim_furnace"), None, 200.0) == []
    assert check_against_model(annealer_curve(), get_model("annealing_furnace"), None, 800.0) == []


def test_ramp_faster_than_full_power_allows_is_refused_naming_the_segment() -> None:
    """A VIM ramp at 150 K/min to 1100 °C exceeds what 200 kW gives there; the message names segment 1."""
    curve = vim_curve(ramp(25, 500), ramp(150, 1100), max_heat=200.0)
    [message] = check_against_model(curve, get_model("vim_furnace"), None, 200.0)
    assert message.startswith("segments[1] (ramp at 150 K/min to 1100 °C) is impossible")
    assert "K/min at 1100 °C" in message


def test_core_ramp_too_fast_for_the_annealer() -> None:
    """A 3 K/min core ramp is impossible at 800 kW; at 100 kW even 0.5 K/min is."""
    model = get_model("annealing_furnace")
    assert check_against_model(annealer_curve(3.0), model, None, 800.0)[0].startswith("segments[0]")
    assert check_against_model(annealer_curve(0.5), model, None, 100.0)[0].startswith("segments[0]")


def test_unreachable_target_is_reported() -> None:
    """At 30 kW the VIM charge never reaches 950 °C: reported as not reached."""
    [first, *_] = check_against_model(vim_curve(), get_model("vim_furnace"), None, 30.0)
    assert first.startswith("segments[0]") and "reaches only" in first


def test_parameter_overrides_change_the_verdict() -> None:
    """A heavier annealer load (overrides by name) makes a possible core ramp impossible."""
    model = get_model("annealing_furnace")
    assert check_against_model(annealer_curve(1.0), model, {"load_mass_t": 30.0}, 800.0) == []
    assert check_against_model(annealer_curve(1.0), model, {"load_mass_t": 60.0}, 800.0) != []


def test_controlled_signal_must_belong_to_the_model() -> None:
    """A curve on a signal the model does not have is reported, not crashed on."""
    curve = CurveSection("bath_temp_degC", 25.0, 25.0, 20.0, (ramp(5, 100),))
    [message] = check_against_model(curve, get_model("vim_furnace"), None, 200.0)
    assert message.startswith("controlled:")


def test_model_check_is_cheap() -> None:
    """The check takes well under a second per curve (budget 0.2 s; margin for a loaded machine)."""
    model = get_model("vim_furnace")
    check_against_model(vim_curve(), model, None, 200.0)
    t0 = time.perf_counter()
    check_against_model(vim_curve(), model, None, 200.0)
    check_against_model(annealer_curve(), get_model("annealing_furnace"), None, 800.0)
    assert time.perf_counter() - t0 < 0.4


@pytest.mark.parametrize(("index", "model", "power_kW"), [(0, "vim_furnace", 200.0), (1, "annealing_furnace", 800.0)])
def test_documented_examples_load_and_are_possible(index: int, model: str, power_kW: float) -> None:
    """The YAML examples of docs/heating_curves.md convert and pass the model check."""
    doc = (Path(__file__).parents[1] / "docs" / "heating_curves.md").read_text()
    text = doc.split("```yaml\n")[index + 1].split("```")[0]
    root = yaml.compose(text)
    assert isinstance(root, MappingNode)
    nodes = {k.value: v for k, v in root.value}
    curve = convert(CurveSection, nodes["curve"], "curve", file="doc")
    batch = convert(BatchSection, nodes["batch"], "batch", file="doc")
    assert batch.state_file.endswith("batch.json")
    assert check_against_model(curve, get_model(model), None, power_kW) == []


def test_melt_power_above_the_power_limit_is_refused_at_its_line(tmp_path: Path) -> None:
    """A melt segment asking for more power than the power MV's engineering high limit is refused at its line."""
    from apc.recipe.loader import check_files

    text = (Path(__file__).parents[1] / "recipes" / "vim_furnace.yaml").read_text()
    assert "kind: melt, power_kW: 70," in text
    bad = text.replace("kind: melt, power_kW: 70,", "kind: melt, power_kW: 250,")
    path = tmp_path / "vim.yaml"
    path.write_text(bad)
    [problem] = [p for p in check_files([path]) if p.path.startswith("curve.segments")]
    assert problem.line == bad.splitlines().index(next(ln for ln in bad.splitlines() if "power_kW: 250" in ln)) + 1
    assert problem.path.startswith("curve.segments[") and problem.path.endswith("].power_kW")
    assert "exceeds the engineering high limit of power_sp (200 kW)" in problem.message
