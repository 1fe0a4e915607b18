"""Tests of the batch state machine (apc.batch): commands, guaranteed ramp and soak, preview, restart."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from apc.batch import Batch, BatchStateError, CommandResult
from apc.curve_preview import BatchState
from apc.recipe.curve_schema import BatchSection, CurveSection, Segment

T = "charge_temp_degC"


class Audit:
    """Records structlog-style calls."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.events.append(("info", event, kw))

    def warning(self, event: str, **kw: Any) -> None:
        self.events.append(("warning", event, kw))

    def error(self, event: str, **kw: Any) -> None:
        self.events.append(("error", event, kw))

    def named(self, event: str) -> list[dict[str, Any]]:
        return [kw for _, e, kw in self.events if e == event]


def curve(lag_limit: float | None = None, timeout_min: float = 2.0) -> CurveSection:
    """ramp 10 K/min to 100, soak 5 min in [95, 105] at 100, hold until door > 0, cool 20 K/min to 50."""
    return CurveSection(T, 20.0, 20.0, 30.0, (
        Segment("ramp", rate_degC_min=10.0, target_degC=100.0),
        Segment("soak", time_min=5.0, band_degC=(95.0, 105.0)),
        Segment("hold_until", condition="door > 0", timeout_min=timeout_min),
        Segment("cool", rate_degC_min=20.0, target_degC=50.0),
    ), ramp_lag_limit_degC=lag_limit)


def section(**kw: Any) -> BatchSection:
    kw.setdefault("state_file", "b.json")
    kw.setdefault("preview_points", 20)
    kw.setdefault("preview_step_s", 60.0)
    return BatchSection(**kw)


def make(tmp_path: Path | None = None, c: CurveSection | None = None, **kw: Any) -> tuple[Batch, Audit]:
    audit = Audit()
    path = None if tmp_path is None else tmp_path / "b.json"
    return Batch(c or curve(), section(**kw), path, audit), audit


def run_to_soak(batch: Batch, t0: float = 0.0) -> float:
    """Start at 20 °C and follow the ramp exactly until the soak starts; returns the time."""
    assert batch.start(t0, "op", 20.0, batch_id="B1")
    t = t0
    while batch.segment == 0:
        t += 10.0
        batch.update(t, {T: min(100.0, 20.0 + (t - t0) / 6.0)})
    assert batch.curve.segments[batch.segment].kind == "soak"
    return t


# ---------------------------------------------------------------- commands


def test_start_is_audited_and_runs_segment_zero() -> None:
    """start moves IDLE → RUNNING at segment 0 and is audited with who, what, old and new."""
    batch, audit = make()
    assert batch.state is BatchState.IDLE and batch.preview().hold_degC is None
    result = batch.start(0.0, "alice", 20.0, batch_id="B1")
    assert result == CommandResult(True)
    assert (batch.state, batch.segment, batch.batch_id) == (BatchState.RUNNING, 0, "B1")
    [event] = audit.named("batch_command")
    assert (event["who"], event["what"], event["old"], event["new"]) == ("alice", "start", "idle", "running")


def test_refused_commands_say_why_and_change_nothing() -> None:
    """Commands not allowed in the state are refused with a reason, audited, and leave the state alone."""
    batch, audit = make()
    assert not batch.hold(0.0, "op", "x") and not batch.resume(0.0, "op") and not batch.abort(0.0, "op", "x")
    assert "unknown" in batch.start(0.0, "op", math.nan).reason
    assert batch.start(0.0, "op", 20.0)
    refused = batch.start(1.0, "bob", 20.0)
    assert not refused and "abort it first" in refused.reason
    assert batch.state is BatchState.RUNNING
    assert len(audit.named("batch_command_refused")) == 5
    assert audit.named("batch_command_refused")[-1]["who"] == "bob"


def test_ramp_reference_moves_at_rate_and_hands_over_to_the_soak() -> None:
    """The ramp reference rises at 10 K/min from the start temperature; at the target the soak begins."""
    batch, audit = make()
    batch.start(0.0, "op", 20.0)
    p = batch.update(60.0, {T: 28.0})
    assert p.target_degC[0] == pytest.approx(30.0) and p.max_rate_degC_min[0] == 10.0
    t = 60.0
    while batch.segment == 0:
        t += 30.0
        batch.update(t, {T: 100.0})
    assert t == pytest.approx(480.0)  # 80 K at 10 K/min
    assert batch.status()["kind"] == "soak" and batch.status()["reference_degC"] == 100.0
    assert audit.named("batch_event")[-1]["what"] == "segment"


