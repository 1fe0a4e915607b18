"""Scenario files of every simulated unit kind: timed events, and YAML into frozen scenario dataclasses.

A scenario (``sim/scenarios/...``) fixes what a simulated plant does, independent of any
controller: its parameter spread, noise, DCS behaviour and timed events. Each unit kind has its
own scenario dataclass; one loader fills any of them (:func:`scenario_from_mapping`), converting
by the dataclass's type hints and naming file and key in every error.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

COMPUTE_FAULTS = {"compute_stall": "stall", "compute_crash": "crash"}
"""Events that make the unit's computation (not the plant) misbehave, and the fault each injects."""

T = TypeVar("T")


class ScenarioError(ValueError):
    """A scenario file is malformed; the message names file and key."""


@dataclass(frozen=True)
class Event:
    """One timed event."""

    at_h: float
    kind: str
    duration_h: float = 0.0
    signal: str = ""
    """input_fault: plant signal; loop_local, output_limit: loop name."""
    fault: str = "bad"
    """input_fault: ``bad`` | ``frozen`` | ``nan`` | ``uncertain`` | ``spike`` (one sample reads ``value``,
    in range, at ``at_h``) | ``stale`` (the value keeps updating, its source timestamp stops)."""
    value: float = 0.0
    """current_order: kA; ambient_step: degC; anode_change: gap jump in cm; output_limit: the
    loop's high limit (current kA, feed kg/h, anode position cm); input_fault spike: the outlier;
    feeder_bias: relative delivery error (delivered = commanded x (1 + value)); oxide_quality: relative
    change of the oxide content of the feed; thermocouple_drift: degC per hour the dip reading drifts."""
    duration_s: float = 0.0
    """compute_stall: how long the computation does not answer (plant seconds)."""
    heat_kJ: float = 0.0
    """anode_change: heat the cold anode draws from the bath, first order with time constant
    ``duration_h`` (on top of the change's instant 3 K drop)."""


@dataclass(frozen=True)
class EventSeries:
    """Events of one kind recurring at random times, drawn per seed (``event_series`` of a scenario).

    The first occurrence is at ``first_h`` plus a uniform draw in [0, ``first_spread_h``], the next ones
    ``every_h`` apart, each shifted by a uniform draw in ±``jitter_h``, at most ``count`` of them (0: no
    limit). Each draws its ``value`` and ``duration_h`` uniformly within ± their spreads (the duration
    never below zero); the other fields are copied into the :class:`Event`."""

    kind: str
    every_h: float = 24.0
    first_h: float = 0.0
    first_spread_h: float = 0.0
    jitter_h: float = 0.0
    count: int = 0
    value: float = 0.0
    value_spread: float = 0.0
    duration_h: float = 0.0
    duration_spread_h: float = 0.0
    signal: str = ""
    fault: str = "bad"
    heat_kJ: float = 0.0
    ramp_kA_s: float = 0.0012
    """rectifier_order: how fast the order moves the rectifier (slower than an APC's own current rate,
    so a unit that owns the rectifier can follow it without its guard holding)."""
    cap_from_kA: float = 6.5
    """rectifier_order: the cap ramps down from here (the highest current any cell may run at)."""


def check_keys(cls: type, data: Mapping[str, Any], where: str) -> None:
    """Every key of ``data`` is a field of the dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")


def _events(data: Any, where: str, kinds: tuple[str, ...]) -> tuple[Event, ...]:
    events = []
    for i, ev in enumerate(data or []):
        if not isinstance(ev, Mapping):
            raise ScenarioError(f"{where}: events[{i}] must be a mapping")
        check_keys(Event, ev, f"{where}: events[{i}]")
        if ev.get("kind") not in kinds:
            raise ScenarioError(f"{where}: events[{i}].kind must be one of {kinds}")
        try:
            events.append(Event(**ev))
        except TypeError as exc:
            raise ScenarioError(f"{where}: events[{i}]: {exc}") from None
    return tuple(sorted(events, key=lambda e: e.at_h))


def _pair(value: Any, where: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ScenarioError(f"{where} must be [low, high]") from None
    if not lo < hi:
        raise ScenarioError(f"{where} must be [low, high]")
    return lo, hi


def _convert(tp: Any, value: Any, where: str, key: str, event_kinds: tuple[str, ...]) -> Any:
    """One field's YAML value as its type hint asks (containers only: scalars stay as written)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple and args == (Event, ...):
        return _events(value, where, event_kinds)
    if origin is tuple and args == (float, float):
        return _pair(value, f"{where}: {key}")
    if origin in (AbcMapping, dict) and len(args) == 2:
        if value is not None and not isinstance(value, Mapping):
            raise ScenarioError(f"{where}: {key} must be a mapping")
        inner = args[1]
        out: dict[str, Any] = {}
        for name, v in (value or {}).items():
            if inner is float:
                try:
                    out[str(name)] = float(v)
                except (TypeError, ValueError) as exc:
                    raise ScenarioError(f"{where}: {key}: {exc}") from None
            elif typing.get_origin(inner) is tuple:
                out[str(name)] = _pair(v, f"{where}: {key}.{name}")
            elif dataclasses.is_dataclass(inner):
                try:
                    out[str(name)] = inner(**v)  # type: ignore[operator]
                except TypeError as exc:
                    raise ScenarioError(f"{where}: {key}.{name}: {exc}") from None
            else:
                out[str(name)] = v
        return out
    return value


def scenario_from_mapping(cls: type[T], data: Any, where: str, event_kinds: tuple[str, ...]) -> T:
    """Build the scenario dataclass ``cls`` from parsed YAML, with errors naming ``where`` and the key;
    events must be of ``event_kinds`` (sorted by time)."""
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{where}: top level must be a mapping")
    check_keys(cls, data, where)
    hints = typing.get_type_hints(cls)
    kwargs = {key: _convert(hints[key], value, where, key, event_kinds) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def load_scenario_file(name_or_path: str, directory: Path, build: Callable[[Any, str], T], what: str = "scenario") -> T:
    """``directory/NAME.yaml`` (or a path to a YAML file) parsed and given to ``build(data, file name)``."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = directory / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml"))
        raise ScenarioError(f"{what} {name_or_path!r} not found; shipped scenarios: {known}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path.name}: {exc}") from None
    return build(data, path.name)


class ComputeFaultFeed:
    """The scenario's compute faults as they come due: called with each cycle's plant time, returns the
    (``stall`` | ``crash``, duration_s) faults whose ``at_h`` has been reached since the last call."""

    def __init__(self, events: tuple[Event, ...]) -> None:
        self._due = sorted((e for e in events if e.kind in COMPUTE_FAULTS), key=lambda e: e.at_h)

    def __call__(self, t_s: float) -> list[tuple[str, float]]:
        out = []
        while self._due and self._due[0].at_h * 3600.0 <= t_s:
            ev = self._due.pop(0)
            out.append((COMPUTE_FAULTS[ev.kind], ev.duration_s))
        return out
