"""What every simulated plant does with its scenario: draw its true parameters from the seed, follow
the timed events as plant time passes, and apply instrument faults to what the field reports."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from sim.models.base import ProcessModel
from sim.scenario_loader import Event, ScenarioError


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