def test_guaranteed_ramp_waits_for_a_lagging_temperature() -> None:
    """With a lag limit of 10 K the reference stops while the temperature lags more, and goes on after."""
    batch, _ = make(c=curve(lag_limit=10.0))
    batch.start(0.0, "op", 20.0)
    batch.update(120.0, {T: 21.0})  # reference 40, lag 19 K
    ref = batch.status()["reference_degC"]
    batch.update(240.0, {T: 22.0})
    assert batch.status()["reference_degC"] == ref
    assert "lags" in batch.status()["note"]
    batch.update(300.0, {T: 35.0})  # lag 5 K: moves again
    assert batch.status()["reference_degC"] == pytest.approx(ref + 10.0)
    batch.update(360.0, {})  # controlled missing: waits too
    assert batch.status()["reference_degC"] == pytest.approx(ref + 10.0)


def test_ramp_without_lag_limit_never_waits() -> None:
    """Without a lag limit the reference follows the clock whatever the temperature."""
    batch, _ = make()
    batch.start(0.0, "op", 20.0)
    batch.update(120.0, {T: 20.0})
    assert batch.status()["reference_degC"] == pytest.approx(40.0)


# ---------------------------------------------------------------- guaranteed soak


def test_soak_clock_runs_only_inside_the_band() -> None:
    """The soak clock stops when the soak signal leaves the band (or is NaN) and resumes when it is back."""
    batch, _ = make()
    t = run_to_soak(batch)
    for temp in (100.0, 101.0, 99.0):  # in band: 3 intervals of 10 s
        t += 10.0
        batch.update(t, {T: temp})
    assert batch.soak_done_s == pytest.approx(30.0)
    for temp in (106.0, 107.0, math.nan):  # out, out, NaN: stopped
        t += 10.0
        batch.update(t, {T: temp})
    assert batch.soak_done_s == pytest.approx(30.0)
    assert "soak clock stopped" in batch.status()["note"]
    t += 10.0
    batch.update(t, {T: 104.0})  # back in band: the interval from the NaN sample does not count
    assert batch.soak_done_s == pytest.approx(30.0)
    t += 10.0
    batch.update(t, {T: 100.0})
    assert batch.soak_done_s == pytest.approx(40.0)


def test_soak_ends_after_time_plus_extension() -> None:
    """A 5 min soak with a 2 min extension ends after 420 s in band, not before."""
    batch, _ = make(soak_extension_min=2.0)
    t = run_to_soak(batch)
    assert batch.status()["soak_required_s"] == 420.0
    for _ in range(41):
        t += 10.0
        batch.update(t, {T: 100.0, "door": 0.0})
    assert batch.segment == 1 and batch.soak_done_s == pytest.approx(410.0)
    t += 10.0
    batch.update(t, {T: 100.0, "door": 0.0})
    assert batch.segment == 2


# ---------------------------------------------------------------- hold, abort, hold_until, cool


def test_hold_keeps_the_held_temperature_in_the_preview() -> None:
    """After hold the preview is flat at the temperature at the moment of the hold, whatever follows."""
    batch, audit = make()
    batch.start(0.0, "op", 20.0)
    batch.update(60.0, {T: 27.0})
    assert batch.hold(61.0, "op", "check the coil")
    for t, temp in ((70.0, 25.0), (600.0, 31.0)):
        p = batch.update(t, {T: temp})
        assert p.state is BatchState.HELD and p.hold_degC == 27.0
        assert set(p.target_degC) == {27.0} and not p.running
    assert batch.reasons == ("held by op: check the coil",)
    assert audit.named("batch_command")[-1]["new"] == "held"
    assert batch.resume(601.0, "op")
    p = batch.update(611.0, {T: 31.0})
    assert p.running and p.target_degC[0] == pytest.approx(31.0 + 10.0 / 6.0)  # restarts from the temperature


