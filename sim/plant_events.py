"""What every simulated plant does with its scenario: draw its true parameters from the seed, follow
the timed events as plant time passes, and apply instrument faults to what the field reports."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from sim.models.base import ProcessModel
from sim.scenario_loader import Event, EventSeries, ScenarioError

SERIES_HORIZON_H = 24.0 * 366.0
"""How far ahead a scenario's event series are drawn (a year of plant time)."""


@dataclass(frozen=True)
class Reading:
    """One plant measurement as the field instrument reports it."""

    value: float
    quality: str  # "good" | "uncertain" | "bad"
    sample_ts: float | None = None  # plant seconds when a sample was taken
    source_t_s: float | None = None  # plant seconds of the source timestamp, when it is not now (stale)


def draw_parameters(model: ProcessModel, plant_parameters: Mapping[str, float], spread: Mapping[str, float],
                    seed: int, where: str) -> dict[str, float]:
    """True plant parameters: the scenario's values, each perturbed per seed by its relative spread
    (normal, clipped at 3 sigma; drawn in the model's parameter order, so draws are reproducible)."""
    nominal = dict(zip(model.parameter_names, model.parameter_vector(plant_parameters)))
    unknown = set(spread) - set(nominal)
    if unknown:
        raise ScenarioError(f"{where}: parameter_spread names unknown parameters {sorted(unknown)}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    out = dict(nominal)
    for name in model.parameter_names:
        sigma = spread.get(name)
        if sigma:
            out[name] = nominal[name] * (1.0 + sigma * float(np.clip(rng.standard_normal(), -3.0, 3.0)))
    return out


def _rectifier_order(s: EventSeries, at_h: float, value_kA: float, duration_h: float, line_current_kA: float,
                     step_s: float) -> list[Event]:
    """A grid order as the rectifier carries it out: caps ramping down to the order, held to its end,
    then setpoint steps back up to the line current (see ``SERIES_KINDS`` in :mod:`sim.scenario`)."""
    step_kA = s.ramp_kA_s * step_s
    end_h = at_h + duration_h
    out = []
    n_down = max(1, math.ceil((s.cap_from_kA - value_kA) / step_kA))
    for k in range(1, n_down + 1):
        t_h = at_h + (k - 1) * step_s / 3600.0
        cap = max(value_kA, s.cap_from_kA - k * step_kA)
        out.append(Event(t_h, "output_limit", duration_h=max(0.0, end_h - t_h), signal="current", value=cap))
    n_up = max(1, math.ceil((line_current_kA - value_kA) / step_kA))
    up_kA = (line_current_kA - value_kA) / n_up
    out += [Event(end_h + k * step_s / 3600.0, "current_step", value=up_kA) for k in range(n_up)]
    return out


def expand_series(series: Mapping[str, EventSeries], seed: int, line_current_kA: float, step_s: float,
                  horizon_h: float = SERIES_HORIZON_H) -> tuple[Event, ...]:
    """The timed events of ``series`` for ``seed`` (each series from its own stream, in name order, so
    adding one leaves the others' draws alone); a ``rectifier_order`` becomes its ramped caps and the
    setpoint steps back to ``line_current_kA``, one per ``step_s``."""
    out: list[Event] = []
    for index, name in enumerate(sorted(series)):
        s = series[name]
        rng = np.random.default_rng(np.random.SeedSequence([seed, 3, index]))
        t_h = s.first_h + s.first_spread_h * float(rng.uniform())
        n = 0
        while t_h < horizon_h and (s.count <= 0 or n < s.count):
            at_h = max(0.0, t_h + s.jitter_h * float(rng.uniform(-1.0, 1.0)))
            value = s.value + s.value_spread * float(rng.uniform(-1.0, 1.0))
            duration_h = max(0.0, s.duration_h + s.duration_spread_h * float(rng.uniform(-1.0, 1.0)))
            if s.kind == "rectifier_order":
                out += _rectifier_order(s, at_h, value, duration_h, line_current_kA, step_s)
            else:
                out.append(Event(at_h, s.kind, duration_h=duration_h, signal=s.signal, fault=s.fault, value=value,
                                 heat_kJ=s.heat_kJ))
            t_h += s.every_h
            n += 1
    return tuple(sorted(out, key=lambda e: e.at_h))


class ScenarioEvents:
    """A scenario's timed events as plant time passes: which come due, which are in force, and the
    instrument faults (``input_fault``) applied to readings.

    ``input_fault`` kinds: ``bad`` / ``uncertain`` (the quality), ``nan`` (a NaN reported good),
    ``frozen`` (the value at the fault's start, good), ``spike`` (one plant step reads ``value``),
    ``stale`` (the value goes on; its source timestamp stops when the fault begins)."""

    def __init__(self, events: tuple[Event, ...]) -> None:
        self._pending = sorted(events, key=lambda e: e.at_h)
        self._active: list[tuple[float, Event]] = []
        self._frozen: dict[str, float] = {}
        self._spikes: dict[str, tuple[float, float]] = {}
        self._stale_since: dict[str, float] = {}

    def due(self, t_s: float, dt_s: float) -> list[Event]:
        """The events whose time has come by plant time ``t_s`` (each returned once, in time order),
        now in force for their duration; a spike lasts one plant step of ``dt_s``."""
        out = []
        while self._pending and self._pending[0].at_h * 3600.0 <= t_s:
            ev = self._pending.pop(0)
            out.append(ev)
            if ev.kind == "input_fault" and ev.fault == "spike":
                self._spikes[ev.signal] = (ev.value, t_s + dt_s)
                continue
            if ev.kind == "input_fault" and ev.fault == "stale":
                self._stale_since.setdefault(ev.signal, t_s)
            self._active.append((t_s + ev.duration_h * 3600.0, ev))
        self._active = [(end, ev) for end, ev in self._active if end > t_s]
        return out

    def active(self, kind: str, t_s: float) -> list[Event]:
        """Events of ``kind`` in force at plant time ``t_s``."""
        return [ev for end, ev in self._active if ev.kind == kind and end > t_s]

    def factor(self, kind: str, t_s: float) -> float:
        """Product of ``1 + value`` over the events of ``kind`` in force (1.0 with none)."""
        out = 1.0
        for ev in self.active(kind, t_s):
            out *= 1.0 + ev.value
        return out

    def drift(self, kind: str, t_s: float) -> float:
        """Sum of ``value`` x hours since each event of ``kind`` in force began (0.0 with none)."""
        return sum(ev.value * (t_s / 3600.0 - ev.at_h) for ev in self.active(kind, t_s))

    def reading(self, signal: str, reading: Reading, t_s: float) -> Reading:
        """``reading`` of ``signal`` as the faulted instrument reports it at plant time ``t_s``."""
        spike = self._spikes.get(signal)
        if spike is not None and t_s <= spike[1]:  # one in-range outlier sample
            return replace(reading, value=spike[0])
        faults = [ev for ev in self.active("input_fault", t_s) if ev.signal == signal]
        if any(ev.fault == "stale" for ev in faults):  # the value goes on; its source timestamp stopped
            return replace(reading, source_t_s=self._stale_since[signal])
        self._stale_since.pop(signal, None)
        for ev in faults:
            if ev.fault in ("bad", "uncertain"):
                return replace(reading, quality=ev.fault)
            if ev.fault == "nan":
                return replace(reading, value=math.nan, quality="good")
            if ev.fault == "frozen":
                return replace(reading, value=self._frozen.setdefault(signal, reading.value), quality="good")
        self._frozen.pop(signal, None)
        return reading
