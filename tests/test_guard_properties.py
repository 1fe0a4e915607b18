"""Hypothesis property tests of the output guard over simulated cycle sequences."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from apc.guard import GuardRequest, decide, effective_bounds
from apc.recipe.schema import MvLimits
from apc.types import MvKind

TOL = 1e-9
SETTINGS = settings(max_examples=300, deadline=None, derandomize=True)

wild = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e300, max_value=1e300),
    st.floats(min_value=-1e4, max_value=1e4),
)
frac = st.floats(min_value=0.0, max_value=1.0)


@dataclass(frozen=True)
class Cycle:
    proposed: float
    readback_frac: float  # position of the readback in [elo - w, ehi + w]
    op_lo: float
    op_hi: float
    dt: float
    inputs_ok: bool
    permissive_ok: bool
    track: bool  # forget last_written (as after STANDBY)
    use_readback: bool  # DCS readback replaces last_written (drift / operator)


cycles = st.lists(
    st.builds(
        Cycle,
        proposed=wild,
        readback_frac=frac,
        op_lo=frac,
        op_hi=frac,
        dt=st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=3600.0)),
        inputs_ok=st.booleans(),
        permissive_ok=st.booleans(),
        track=st.booleans(),
        use_readback=st.booleans(),
    ),
    min_size=1,
    max_size=40,
)
eng = st.tuples(
    st.floats(min_value=-1e4, max_value=1e4),
    st.floats(min_value=1e-3, max_value=1e4),
    st.floats(min_value=1e-4, max_value=1e3),
)


def limits_for(elo: float, ehi: float, c: Cycle, rate: float, **kw: float | None) -> MvLimits:
    """Operator limits moved by the HMI, always inside the engineering limits."""
    a, b = sorted((c.op_lo, c.op_hi))
    olo = min(max(elo + a * (ehi - elo), elo), ehi)
    ohi = min(max(elo + b * (ehi - elo), olo), ehi)
    return MvLimits(engineering=(elo, ehi), operator=(olo, ohi), rate_per_s=rate, **kw)  # type: ignore[arg-type]


def dist(x: float, lo: float, hi: float) -> float:
    """Distance of x from the interval [lo, hi]."""
    return max(lo - x, 0.0, x - hi)


def request(kind: MvKind, c: Cycle, readback: float, acked: float | None, lim: MvLimits, period: float,
            since: float | None) -> GuardRequest:
    return GuardRequest(
        mv="mv", kind=kind, proposed=c.proposed, readback=readback, acknowledged=acked, limits=lim,
        dt_s=c.dt, period_s=period, since_last_move_s=since, permissive_ok=c.permissive_ok, permissive_reason="p",
        inputs_ok=c.inputs_ok, inputs_reason="i",
    )


@SETTINGS
@given(eng=eng, seq=cycles, period=st.floats(min_value=0.1, max_value=60.0))
def test_setpoint_sequence_properties(eng: tuple[float, float, float], seq: list[Cycle], period: float) -> None:
    """Fed-back setpoint writes respect rate, engineering and operator limits, never move away from the band, and never happen with failed inputs/permissives."""
    elo, width, rate = eng
    ehi = elo + width
    acked: float | None = None
    for c in seq:
        readback = (elo - width) + c.readback_frac * 3 * width
        if c.track:
            acked = None
        elif c.use_readback and acked is not None:
            readback = acked  # the plant took what it acknowledged
        lim = limits_for(elo, ehi, c, rate)
        d = decide(request(MvKind.SETPOINT, c, readback, acked, lim, period, None))
        base = acked if acked is not None else readback
        assert d.base == base
        lo, hi = effective_bounds(lim)
        if not (c.inputs_ok and c.permissive_ok):
            assert not d.write  # (e)
        if not math.isfinite(c.proposed):
            assert not d.write
        if d.write:
            v = d.value
            step = rate * min(c.dt, period)
            assert math.isfinite(v)
            assert abs(v - base) <= step + TOL  # (a) from the acknowledged value
            assert abs(v - readback) <= step + TOL  # (a') and from the value in force
            if elo <= base <= ehi and elo <= readback <= ehi:
                assert elo <= v <= ehi  # (b)
            if lo <= base <= hi:
                assert lo <= v <= hi  # (c)
            else:
                assert dist(v, lo, hi) <= dist(base, lo, hi) + TOL  # (d)
            acked = v


@dataclass(frozen=True)
class Exchange:
    """One cycle between the guard and a plant that may refuse, fail, lag or pause."""

    proposed: float
    gap_periods: float  # time since the last cycle, in nominal periods (a stall, a restart of the loop)
    outcome: str  # "ack": written and acknowledged; "refused": the DCS refused it; "failed": link down
    readback: str  # "current": shows the last acknowledged value; "lagging": still the one before


exchanges = st.lists(
    st.builds(
        Exchange,
        proposed=st.floats(min_value=-1e3, max_value=1e3),
        gap_periods=st.one_of(st.just(1.0), st.floats(min_value=0.0, max_value=1.0),
                              st.floats(min_value=1.0, max_value=500.0)),
        outcome=st.sampled_from(["ack", "ack", "refused", "failed"]),
        readback=st.sampled_from(["current", "current", "lagging"]),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(seq=exchanges, start=st.floats(min_value=-100.0, max_value=100.0),
       rate=st.floats(min_value=1e-3, max_value=10.0), period=st.floats(min_value=0.5, max_value=30.0))
def test_no_write_departs_from_the_last_acknowledged_value_by_more_than_rate_times_period(
        seq: list[Exchange], start: float, rate: float, period: float) -> None:
    """Over any sequence of acknowledged, refused and failed writes, gaps and lagging readbacks, every written value is within rate × period of the last value the plant acknowledged."""
    lim = MvLimits(engineering=(-1e4, 1e4), operator=(-1e4, 1e4), rate_per_s=rate)
    acked: float | None = None  # what the unit hands the guard (None until the plant acknowledged a write)
    plant_acked, before = start, start  # the plant's last acknowledged value and the one before it
    for ex in seq:
        readback = plant_acked if ex.readback == "current" else before
        c = Cycle(ex.proposed, 0.0, 0.0, 1.0, ex.gap_periods * period, True, True, False, False)
        d = decide(request(MvKind.SETPOINT, c, readback, acked, lim, period, None))
        if not d.write:
            continue
        assert abs(d.value - plant_acked) <= rate * period * (1 + 1e-12) + TOL
        if ex.outcome == "ack":
            before, plant_acked, acked = plant_acked, d.value, d.value


@SETTINGS
@given(
    eng=eng,
    max_step=st.one_of(st.none(), st.floats(min_value=1e-4, max_value=1e3)),
    min_interval=st.floats(min_value=0.0, max_value=3600.0),
    seq=cycles,
    kind=st.sampled_from([MvKind.INCREMENT, MvKind.PULSE]),
)
def test_increment_sequence_properties(
    eng: tuple[float, float, float], max_step: float | None, min_interval: float, seq: list[Cycle], kind: MvKind
) -> None:
    """Increments never exceed the max step, never take the position out of (or farther from) the limits, respect min_interval, and never happen with failed inputs/permissives."""
    elo, width, rate = eng
    ehi = elo + width
    position = (elo - width) + seq[0].readback_frac * 3 * width
    last_move: float | None = None
    t = 0.0
    for c in seq:
        t += c.dt
        if c.use_readback:  # an operator or DCS moved it
            position = (elo - width) + c.readback_frac * 3 * width
        lim = limits_for(elo, ehi, c, rate, max_step=max_step, min_interval_s=min_interval)
        since = None if last_move is None else t - last_move
        d = decide(request(kind, c, position, None, lim, 3600.0, since))
        lo, hi = effective_bounds(lim)
        if not (c.inputs_ok and c.permissive_ok):
            assert not d.write  # (e)
        if d.write:
            step = max_step if max_step is not None else rate * c.dt
            assert abs(d.value) <= step + TOL  # (f) step size
            assert abs(d.value) > 0 and math.isfinite(d.value)
            new = position + d.value
            if lo <= position <= hi:
                assert lo <= new <= hi  # (f) position limits
            else:
                assert dist(new, lo, hi) <= dist(position, lo, hi) + TOL
            if last_move is not None:
                assert t - last_move >= min_interval
            if math.isfinite(c.proposed):
                assert d.value * c.proposed > 0  # never reverses the requested direction
            position = new
            last_move = t


NUMERIC_FIELDS = ("proposed", "readback", "acknowledged", "dt_s", "period_s", "since_last_move_s")
LIMIT_FIELDS = ("engineering_low", "engineering_high", "operator_low", "operator_high", "rate_per_s",
                "min_interval_s", "max_step")


def unchecked_limits(lim: MvLimits, field: str, value: float) -> MvLimits:
    """``lim`` with one field set to ``value``, bypassing the schema's checks (the guard must not rely on them)."""
    out = object.__new__(MvLimits)
    values = {"engineering": list(lim.engineering), "operator": list(lim.operator), "rate_per_s": lim.rate_per_s,
              "min_interval_s": lim.min_interval_s, "max_step": lim.max_step}
    if field.startswith(("engineering_", "operator_")):
        group, side = field.split("_")
        values[group][0 if side == "low" else 1] = value
    else:
        values[field] = value
    for k, v in values.items():
        object.__setattr__(out, k, tuple(v) if isinstance(v, list) else v)
    return out