def test_abort_stops_and_cannot_be_resumed() -> None:
    """An aborted batch requests no heat and refuses resume with a clear reason; a new start is allowed."""
    batch, _ = make()
    batch.start(0.0, "op", 20.0)
    assert batch.abort(10.0, "op", "crucible leak")
    p = batch.update(20.0, {T: 25.0})
    assert p.state is BatchState.ABORTED and p.hold_degC is None and math.isnan(p.target_degC[0])
    refused = batch.resume(30.0, "op")
    assert not refused and "aborted" in refused.reason
    assert batch.state is BatchState.ABORTED
    assert batch.start(40.0, "op", 25.0, batch_id="B2") and batch.batch_id == "B2"


def test_hold_until_timeout_holds_with_the_reason() -> None:
    """A hold_until whose condition stays false goes HELD after its timeout, with the condition in the reason."""
    batch, audit = make(c=curve(timeout_min=2.0))
    t = run_to_soak(batch)
    while batch.segment == 1:
        t += 10.0
        batch.update(t, {T: 100.0, "door": 0.0})
    start = t
    while batch.state is BatchState.RUNNING:
        t += 10.0
        batch.update(t, {T: 100.0, "door": 0.0})
    assert t - start == pytest.approx(120.0)
    assert "hold_until timeout" in batch.reasons[0] and "door > 0" in batch.reasons[0]
    assert batch.preview().hold_degC == 100.0
    assert audit.named("batch_event")[-1]["what"] == "hold_until_timeout"
    assert batch.resume(t, "op")
    batch.update(t + 10.0, {T: 100.0, "door": 1.0})
    assert batch.segment == 3


def test_cool_ends_the_curve_and_complete_requests_no_heat() -> None:
    """The cool runs down at its rate to the target, then the batch is COMPLETE with no heat requested."""
    batch, audit = make()
    t = run_to_soak(batch)
    values = {T: 100.0, "door": 1.0}
    while batch.segment < 3:
        t += 10.0
        batch.update(t, values)
    p = batch.update(t + 60.0, values)
    assert p.target_degC[0] == pytest.approx(80.0) and p.max_rate_degC_min[0] == 20.0
    t += 60.0
    while batch.state is BatchState.RUNNING:
        t += 10.0
        batch.update(t, {T: 60.0})
    assert batch.state is BatchState.COMPLETE and batch.preview().hold_degC is None
    assert audit.named("batch_event")[-1]["what"] == "complete"


# ---------------------------------------------------------------- preview


def test_preview_looks_ahead_across_ramp_into_soak() -> None:
    """During the ramp the preview rises, flattens at the soak, upper = band top; lower only in the soak."""
    batch, _ = make()
    batch.start(0.0, "op", 20.0)
    p = batch.update(300.0, {T: 70.0})  # reference 70; 3 min more ramp
    assert p.target_degC[:5] == pytest.approx((70.0, 80.0, 90.0, 100.0, 100.0))
    assert set(p.target_degC[3:8]) == {100.0}
    assert set(p.upper_degC[:8]) == {105.0}
    assert p.lower_degC[:3] == (-math.inf,) * 3 and p.lower_degC[4] == 95.0
    assert p.max_rate_degC_min[0] == 10.0 and p.max_rate_degC_min[4] == math.inf
    # soak ends at 3 + 5 min, then the hold_until keeps the reference, with no band
    assert p.lower_degC[8] == -math.inf and p.upper_degC[8] == math.inf and p.target_degC[-1] == 100.0


def test_preview_during_soak_never_looks_past_the_soak() -> None:
    """In a soak under way the whole preview is the soak band: a controller is never shown the
    segment after it (whose start depends on the soak clock), so it cannot leave the band early."""
    batch, _ = make()
    t = run_to_soak(batch)
    for _ in range(12):  # 2 min done, 3 left
        t += 10.0
        batch.update(t, {T: 100.0})
    p = batch.preview()
    assert p.soak_done_s == pytest.approx(120.0) and p.segment_kind == "soak"
    n = len(p.lower_degC)
    assert p.lower_degC == (95.0,) * n and len(set(p.target_degC)) == 1


# ---------------------------------------------------------------- persistence and restart


