"""The output guard: the last check before a value is written to the DCS.

The APC is not a safety system; the guard guarantees that nothing outside
the write list is written, that every written setpoint respects operator ∩
engineering limits and the rate limit, that increments respect the step size,
position limits and minimum interval, and that it holds (writes nothing for
that MV, with a reason) whenever inputs, permissives or numbers are not fit.

Core: :func:`decide` (pure). Around it: :class:`OutputGuard` (write list and
MV specs) and :class:`ReadbackMonitor` (per-MV readback check).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from apc.recipe.schema import MvLimits, MvSpec
from apc.types import MvKind, Write

NO_MOVE = 1e-9
"""Increments with ``|δ|`` at or below this are not written (``"no_move"``)."""

BENIGN_HOLDS = frozenset({"no_move", "min_interval"})
"""Hold reasons that are normal operation, not guard faults."""


@dataclass(frozen=True)
class GuardRequest:
    """One proposed move of one MV, with everything the guard needs to judge it."""

    mv: str
    kind: MvKind
    proposed: float
    """Absolute target (SETPOINT) or increment (INCREMENT/PULSE)."""
    readback: float
    """DCS value in force (increments: current position)."""
    acknowledged: float | None
    """Setpoints: the last value the plant acknowledged (write result good) since the MV was last
    tracked; ``None`` when none. A refused or failed write never changes it."""
    limits: MvLimits
    """Limits with the *effective* operator limits (the HMI may move them)."""
    dt_s: float
    """Time since the last cycle."""
    period_s: float
    """Nominal cycle period: the rate allowance never covers more than this (a gap is no licence)."""
    since_last_move_s: float | None
    """Increments: seconds since the last move the plant confirmed or the unit persisted, ``None`` if
    none is known."""
    permissive_ok: bool
    permissive_reason: str
    inputs_ok: bool
    inputs_reason: str


@dataclass(frozen=True)
class GuardDecision:
    """What the guard lets through for one MV."""

    mv: str
    write: bool
    value: float
    """Value to write (increments: the increment); meaningless when held."""
    clamps: tuple[str, ...]
    """Limits that shaped the value, e.g. ``"operator_high"``, ``"rate_up"``."""
    reason: str
    """Why held; empty when written."""
    base: float
    """What rate limiting started from (setpoints: the acknowledged value, else the readback;
    increments: the position)."""

    @property
    def fault(self) -> bool:
        """True when held for a reason other than normal operation (no move, min interval)."""
        return not self.write and self.reason not in BENIGN_HOLDS


def effective_bounds(limits: MvLimits) -> tuple[float, float]:
    """Intersection of operator and engineering limits (meaningful only for finite limits)."""
    return max(limits.operator[0], limits.engineering[0]), min(limits.operator[1], limits.engineering[1])


def _hold(req: GuardRequest, base: float, reason: str, clamps: Sequence[str] = ()) -> GuardDecision:
    value = base if req.kind is MvKind.SETPOINT else 0.0
    return GuardDecision(req.mv, False, value, tuple(clamps), reason, base)


def _limit_clamps(x: float, limits: MvLimits, low: str, high: str) -> list[str]:
    """Names of the operator/engineering limits ``x`` lies beyond."""
    (elo, ehi), (olo, ohi) = limits.engineering, limits.operator
    out = []
    if x > ohi:
        out.append(f"operator_{high}")
    if x > ehi:
        out.append(f"engineering_{high}")
    if x < olo:
        out.append(f"operator_{low}")
    if x < elo:
        out.append(f"engineering_{low}")
    return out


def _not_finite(req: GuardRequest) -> str:
    """Name of the first field that is not a finite number where one is needed ('' when none).

    The guard fails closed: ``max``/``min`` treat NaN asymmetrically, so nothing below may see one.
    """
    lim = req.limits
    fields: list[tuple[str, float | None]] = [
        ("engineering_low", lim.engineering[0]), ("engineering_high", lim.engineering[1]),
        ("operator_low", lim.operator[0]), ("operator_high", lim.operator[1]),
        ("rate_per_s", lim.rate_per_s), ("min_interval_s", lim.min_interval_s), ("max_step", lim.max_step),
        ("readback", req.readback), ("acknowledged", req.acknowledged), ("proposed", req.proposed),
        ("dt_s", req.dt_s), ("period_s", req.period_s), ("since_last_move_s", req.since_last_move_s),
    ]
    for name, value in fields:
        if value is None and name in ("max_step", "acknowledged", "since_last_move_s"):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{name}_not_finite"
    if not lim.rate_per_s > 0:
        return "rate_not_positive"
    if lim.max_step is not None and not lim.max_step > 0:
        return "max_step_not_positive"
    if not (req.period_s > 0 and req.dt_s >= 0 and lim.min_interval_s >= 0):
        return "bad_dt"
    return ""


def _common_holds(req: GuardRequest, base: float) -> GuardDecision | None:
    if not req.inputs_ok:
        return _hold(req, base, f"inputs_not_ok: {req.inputs_reason}")
    if not req.permissive_ok:
        return _hold(req, base, f"permissive: {req.permissive_reason}")
    bad = _not_finite(req)
    if bad:
        return _hold(req, base, bad)
    lo, hi = effective_bounds(req.limits)
    if not lo <= hi:
        return _hold(req, base, "limits_empty")
    return None


def _base(req: GuardRequest) -> float:
    """Setpoints: the acknowledged value, else the readback; increments: the position."""
    if req.kind is MvKind.SETPOINT and req.acknowledged is not None:
        return req.acknowledged
    return req.readback


def _allowance(req: GuardRequest) -> float:
    """Largest setpoint change this cycle: rate × dt, dt capped at the nominal period."""
    return req.limits.rate_per_s * min(req.dt_s, req.period_s)


def _within(value: float, ref: float, r: float) -> float:
    """``value`` nudged toward ``ref`` until ``|value - ref| <= r`` holds in floating point."""
    while abs(value - ref) > r and value != ref:
        value = math.nextafter(value, ref)
    return value


def _decide_setpoint(req: GuardRequest) -> GuardDecision:
    base = _base(req)
    held = _common_holds(req, base)
    if held is not None:
        return held
    lo, hi = effective_bounds(req.limits)
    clamps = _limit_clamps(req.proposed, req.limits, "low", "high")
    target = min(max(req.proposed, lo), hi)
    r = _allowance(req)
    if target - base > r:
        clamps.append("rate_up")
        value = base + r
    elif base - target > r:
        clamps.append("rate_down")
        value = base - r
    else:
        value = target
    # Guard against rounding: stay between base and target, and within rate.
    value = _within(min(max(value, min(base, target)), max(base, target)), base, r)
    rb = req.readback
    if abs(value - rb) > r:
        # The plant's value in force differs from what it acknowledged (a lagging readback, or the DCS
        # moved it): step only where both allow, and never away from the target.
        lo_w = max(max(base, rb) - r, min(base, target))
        hi_w = min(min(base, rb) + r, max(base, target))
        if not lo_w <= hi_w:
            return _hold(req, base, f"readback {rb:g} and acknowledged {base:g} differ by more than the rate allows")
        clamps.append("rate_readback")
        value = _within(_within(min(max(target, lo_w), hi_w), rb, r), base, r)
        if abs(value - rb) > r:
            return _hold(req, base, f"readback {rb:g} and acknowledged {base:g} differ by more than the rate allows")
    return GuardDecision(req.mv, True, value, tuple(clamps), "", base)


def _decide_increment(req: GuardRequest) -> GuardDecision:
    pos = req.readback
    held = _common_holds(req, pos)
    if held is not None:
        return held
    lo, hi = effective_bounds(req.limits)
    lim = req.limits
    ms = lim.max_step if lim.max_step is not None else _allowance(req)
    clamps: list[str] = []
    d = req.proposed
    if abs(d) > ms:
        clamps.append("step_size")
    if pos + d > hi and d > 0:
        clamps.append("position_high")
    if pos + d < lo and d < 0:
        clamps.append("position_low")
    # Allowed band always contains 0: the guard never reverses a move.
    d = min(max(d, max(-ms, min(0.0, lo - pos))), min(ms, max(0.0, hi - pos)))
    while d > 0 and pos + d > hi:
        d = math.nextafter(d, 0.0)
    while d < 0 and pos + d < lo:
        d = math.nextafter(d, 0.0)
    if abs(d) <= NO_MOVE:
        return _hold(req, pos, "no_move", clamps)
    since = req.since_last_move_s
    if since is not None and not since >= lim.min_interval_s:
        return _hold(req, pos, "min_interval", clamps)
    return GuardDecision(req.mv, True, d, tuple(clamps), "", pos)


def decide(req: GuardRequest) -> GuardDecision:
    """Pure guard rule for one request (no write-list check; see :class:`OutputGuard`)."""
    if req.kind is MvKind.SETPOINT:
        return _decide_setpoint(req)
    return _decide_increment(req)


class OutputGuard:
    """Write list + MV specs around :func:`decide`; the last gate before plant I/O."""

    def __init__(self, write_tags: Iterable[str], mvs: Mapping[str, MvSpec]) -> None:
        self._allow = frozenset(write_tags)
        self._mvs = dict(mvs)

    @classmethod
    def from_mvs(cls, mvs: Mapping[str, MvSpec], extra_tags: Iterable[str] = ()) -> OutputGuard:
        """Write list = each MV's tag, active flag and sequence tag, plus ``extra_tags`` (heartbeat)."""
        tags = set(extra_tags)
        for spec in mvs.values():
            tags.add(spec.tag)
            tags.update(t for t in (spec.active_flag, spec.sequence_tag) if t is not None)
        return cls(tags, mvs)

    @property
    def write_tags(self) -> frozenset[str]:
        """The write list."""
        return self._allow

    def allowed(self, tag: str) -> bool:
        """True when ``tag`` is on the write list."""
        return tag in self._allow

    def check(self, request: GuardRequest) -> GuardDecision:
        """Judge one request: unknown MV, MV tag off the write list or kind mismatch hold."""
        spec = self._mvs.get(request.mv)
        base = _base(request)
        if spec is None:
            return _hold(request, base, "unknown_mv")
        if not self.allowed(spec.tag):
            return _hold(request, base, f"not_on_write_list: {spec.tag}")
        if spec.kind is not request.kind:
            return _hold(request, base, f"kind_mismatch: spec {spec.kind.value}, request {request.kind.value}")
        return decide(request)

    def filter_writes(self, writes: Sequence[Write]) -> tuple[list[Write], list[str]]:
        """Drop (and report) writes off the write list or with a non-finite value."""
        kept: list[Write] = []
        dropped: list[str] = []
        for w in writes:
            if not self.allowed(w.tag):
                dropped.append(f"{w.tag}: not_on_write_list")
            elif not math.isfinite(w.value):
                dropped.append(f"{w.tag}: not_finite")
            else:
                kept.append(w)
        return kept, dropped


