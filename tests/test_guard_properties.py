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


def request(kind: MvKind, c: Cycle, readback: float, last: float | None, lim: MvLimits, t: float,
            last_move: float | None) -> GuardRequest:
    return GuardRequest(
        mv="mv", kind=kind, proposed=c.proposed, readback=readback, last_written=last, limits=lim,
        dt_s=c.dt, t_s=t, last_move_t_s=last_move, permissive_ok=c.permissive_ok, permissive_reason="p",
        inputs_ok=c.inputs_ok, inputs_reason="i",
    )


@SETTINGS
@given(eng=eng, seq=cycles)
def test_setpoint_sequence_properties(eng: tuple[float, float, float], seq: list[Cycle]) -> None:
    """Fed-back setpoint writes respect rate, engineering and operator limits, never move away from the band, and never happen with failed inputs/permissives."""
    elo, width, rate = eng
    ehi = elo + width
    last: float | None = None
    t = 0.0
    for c in seq:
        t += c.dt
        readback = (elo - width) + c.readback_frac * 3 * width
        if c.track:
            last = None
        elif c.use_readback and last is not None:
            last = readback
        lim = limits_for(elo, ehi, c, rate)
        d = decide(request(MvKind.SETPOINT, c, readback, last, lim, t, None))
        base = last if last is not None else readback
        assert d.base == base
        lo, hi = effective_bounds(lim)
        if not (c.inputs_ok and c.permissive_ok):
            assert not d.write  # (e)
        if not math.isfinite(c.proposed):
            assert not d.write
        if d.write:
            v = d.value
            assert math.isfinite(v)
            assert abs(v - base) <= rate * c.dt + TOL  # (a)
            if elo <= base <= ehi:
                assert elo <= v <= ehi  # (b)
            if lo <= base <= hi:
                assert lo <= v <= hi  # (c)
            else:
                assert dist(v, lo, hi) <= dist(base, lo, hi) + TOL  # (d)
            last = v


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
        d = decide(request(kind, c, position, None, lim, t, last_move))
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