def test_state_file_is_written_atomically_as_json(tmp_path: Path) -> None:
    """After start the state file holds the batch; no temporary files are left behind."""
    batch, _ = make(tmp_path)
    batch.start(0.0, "op", 20.0, batch_id="B7")
    data = json.loads((tmp_path / "b.json").read_text())
    assert (data["state"], data["segment"], data["batch_id"], data["schema_version"]) == ("running", 0, "B7", 1)
    assert data["segment_start_ref_degC"] == 20.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]


def test_soak_progress_is_persisted_at_most_every_interval(tmp_path: Path) -> None:
    """The soak time in the file advances in steps of the persistence interval (60 s)."""
    batch, _ = make(tmp_path)
    t = run_to_soak(batch)
    seen = []
    for _ in range(15):
        t += 10.0
        batch.update(t, {T: 100.0})
        seen.append(json.loads((tmp_path / "b.json").read_text())["soak_done_s"])
    assert sorted(set(seen)) == [0.0, 60.0, 120.0]


def test_restart_mid_soak_comes_back_held_with_soak_done(tmp_path: Path) -> None:
    """A restore in the middle of a soak is HELD at the soak with the soak time already done."""
    batch, _ = make(tmp_path)
    t = run_to_soak(batch)
    for _ in range(18):
        t += 10.0
        batch.update(t, {T: 100.0})
    audit = Audit()
    again = Batch.restore(curve(), section(), tmp_path / "b.json", audit, t_s=5.0)  # new process, new clock
    assert again.state is BatchState.HELD and again.segment == 1
    assert again.soak_done_s == pytest.approx(180.0)
    assert again.reasons == ("restored after restart",) and again.batch_id == "B1"
    p = again.update(6.0, {T: 99.0})
    assert p.hold_degC == 99.0 and p.soak_done_s == pytest.approx(180.0)
    assert again.resume(7.0, "op")
    t = 7.0
    while again.segment == 1:
        t += 10.0
        again.update(t, {T: 100.0, "door": 0.0})
    assert t - 7.0 == pytest.approx(130.0)  # 120 s left, the first interval after resume is not counted


def test_restore_without_file_is_idle_and_corrupt_file_is_an_error(tmp_path: Path) -> None:
    """No file: IDLE. A corrupt or foreign file raises an error naming the file, never a fresh start."""
    path = tmp_path / "b.json"
    assert Batch.restore(curve(), section(), path, Audit(), 0.0).state is BatchState.IDLE
    path.write_text("{\"schema_version\": 1, \"state\": \"runn")
    with pytest.raises(BatchStateError, match=str(path)):
        Batch.restore(curve(), section(), path, Audit(), 0.0)
    batch, _ = make(tmp_path)
    batch.start(0.0, "op", 20.0)
    with pytest.raises(BatchStateError, match="different curve"):
        Batch.restore(curve(lag_limit=5.0), section(), path, Audit(), 0.0)
    data = json.loads(path.read_text())
    data["segment"] = 9
    path.write_text(json.dumps(data))
    with pytest.raises(BatchStateError, match="segment 9"):
        Batch.restore(curve(), section(), path, Audit(), 0.0)


def test_auto_resume_after_restore_is_audited(tmp_path: Path) -> None:
    """With auto_resume_after_s = 300 a restored batch resumes by itself 300 s after the restore, audited."""
    batch, _ = make(tmp_path, auto_resume_after_s=300.0)
    batch.start(0.0, "op", 20.0)
    batch.update(60.0, {T: 30.0})
    audit = Audit()
    again = Batch.restore(curve(), section(auto_resume_after_s=300.0), tmp_path / "b.json", audit, t_s=1000.0)
    assert again.update(1299.0, {T: 26.0}).state is BatchState.HELD
    p = again.update(1300.0, {T: 26.0})
    assert p.state is BatchState.RUNNING and p.target_degC[0] == 26.0
    [event] = audit.named("batch_command")
    assert (event["who"], event["what"], event["old"], event["new"]) == ("auto_resume", "resume", "held", "running")


def test_auto_resume_never_overrides_an_operator_hold(tmp_path: Path) -> None:
    """A batch held by the operator before the restart stays held after auto_resume_after_s."""
    batch, _ = make(tmp_path, auto_resume_after_s=10.0)
    batch.start(0.0, "op", 20.0)
    batch.hold(5.0, "op", "inspection")
    again = Batch.restore(curve(), section(auto_resume_after_s=10.0), tmp_path / "b.json", Audit(), t_s=0.0)
    assert again.update(100.0, {T: 20.0}).state is BatchState.HELD
    assert again.reasons == ("held by op: inspection", "restored after restart")