class ReadbackMonitor:
    """Checks that the DCS took what we wrote; counts consecutive mismatches.

    Call :meth:`update` once per cycle, after reading, with ``written`` = what
    was written in the previous cycle (setpoint value or increment; ``None``
    if nothing) and the readback read now.

    Setpoints: after a write of ``v`` the readback must stay within
    ``tolerance`` of ``v`` (checked every cycle until :meth:`reset`).
    Increments: after a move ``δ`` the position must have changed by ``δ``
    within ``tolerance``; cycles without a move are not judged.
    """

    def __init__(self, kind: MvKind, tolerance: float) -> None:
        if not tolerance >= 0:
            raise ValueError("tolerance must be >= 0")
        self.kind = kind
        self.tolerance = tolerance
        self._expected: float | None = None
        self._position: float | None = None
        self._mismatches = 0

    @classmethod
    def from_spec(cls, spec: MvSpec) -> ReadbackMonitor:
        """Monitor with the spec's kind and ``readback_tolerance``."""
        return cls(spec.kind, spec.readback_tolerance)

    @property
    def mismatches(self) -> int:
        """Consecutive mismatches (setpoints: cycles; increments: moves)."""
        return self._mismatches

    def reset(self) -> None:
        """Forget expectations and the mismatch count (e.g. when tracking).

        The last observed position is kept: it is an observation, not an
        expectation, and the first move after tracking is judged against it.
        """
        self._expected = None
        self._mismatches = 0

    def _judge(self, expected: float, readback: float, what: str) -> tuple[bool, str]:
        err = abs(readback - expected)
        slack = self.tolerance + 1e-9 * max(1.0, abs(expected))
        if math.isfinite(readback) and err <= slack:
            self._mismatches = 0
            return True, ""
        self._mismatches += 1
        return False, (
            f"readback {readback:g} vs expected {expected:g} after {what}: "
            f"|error| {err:g} > tolerance {self.tolerance:g} ({self._mismatches} consecutive)"
        )

    def update(self, written: float | None, readback: float) -> tuple[bool, str]:
        """Judge this cycle's readback; returns (ok, reason)."""
        if self.kind is MvKind.SETPOINT:
            if written is not None:
                self._expected = written
            if self._expected is None:
                return True, ""
            return self._judge(self._expected, readback, "setpoint write")
        prev, self._position = self._position, readback if math.isfinite(readback) else None
        if written is None or written == 0.0:
            return True, ""
        if prev is None:
            self._mismatches += 1
            return False, f"move {written:g} from unknown position ({self._mismatches} consecutive)"
        return self._judge(prev + written, readback, f"move {written:g}")
