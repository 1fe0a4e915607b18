"""Unit tests of the output guard (apc.guard)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from apc.guard import GuardDecision, GuardRequest, OutputGuard, ReadbackMonitor, decide
from apc.recipe.schema import MvLimits, MvSpec
from apc.types import MvKind, Write

LIM = MvLimits(engineering=(0.0, 100.0), operator=(10.0, 90.0), rate_per_s=1.0)
INC_LIM = MvLimits(engineering=(0.0, 10.0), operator=(1.0, 9.0), rate_per_s=0.01, min_interval_s=1800.0, max_step=0.2)


def sp(proposed: float, readback: float = 50.0, acknowledged: float | None = None, **kw: object) -> GuardRequest:
    base: dict[str, object] = {
        "mv": "feed", "kind": MvKind.SETPOINT, "proposed": proposed, "readback": readback, "acknowledged": acknowledged,
        "limits": LIM, "dt_s": 10.0, "period_s": 10.0, "since_last_move_s": None,
        "permissive_ok": True, "permissive_reason": "", "inputs_ok": True, "inputs_reason": "",
    }
    base.update(kw)
    return GuardRequest(**base)  # type: ignore[arg-type]


def inc(proposed: float, position: float = 5.0, **kw: object) -> GuardRequest:
    base: dict[str, object] = {"kind": MvKind.INCREMENT, "mv": "acd", "limits": INC_LIM, "since_last_move_s": None}
    base.update(kw)
    return sp(proposed, readback=position, **base)


def spec(tag: str, kind: MvKind = MvKind.SETPOINT, tol: float = 0.0) -> MvSpec:
    return MvSpec(tag=tag, readback=tag + ".RB", unit="u", kind=kind, fallback="hold", model_input="x",
                  readback_tolerance=tol, active_flag=tag + ".ACT")


# --- setpoints -----------------------------------------------------------------


def test_setpoint_inside_limits_and_rate_passes_unchanged() -> None:
    """A proposal inside limits and within rate·dt is written exactly, without clamps."""
    d = decide(sp(55.0))
    assert d == GuardDecision("feed", True, 55.0, (), "", 50.0)


def test_rate_up_and_rate_down() -> None:
    """Moves larger than rate·dt are cut to rate·dt from the base, named rate_up / rate_down."""
    up = decide(sp(80.0))
    assert up.write and up.value == 60.0 and up.clamps == ("rate_up",)
    down = decide(sp(20.0))
    assert down.write and down.value == 40.0 and down.clamps == ("rate_down",)


def test_operator_high_and_low() -> None:
    """Proposals beyond operator limits are clamped to them (named operator_high / operator_low)."""
    hi = decide(sp(95.0, readback=88.0))
    assert hi.value == 90.0 and hi.clamps == ("operator_high",)
    lo = decide(sp(5.0, readback=12.0))
    assert lo.value == 10.0 and lo.clamps == ("operator_low",)


def test_engineering_high_and_low_reported() -> None:
    """Proposals beyond engineering limits name both operator and engineering clamps."""
    lim = MvLimits(engineering=(0.0, 100.0), operator=(0.0, 100.0), rate_per_s=100.0)
    hi = decide(sp(1e6, readback=50.0, limits=lim))
    assert hi.value == 100.0 and "engineering_high" in hi.clamps
    lo = decide(sp(-1e6, readback=50.0, limits=lim))
    assert lo.value == 0.0 and "engineering_low" in lo.clamps


def test_base_is_the_acknowledged_value_confirmed_by_the_readback() -> None:
    """Rate limiting starts from the value the plant acknowledged and reads back."""
    d = decide(sp(80.0, readback=70.0, acknowledged=70.0))
    assert d.base == 70.0 and d.value == 80.0 and d.clamps == ()


def test_readback_behind_the_acknowledged_value_limits_the_step_from_both() -> None:
    """When the readback still shows an older value, the step stays within rate of both (never away from the target)."""
    d = decide(sp(80.0, readback=62.0, acknowledged=70.0))
    assert d.write and d.value == 72.0 and "rate_readback" in d.clamps
    back = decide(sp(20.0, readback=75.0, acknowledged=70.0))
    assert back.write and back.value == 65.0


def test_readback_far_from_the_acknowledged_value_holds() -> None:
    """A readback more than two rate steps from what the plant acknowledged holds the MV (no common step)."""
    d = decide(sp(80.0, readback=40.0, acknowledged=70.0))
    assert not d.write and "differ by more than the rate allows" in d.reason and d.fault


def test_gap_between_cycles_allows_one_period_of_rate_only() -> None:
    """After a long gap the rate allowance covers one nominal period, not the whole gap."""
    d = decide(sp(80.0, dt_s=300.0))
    assert d.write and d.value == 60.0 and d.clamps == ("rate_up",)


def test_operator_limit_moved_past_value_is_approached_at_rate() -> None:
    """When the operator high limit drops below the value in force, the value ramps down at the rate limit."""
    lim = dataclasses.replace(LIM, operator=(10.0, 30.0))
    d = decide(sp(80.0, readback=50.0, limits=lim))
    assert d.write and d.value == 40.0
    assert set(d.clamps) == {"operator_high", "rate_down"}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_proposed_holds(bad: float) -> None:
    """A non-finite proposal is never written."""
    d = decide(sp(bad))
    assert not d.write and d.reason == "proposed_not_finite" and d.fault


def test_non_finite_readback_holds() -> None:
    """A non-finite readback (no last_written) holds with a readback reason."""
    d = decide(sp(50.0, readback=math.nan))
    assert not d.write and d.reason == "readback_not_finite"


@pytest.mark.parametrize(("dt", "reason"), [(math.nan, "dt_s_not_finite"), (-1.0, "bad_dt"),
                                            (math.inf, "dt_s_not_finite")])
def test_bad_dt_holds(dt: float, reason: str) -> None:
    """A negative or non-finite dt holds."""
    d = decide(sp(55.0, dt_s=dt))
    assert not d.write and d.reason == reason


def test_zero_dt_writes_base() -> None:
    """dt = 0 allows no move: the base value is written."""
    d = decide(sp(80.0, dt_s=0.0))
    assert d.write and d.value == 50.0


def test_inputs_not_ok_holds_with_reason() -> None:
    """inputs_ok False holds and carries the inputs reason."""
    d = decide(sp(55.0, inputs_ok=False, inputs_reason="cell_voltage: bad_quality"))
    assert not d.write and d.reason == "inputs_not_ok: cell_voltage: bad_quality" and d.fault


def test_permissive_not_ok_holds_with_reason() -> None:
    """permissive_ok False holds and carries the permissive reason."""
    d = decide(sp(55.0, permissive_ok=False, permissive_reason="remote == 0"))
    assert not d.write and d.reason == "permissive: remote == 0"


def test_rounding_never_leaves_limits() -> None:
    """Float rounding of base + step never lands above the limit (0.1 + 0.2 case)."""
    lim = MvLimits(engineering=(0.0, 0.3), operator=(0.0, 0.3), rate_per_s=1.0)
    d = decide(sp(1.0, readback=0.1, limits=lim))
    assert d.value <= 0.3


# --- increments ----------------------------------------------------------------


def test_increment_passes() -> None:
    """A small increment inside limits with no recent move is written as is."""
    d = decide(inc(0.1))
    assert d.write and d.value == 0.1 and d.base == 5.0 and d.clamps == ()


def test_increment_step_size() -> None:
    """Increments larger than max_step are cut to ±max_step."""
    assert decide(inc(1.0)).value == 0.2 and decide(inc(1.0)).clamps == ("step_size",)
    assert decide(inc(-1.0)).value == -0.2


def test_increment_step_falls_back_to_rate_times_dt() -> None:
    """Without max_step the largest step is rate_per_s·dt."""
    lim = dataclasses.replace(INC_LIM, max_step=None)
    d = decide(inc(1.0, limits=lim, dt_s=10.0))
    assert d.value == pytest.approx(0.1) and d.clamps == ("step_size",)


def test_increment_position_high_and_low() -> None:
    """Increments are cut so the position stays within operator ∩ engineering limits."""
    hi = decide(inc(0.2, position=8.9))
    assert hi.value == pytest.approx(0.1) and hi.clamps == ("position_high",)
    assert 8.9 + hi.value <= 9.0
    lo = decide(inc(-0.2, position=1.05))
    assert lo.value == pytest.approx(-0.05) and lo.clamps == ("position_low",)


def test_increment_at_limit_is_no_move() -> None:
    """An increment pushing further past a limit is cut to zero and not written (no_move)."""
    d = decide(inc(0.2, position=9.5))
    assert not d.write and d.reason == "no_move" and not d.fault
    # Moving back towards the band is allowed.
    back = decide(inc(-0.2, position=9.5))
    assert back.write and back.value == -0.2


def test_increment_min_interval() -> None:
    """A move sooner than min_interval_s after the last move holds (min_interval); later it passes."""
    d = decide(inc(0.1, since_last_move_s=1000.0))
    assert not d.write and d.reason == "min_interval" and not d.fault
    assert decide(inc(0.1, since_last_move_s=1800.0)).write


def test_increment_tiny_is_no_move() -> None:
    """|δ| below the no-move threshold is not written."""
    d = decide(inc(1e-12))
    assert not d.write and d.reason == "no_move"


def test_increment_holds_on_inputs_and_permissive() -> None:
    """Increments hold when inputs or permissives fail."""
    assert not decide(inc(0.1, inputs_ok=False, inputs_reason="x")).write
    assert not decide(inc(0.1, permissive_ok=False, permissive_reason="y")).write


def test_pulse_follows_increment_rule() -> None:
    """PULSE MVs get the increment rule (step size)."""
    d = decide(inc(1.0, kind=MvKind.PULSE))
    assert d.value == 0.2 and "step_size" in d.clamps


# --- OutputGuard ---------------------------------------------------------------


def test_output_guard_allowlist_and_filter() -> None:
    """filter_writes drops and reports tags off the write list and non-finite values."""
    g = OutputGuard.from_mvs({"feed": spec("FEED.SP")}, extra_tags=["HB.APC"])
    assert g.allowed("FEED.SP") and g.allowed("FEED.SP.ACT") and g.allowed("HB.APC")
    assert not g.allowed("FEED.SP.RB")
    kept, dropped = g.filter_writes(
        [Write("FEED.SP", 1.0), Write("VALVE.OP", 2.0), Write("HB.APC", 3.0), Write("FEED.SP", math.nan)]
    )
    assert kept == [Write("FEED.SP", 1.0), Write("HB.APC", 3.0)]
    assert dropped == ["VALVE.OP: not_on_write_list", "FEED.SP: not_finite"]


def test_output_guard_check_holds_unknown_off_list_and_kind_mismatch() -> None:
    """check() holds for an unknown MV, an MV whose tag is off the write list, and a kind mismatch."""
    g = OutputGuard({"FEED.SP"}, {"feed": spec("FEED.SP"), "other": spec("OTHER.SP")})
    assert g.check(sp(55.0)).write
    assert g.check(sp(55.0, mv="nope")).reason == "unknown_mv"
    r = g.check(sp(55.0, mv="other"))
    assert not r.write and r.reason.startswith("not_on_write_list")
    r = g.check(sp(55.0, kind=MvKind.INCREMENT))
    assert not r.write and r.reason.startswith("kind_mismatch")


# --- ReadbackMonitor -----------------------------------------------------------


def test_readback_setpoint_match_and_mismatch_counting() -> None:
    """Setpoint readback mismatches are counted consecutively and reset by a match."""
    m = ReadbackMonitor(MvKind.SETPOINT, tolerance=0.5)
    assert m.update(None, 3.0) == (True, "")  # nothing written yet
    assert m.update(50.0, 50.4)[0] and m.mismatches == 0
    ok, reason = m.update(None, 48.0)  # the DCS moved away from what we wrote
    assert not ok and m.mismatches == 1 and "1 consecutive" in reason
    assert not m.update(51.0, 49.0)[0] and m.mismatches == 2
    assert not m.update(None, math.nan)[0] and m.mismatches == 3
    assert m.update(None, 51.2)[0] and m.mismatches == 0


def test_readback_reset_clears_expectation() -> None:
    """reset() forgets the expectation and the count."""
    m = ReadbackMonitor.from_spec(spec("FEED.SP", tol=0.1))
    m.update(10.0, 0.0)
    assert m.mismatches == 1
    m.reset()
    assert m.mismatches == 0 and m.update(None, 0.0) == (True, "")


def test_readback_increment_position_change() -> None:
    """After an increment the position must change by δ within tolerance; no-move cycles are not judged."""
    m = ReadbackMonitor(MvKind.INCREMENT, tolerance=0.02)
    assert m.update(None, 5.0)[0]
    assert m.update(0.2, 5.19)[0] and m.mismatches == 0
    assert m.update(None, 5.5)[0]  # manual move by the DCS is not our fault
    assert not m.update(-0.2, 5.5)[0] and m.mismatches == 1  # move did not happen
    assert m.update(None, 5.5)[0] and m.mismatches == 1
    assert not m.update(0.2, 5.9)[0] and m.mismatches == 2  # moved twice as far
    assert m.update(0.2, 6.1)[0] and m.mismatches == 0


def test_readback_increment_unknown_start_is_mismatch() -> None:
    """A move judged without a known previous position counts as a mismatch."""
    m = ReadbackMonitor(MvKind.INCREMENT, tolerance=0.02)
    ok, reason = m.update(0.2, 5.2)
    assert not ok and "unknown position" in reason and m.mismatches == 1


def test_readback_negative_tolerance_rejected() -> None:
    """A negative tolerance is a configuration error."""
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        ReadbackMonitor(MvKind.SETPOINT, tolerance=-1.0)


def test_first_move_after_tracking_is_judged_against_the_last_seen_position() -> None:
    """reset() forgets expectations but keeps the observed position, so the first move after tracking is judged."""
    mon = ReadbackMonitor(MvKind.INCREMENT, tolerance=0.01)
    assert mon.update(None, 4.0) == (True, "")
    mon.reset()
    ok, why = mon.update(0.2, 4.2)
    assert ok, why
    ok, why = mon.update(0.2, 4.2)  # position did not move by the second move
    assert not ok and mon.mismatches == 1