def test_auto_resume_waits_for_a_known_temperature_in_a_ramp(tmp_path: Path) -> None:
    """A restored ramp resumes only once the controlled temperature is known again."""
    batch, _ = make(tmp_path, auto_resume_after_s=0.0)
    batch.start(0.0, "op", 20.0)
    again = Batch.restore(curve(), section(auto_resume_after_s=0.0), tmp_path / "b.json", Audit(), t_s=0.0)
    assert again.update(1.0, {T: math.nan}).state is BatchState.HELD
    assert again.preview().hold_degC is None  # no heat until the temperature is known
    assert "auto resume waits" in again.status()["note"]
    assert again.update(2.0, {T: 21.0}).state is BatchState.RUNNING


def test_status_for_the_hmi() -> None:
    """status() gives state, segment, kind, soak done/required, reasons and batch id as plain data."""
    batch, _ = make()
    t = run_to_soak(batch)
    batch.update(t + 10.0, {T: 100.0})
    s = batch.status()
    assert (s["state"], s["segment"], s["kind"], s["batch_id"]) == ("running", 1, "soak", "B1")
    assert (s["soak_done_s"], s["soak_required_s"], s["reasons"]) == (10.0, 300.0, [])
    json.dumps(s)


def test_soak_margin_counts_only_an_estimate_well_inside_the_band() -> None:
    """With soak_margin_sigmas 2 and a reported std of 1 K, 96 degC (1 K inside) does not run the soak
    clock, 98 degC (3 K inside) does; without a reported std the plain band applies."""
    batch, _ = make(soak_margin_sigmas=2.0)
    t = run_to_soak(batch)
    for _ in range(6):
        t += 10.0
        batch.update(t, {T: 96.0, f"{T}_std": 1.0})
    assert batch.status()["soak_done_s"] == 0.0
    for _ in range(6):
        t += 10.0
        batch.update(t, {T: 98.0, f"{T}_std": 1.0})
    assert batch.status()["soak_done_s"] == pytest.approx(50.0)
    for _ in range(3):
        t += 10.0
        batch.update(t, {T: 96.0})
    assert batch.status()["soak_done_s"] == pytest.approx(80.0)


def test_confirm_signal_lengthens_a_soak_its_clock_would_end_too_early() -> None:
    """With soak_confirm_signal, a soak whose clock signal has done 5 min does not end until the
    (lagging) confirm signal has been in the band, by its margin, for 5 min; the note says why."""
    batch, _ = make(soak_confirm_signal="core_degC", soak_margin_sigmas=2.0)
    t = run_to_soak(batch)
    for _ in range(31):  # 5 min on the clock signal while the core is still 2 K inside with σ 1.5 K
        t += 10.0
        batch.update(t, {T: 100.0, "core_degC": 97.0, "core_degC_std": 1.5, "door": 0.0})
    assert batch.segment == 1 and batch.soak_done_s >= 300.0
    assert "soak waits: core_degC has soaked 0 of 5 min" in batch.status()["note"]
    n = 0
    while batch.segment == 1:
        t += 10.0
        n += 1
        batch.update(t, {T: 100.0, "core_degC": 99.0, "core_degC_std": 1.5, "door": 0.0})
    assert n == 31  # the first interval in band starts the confirm clock


def test_confirm_signal_progress_survives_a_restart(tmp_path: Path) -> None:
    """The confirm signal's own soak time is kept in the state file and restored: after a restart the
    soak needs what is left of the confirm clock (240 s), not all of it and not the clock signal's."""
    sec = section(soak_confirm_signal="core_degC")
    batch = Batch(curve(), sec, tmp_path / "b.json", Audit())
    t = run_to_soak(batch)
    for i in range(13):  # clock signal in band 120 s; the core only in the last 60 s
        t += 10.0
        batch.update(t, {T: 100.0, "core_degC": 100.0 if i >= 6 else 90.0})
    batch.hold(t, "op", "test")
    assert json.loads((tmp_path / "b.json").read_text())["confirm_done_s"] == pytest.approx(60.0)
    again = Batch.restore(curve(), sec, tmp_path / "b.json", Audit(), t_s=5.0)
    assert again.resume(6.0, "op")
    t, n = 6.0, 0
    while again.segment == 1:
        t += 10.0
        n += 1
        again.update(t, {T: 100.0, "core_degC": 100.0, "door": 0.0})
    assert n == 25  # 240 s left on the confirm clock; the first interval after resume is not counted