@settings(max_examples=600, deadline=None, derandomize=True)
@given(field=st.sampled_from(NUMERIC_FIELDS + LIMIT_FIELDS), bad=st.sampled_from([math.nan, math.inf, -math.inf]),
       kind=st.sampled_from(list(MvKind)), proposed=st.floats(min_value=-100.0, max_value=100.0),
       readback=st.floats(min_value=-50.0, max_value=150.0), acked=st.none() | st.floats(min_value=0.0, max_value=100.0))
def test_any_non_finite_field_means_no_write(field: str, bad: float, kind: MvKind, proposed: float, readback: float,
                                             acked: float | None) -> None:
    """NaN or ±inf in any number the guard reads (limits, rate, readback, acknowledged, proposal, times) writes nothing."""
    lim = MvLimits(engineering=(0.0, 100.0), operator=(10.0, 90.0), rate_per_s=1.0, min_interval_s=60.0,
                   max_step=5.0 if kind is not MvKind.SETPOINT else None)
    kw: dict[str, object] = {"mv": "mv", "kind": kind, "proposed": proposed, "readback": readback, "acknowledged": acked,
                                 "limits": lim, "dt_s": 5.0, "period_s": 5.0, "since_last_move_s": 120.0, "permissive_ok": True,
                                 "permissive_reason": "", "inputs_ok": True, "inputs_reason": ""}
    if field in NUMERIC_FIELDS:
        kw[field] = bad
    else:
        kw["limits"] = unchecked_limits(lim, field, bad)
    d = decide(GuardRequest(**kw))  # type: ignore[arg-type]
    assert not d.write, (field, bad, d)
    assert d.reason and d.fault
