"""What a furnace controller sees of the heating curve at one instant.

The batch (:mod:`apc.batch`) owns the curve, its segments and the soak clock;
every cycle it hands the controller a :class:`CurvePreview`: the reference
and the limits of the controlled temperature over the controller's horizon,
so that an MPC sees a ramp end or a soak coming (preview) and a PID takes
the first point as its ramped setpoint.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from apc.cycle_record import BatchRecord


class BatchState(enum.Enum):
    """Life of one batch, as the HMI shows it."""

    IDLE = "idle"
    RUNNING = "running"
    HELD = "held"
    ABORTED = "aborted"
    COMPLETE = "complete"


@dataclass(frozen=True, slots=True)
class CurvePreview:
    """Reference of the controlled temperature at ``t_s + k * step_s``, k = 0 … len − 1.

    ``target_degC`` is where the curve wants the controlled temperature;
    ``upper_degC`` is never to be exceeded (the soak band's top while a soak is
    under way or ahead in the same heating phase), ``lower_degC`` is the band's
    bottom while soaking (``-inf`` elsewhere). ``max_rate_degC_min`` is the
    curve's ramp-rate limit per point (``inf`` where none). In a ``melt``
    segment the curve asks for power, not temperature: ``target_degC`` is NaN
    there and ``stage_power_kW`` holds the stage power (NaN elsewhere; empty:
    no power stage in sight). When the batch is
    not RUNNING the controller holds the furnace at ``hold_degC`` (its
    temperature when held), or makes no heat at all when ``hold_degC`` is None.
    """

    state: BatchState
    segment: int
    """Index of the segment in force (−1 before the start)."""
    segment_kind: str
    """``ramp`` | ``soak`` | ``hold_until`` | ``melt`` | ``cool`` | ``""`` outside a curve."""
    step_s: float
    target_degC: tuple[float, ...]
    upper_degC: tuple[float, ...]
    lower_degC: tuple[float, ...]
    max_rate_degC_min: tuple[float, ...]
    hold_degC: float | None = None
    soak_done_s: float = 0.0
    """Guaranteed-soak time already counted in the segment in force."""
    stage_power_kW: tuple[float, ...] = ()
    """Power the curve asks for per point (melt segments), NaN where it asks for a temperature."""

    def __post_init__(self) -> None:
        n = len(self.target_degC)
        if n == 0:
            raise ValueError("a preview needs at least one point")
        for name in ("upper_degC", "lower_degC", "max_rate_degC_min"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} must have {n} points like target_degC")
        if self.stage_power_kW and len(self.stage_power_kW) != n:
            raise ValueError(f"stage_power_kW must have {n} points like target_degC (or none)")
        if not self.step_s > 0:
            raise ValueError("step_s must be > 0")

    def stage_power_at(self, k: int) -> float:
        """Stage power at point ``k``, NaN where the curve asks for a temperature."""
        return self.stage_power_kW[k] if self.stage_power_kW else math.nan

    def record_entry(self) -> BatchRecord:
        """The reference in force now, as a cycle's record holds it (``batch``)."""
        return BatchRecord(self.state.value, self.segment, self.segment_kind, self.target_degC[0],
                           self.upper_degC[0], self.lower_degC[0], self.hold_degC, self.soak_done_s,
                           self.stage_power_at(0))

    @property
    def running(self) -> bool:
        """True when the curve is being followed."""
        return self.state is BatchState.RUNNING

    @staticmethod
    def holding(state: BatchState, temp_degC: float | None, points: int, step_s: float,
                segment: int = -1, kind: str = "", soak_done_s: float = 0.0) -> CurvePreview:
        """A flat preview at ``temp_degC`` (held batch) or with no reference (idle, aborted, done)."""
        t = math.nan if temp_degC is None else float(temp_degC)
        return CurvePreview(state, segment, kind, step_s, (t,) * points, (math.inf,) * points,
                            (-math.inf,) * points, (math.inf,) * points, temp_degC, soak_done_s)