# ---------------------------------------------------------------- power stage (melt)


def melt_curve() -> CurveSection:
    """ramp 10 K/min to 90, melt at 70 kW until tc > 110 (timeout 3 min), ramp 10 K/min to 140, soak."""
    return CurveSection(T, 20.0, 20.0, 30.0, (
        Segment("ramp", rate_degC_min=10.0, target_degC=90.0),
        Segment("melt", power_kW=70.0, condition="tc > 110", timeout_min=3.0),
        Segment("ramp", rate_degC_min=10.0, target_degC=140.0),
        Segment("soak", time_min=5.0, band_degC=(135.0, 145.0)),
    ), ramp_lag_limit_degC=20.0)


def test_preview_of_a_melt_asks_for_power_not_temperature() -> None:
    """Ahead of and during a melt the preview's target is NaN and its stage power the melt's; before it, none."""
    batch, _ = make(c=melt_curve())
    batch.start(0.0, "op", 20.0)
    p = batch.update(300.0, {T: 70.0, "tc": 68.0})  # reference 70, reaches 90 (and the melt) in 2 min
    assert p.target_degC[:2] == pytest.approx((70.0, 80.0))
    assert math.isnan(p.stage_power_at(0)) and p.stage_power_at(2) == 70.0 and math.isnan(p.target_degC[2])
    assert p.upper_degC[3] == 145.0  # the soak's band top still caps the melt
    t = 300.0
    while batch.segment == 0:
        t += 10.0
        batch.update(t, {T: 90.0, "tc": 88.0})
    p = batch.preview()
    assert p.segment_kind == "melt" and all(math.isnan(v) for v in p.target_degC)
    assert set(p.stage_power_kW) == {70.0}
    assert batch.status()["reference_degC"] is None


def test_melt_ends_on_its_condition_and_the_next_ramp_starts_from_the_temperature() -> None:
    """The melt ends when its condition holds; the ramp after it starts from the controlled temperature then."""
    batch, audit = make(c=melt_curve())
    batch.start(0.0, "op", 20.0)
    t = 0.0
    while batch.segment == 0:
        t += 10.0
        batch.update(t, {T: min(90.0, 20.0 + t / 6.0), "tc": 0.0})
    batch.update(t + 60.0, {T: 95.0, "tc": 100.0})
    assert batch.segment == 1
    p = batch.update(t + 70.0, {T: 114.0, "tc": 111.0})
    assert batch.segment == 2 and p.target_degC[0] == pytest.approx(114.0) and not p.stage_power_kW
    assert audit.named("batch_event")[-1]["kind"] == "ramp"
    p = batch.update(t + 130.0, {T: 124.0, "tc": 121.0})
    assert p.target_degC[0] == pytest.approx(124.0)


def test_melt_timeout_holds_with_the_reason_and_resume_restarts_it(tmp_path: Path) -> None:
    """A melt whose condition stays false goes HELD after its timeout; a restart keeps it HELD in the melt."""
    batch, audit = make(tmp_path, c=melt_curve())
    batch.start(0.0, "op", 90.0)
    batch.update(10.0, {T: 90.0, "tc": 90.0})
    assert batch.segment == 1
    t = 10.0
    while batch.state is BatchState.RUNNING:
        t += 10.0
        batch.update(t, {T: 100.0, "tc": 100.0})
    assert t - 10.0 == pytest.approx(180.0)
    assert "melt timeout" in batch.reasons[0] and audit.named("batch_event")[-1]["what"] == "melt_timeout"
    restored = Batch.restore(melt_curve(), section(), tmp_path / "b.json", Audit(), 1000.0)
    assert restored.state is BatchState.HELD and restored.segment == 1
    assert restored.resume(1000.0, "op")
    restored.update(1100.0, {T: 100.0, "tc": 100.0})
    assert restored.state is BatchState.RUNNING  # 100 s of a fresh 3 min timeout
