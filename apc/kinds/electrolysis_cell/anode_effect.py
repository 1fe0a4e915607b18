"""Anode-effect detection on measured data only: the cell voltage and the line current.

An anode effect shows as a jump of the cell voltage by tens of volts while the current still flows.
A plant's cell controller confirms one before it answers: the voltage must stay above the
threshold for a confirmation time (one in-range outlier sample is not an anode effect), and the
anode effect is over only when the voltage has stayed below the threshold for a hold time.

States: ``normal`` → (sample above) ``suspect`` → (above for ``confirm_s``) ``active`` → (sample
below) ``clearing`` → (below for ``clear_s``) ``normal``; a sample above during ``clearing``
returns to ``active``, a sample below during ``suspect`` drops the candidate. A sample counts only
when both voltage and current are valid and the current is at least ``min_current_kA``; other
samples change nothing. Times are those of the samples (virtual or plant time); no clock is read.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from apc.kinds.electrolysis_cell.recipe import CellRecipe, FilteredEstimatorSection

__all__ = ["AnodeEffectConfig", "AnodeEffectDetector", "AnodeEffectEvent", "AnodeEffectPhase",
           "AnodeEffectState"]

_EPS_S = 1e-9


@dataclass(frozen=True)
class AnodeEffectConfig:
    """Thresholds of the detector (from the recipe: :meth:`from_recipe`)."""

    voltage_V: float = 15.0
    """Cell voltage above which a sample counts as anode-effect-like."""
    confirm_s: float = 10.0
    """The voltage must stay above ``voltage_V`` this long (first sample above to the current one)."""
    clear_s: float = 30.0
    """The anode effect ends once the voltage has stayed below ``voltage_V`` this long."""
    min_current_kA: float = 1.0
    """Samples with a smaller line current are not judged (no current, no anode effect)."""

    def __post_init__(self) -> None:
        for name in ("voltage_V", "confirm_s", "clear_s", "min_current_kA"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.voltage_V <= 0.0:
            raise ValueError(f"voltage_V must be > 0, got {self.voltage_V!r}")

    @classmethod
    def from_sections(cls, voltage_V: float, filtered: FilteredEstimatorSection) -> AnodeEffectConfig:
        """Threshold ``voltage_V``; confirmation, hold and current from ``estimator.filtered``."""
        return cls(voltage_V=float(voltage_V), confirm_s=filtered.ae_confirm_s, clear_s=filtered.ae_clear_s,
                   min_current_kA=filtered.ae_min_current_kA)

    @classmethod
    def from_recipe(cls, recipe: CellRecipe) -> AnodeEffectConfig:
        """The recipe's anode-effect threshold (``controller.baseline.anode_effect_voltage_V``, or
        ``estimator.ekf.anode_effect_voltage_V`` without a baseline section) and the times of
        ``estimator.filtered``."""
        baseline = recipe.controller.baseline
        threshold = (baseline.anode_effect_voltage_V if baseline is not None
                     else recipe.estimator.ekf.anode_effect_voltage_V)
        return cls.from_sections(threshold, recipe.estimator.filtered)


class AnodeEffectPhase(enum.Enum):
    """Where the detector stands."""

    NORMAL = "normal"
    SUSPECT = "suspect"
    """Above the threshold, not yet for ``confirm_s``."""
    ACTIVE = "active"
    """Confirmed anode effect, voltage above the threshold."""
    CLEARING = "clearing"
    """Confirmed anode effect, voltage below the threshold, not yet for ``clear_s``."""


@dataclass(frozen=True)
class AnodeEffectEvent:
    """One confirmed anode effect."""

    onset_t_s: float
    """Time of the first sample above the threshold."""
    confirmed_t_s: float
    """Time it was confirmed (``onset_t_s`` + at least ``confirm_s``)."""
    peak_voltage_V: float
    """Highest voltage sample so far."""
    end_t_s: float | None = None
    """Time of the first sample back below the threshold that then held for ``clear_s``; None while it lasts."""
    terminated_t_s: float | None = None
    """Time the end was confirmed (``end_t_s`` + at least ``clear_s``); None while it lasts."""

    @property
    def duration_s(self) -> float | None:
        """``end_t_s`` − ``onset_t_s``; None while it lasts."""
        return None if self.end_t_s is None else self.end_t_s - self.onset_t_s


@dataclass(frozen=True)
class AnodeEffectState:
    """The detector after one sample."""

    phase: AnodeEffectPhase
    event: AnodeEffectEvent | None
    """The anode effect in force (``active``/``clearing``), or the one that just ended; else None."""
    confirmed_now: bool = False
    """This sample confirmed a new anode effect."""
    ended_now: bool = False
    """This sample confirmed the end of ``event``."""

    @property
    def detected(self) -> bool:
        """A confirmed anode effect is in force (from its confirmation until its end is confirmed)."""
        return self.phase in (AnodeEffectPhase.ACTIVE, AnodeEffectPhase.CLEARING)


class AnodeEffectDetector:
    """Confirmed onset, duration and termination of anode effects from voltage and current samples."""

    def __init__(self, cfg: AnodeEffectConfig) -> None:
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        """Forget everything (the cell starts normal)."""
        self._phase = AnodeEffectPhase.NORMAL
        self._first_above_t: float | None = None
        self._peak_V = -math.inf
        self._below_since_t: float | None = None
        self._event: AnodeEffectEvent | None = None
        self._events: list[AnodeEffectEvent] = []
        self._rejected = 0

    @property
    def events(self) -> tuple[AnodeEffectEvent, ...]:
        """Anode effects whose end was confirmed, in order."""
        return tuple(self._events)

    @property
    def rejected(self) -> int:
        """Excursions above the threshold that ended before their confirmation (spikes)."""
        return self._rejected

    @property
    def state(self) -> AnodeEffectState:
        """The state after the last sample (no sample: normal)."""
        event = self._event if self._phase in (AnodeEffectPhase.ACTIVE, AnodeEffectPhase.CLEARING) else None
        return AnodeEffectState(self._phase, event)

    def update(self, t_s: float, voltage_V: float | None, current_kA: float | None) -> AnodeEffectState:
        """Judge one sample (None or NaN: not valid this cycle, nothing changes)."""
        cfg = self.cfg
        if (voltage_V is None or current_kA is None or not math.isfinite(voltage_V)
                or not math.isfinite(current_kA) or current_kA < cfg.min_current_kA):
            return self.state
        above = voltage_V > cfg.voltage_V
        phase = self._phase
        if phase is AnodeEffectPhase.NORMAL:
            if not above:
                return self.state
            self._first_above_t, self._peak_V = t_s, voltage_V
            self._phase = AnodeEffectPhase.SUSPECT
            return self._maybe_confirm(t_s)
        if phase is AnodeEffectPhase.SUSPECT:
            if not above:
                self._phase, self._first_above_t = AnodeEffectPhase.NORMAL, None
                self._rejected += 1
                return self.state
            self._peak_V = max(self._peak_V, voltage_V)
            return self._maybe_confirm(t_s)
        assert self._event is not None
        if above:
            self._phase, self._below_since_t = AnodeEffectPhase.ACTIVE, None
            if voltage_V > self._event.peak_voltage_V:
                self._event = AnodeEffectEvent(self._event.onset_t_s, self._event.confirmed_t_s, voltage_V)
            return self.state
        if self._below_since_t is None:
            self._below_since_t = t_s
            self._phase = AnodeEffectPhase.CLEARING
        if t_s - self._below_since_t < cfg.clear_s - _EPS_S:
            return self.state
        ended = AnodeEffectEvent(self._event.onset_t_s, self._event.confirmed_t_s, self._event.peak_voltage_V,
                                 self._below_since_t, t_s)
        self._events.append(ended)
        self._event, self._below_since_t = None, None
        self._phase = AnodeEffectPhase.NORMAL
        return AnodeEffectState(AnodeEffectPhase.NORMAL, ended, ended_now=True)

    def _maybe_confirm(self, t_s: float) -> AnodeEffectState:
        assert self._first_above_t is not None
        if t_s - self._first_above_t < self.cfg.confirm_s - _EPS_S:
            return self.state
        self._event = AnodeEffectEvent(self._first_above_t, t_s, self._peak_V)
        self._phase, self._first_above_t, self._below_since_t = AnodeEffectPhase.ACTIVE, None, None
        return AnodeEffectState(AnodeEffectPhase.ACTIVE, self._event, confirmed_now=True)
