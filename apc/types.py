"""Core value types shared by every layer of the runtime.

All records carry UTC wall-clock seconds (``*_ts`` fields, POSIX seconds);
scheduling uses a monotonic clock (see :mod:`apc.clock`). Later versions add
fields to these types; they never rename them.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field


class Quality(enum.Enum):
    """OPC UA style quality of one sample."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


@dataclass(frozen=True, slots=True)
class Sample:
    """One value read from the plant.

    ``source_ts`` is the device/DCS timestamp (never compared with our clock),
    ``receive_ts`` our UTC receive time, ``sample_ts`` the time a lab or dip
    sample was physically taken (``None`` for continuous signals).
    """

    value: float
    quality: Quality
    source_ts: float | None
    receive_ts: float
    sample_ts: float | None = None

    @property
    def usable(self) -> bool:
        """True when the quality is not bad and the value is a finite number."""
        return self.quality is not Quality.BAD and math.isfinite(self.value)


Snapshot = Mapping[str, Sample]
"""All samples of one read, keyed by plant tag."""


class Verdict(enum.Enum):
    """Validation verdict for one input in one cycle."""

    OK = "ok"
    MISSING = "missing"
    BAD_QUALITY = "bad_quality"
    UNCERTAIN = "uncertain"
    NOT_FINITE = "not_finite"
    STALE = "stale"
    FROZEN = "frozen"
    OUT_OF_RANGE = "out_of_range"
    NO_NEW_SAMPLE = "no_new_sample"


@dataclass(frozen=True, slots=True)
class ValidatedInput:
    """An input after validation: the raw sample plus the verdict."""

    name: str
    sample: Sample | None
    verdict: Verdict

    @property
    def ok(self) -> bool:
        """True when the input may be used by the estimator and controller."""
        return self.verdict is Verdict.OK


@dataclass(frozen=True, slots=True)
class Estimate:
    """Estimated state of a unit.

    ``names``/``units`` label ``x``; ``P`` is the covariance (or ``None`` for
    estimators without one); ``health`` is ``"ok"`` or a short reason.
    ``extras`` carries derived signals (pseudo-resistance, slopes, soft sensors).
    """

    names: tuple[str, ...]
    units: tuple[str, ...]
    x: tuple[float, ...]
    P: tuple[tuple[float, ...], ...] | None
    health: str
    extras: Mapping[str, float] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """True when the estimator reports itself fit for control."""
        return self.health == "ok"

    def value(self, name: str) -> float:
        """Value of a state or extra signal by name."""
        if name in self.extras:
            return self.extras[name]
        return self.x[self.names.index(name)]

    def as_dict(self) -> dict[str, float]:
        """States and extras as one flat name→value mapping."""
        out = dict(zip(self.names, self.x))
        out.update(self.extras)
        return out


class SolverStatus(enum.Enum):
    """Outcome of one controller step."""

    OK = "ok"
    HELD = "held"  # following a still-valid earlier plan
    FAILED = "failed"
    NOT_RUN = "not_run"  # MPC runs at a multiple of the base period


@dataclass(frozen=True, slots=True)
class Plan:
    """What a controller proposes for one cycle.

    ``moves`` are absolute targets for setpoint MVs and increments for
    increment/pulse MVs, keyed by MV name; ``predicted`` holds predicted CV
    trajectories keyed by CV name.
    """

    moves: Mapping[str, float]
    predicted: Mapping[str, tuple[float, ...]]
    status: SolverStatus
    iterations: int
    solve_time_s: float
    reason: str = ""


class Mode(enum.Enum):
    """Controller mode of a unit (requested or actual)."""

    OFF = "OFF"
    STANDBY = "STANDBY"
    ON = "ON"


class MvKind(enum.Enum):
    """How a manipulated variable is written to the DCS."""

    SETPOINT = "setpoint"
    INCREMENT = "increment"
    PULSE = "pulse"


@dataclass(frozen=True, slots=True)
class MvConstraint:
    """What bounds one MV this cycle, beyond its rate: the limits in force and the DCS's word.

    ``low``/``high`` are operator ∩ engineering limits (setpoints: the value; increments: the
    position). ``hold_up``/``hold_down`` are set while the DCS reports the loop's output at its
    high/low limit: pushing the MV further that way would only wind the loop up.
    """

    low: float
    high: float
    hold_up: bool = False
    hold_down: bool = False
    since_last_move_s: float = field(default=math.inf, compare=False)
    """Increments: seconds since the last move of this MV that the plant confirmed or the unit
    persisted (``inf`` when none is known): what a minimum interval between moves is counted from.
    Not a limit, so not part of equality: a controller that re-solves on new limits ignores its count."""


@dataclass(frozen=True, slots=True)
class Write:
    """One value to write to one plant tag."""

    tag: str
    value: float


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Outcome of one write as reported by the plant I/O layer."""

    tag: str
    ok: bool
    detail: str = ""
