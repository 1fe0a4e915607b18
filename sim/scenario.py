"""Scenarios: what the simulated plant does, independent of any controller.

A scenario (``sim/scenarios/NAME.yaml``) fixes the plant's sampling regime,
noise, per-seed parameter spread, tapping, DCS fallback behaviour and timed
events. It never contains controller tuning.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

SCENARIO_DIR = Path(__file__).with_name("scenarios")

EVENT_KINDS = (
    "input_fault",  # a measured signal goes bad/frozen/NaN for a while
    "current_order",  # the rectifier / line current changes (disturbance)
    "ambient_step",  # heat-sink temperature changes
    "anode_change",  # an anode is replaced: gap jumps, cold mass enters
    "loop_local",  # DCS operator takes a loop to local for a while
    "dcs_heartbeat_freeze",  # DCS heartbeat stops counting for a while
    "output_limit",  # a DCS loop's output is capped for a while (rectifier, feeder, anode travel)
    "compute_stall",  # the unit's estimator and controller do not answer for duration_s seconds
    "compute_crash",  # the process computing the unit's estimator and controller dies
)
COMPUTE_FAULTS = {"compute_stall": "stall", "compute_crash": "crash"}
"""Events that make the unit's computation (not the plant) misbehave, and the fault each injects."""


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
    loop's high limit (current kA, feed kg/h, anode position cm); input_fault spike: the outlier."""
    duration_s: float = 0.0
    """compute_stall: how long the computation does not answer (plant seconds)."""


@dataclass(frozen=True)
class Scenario:
    """Everything the simulated plant needs besides a seed."""

    name: str
    description: str = ""
    hours: float = 24.0
    plant_dt_s: float = 5.0
    oxide_band_wtpct: tuple[float, float] = (1.5, 3.0)
    plant_parameters: Mapping[str, float] = field(default_factory=dict)
    parameter_spread: Mapping[str, float] = field(default_factory=dict)
    """Relative standard deviation per parameter, drawn per seed (clipped at 3 sigma)."""
    initial: Mapping[str, float] = field(default_factory=dict)
    ambient_temp_degC: float = 30.0
    current_kA: float = 6.0
    current_ramp_kA_s: float = 0.02
    current_noise_kA: float = 0.004
    voltage_noise_V: float = 0.005
    bubble_noise_V: float = 0.03
    bubble_noise_tau_s: float = 20.0
    feeder_shot_kg: float = 0.25
    feeder_dead_time_s: float = 20.0
    wall_heat_capacity_kJ_K: float = 400.0
    wall_resistance_share: float = 0.4
    """Share of the bath-to-ambient resistance between bath and wall node."""
    ae_recover_margin_A_cm2: float = 0.05
    tap_interval_h: float = 8.0
    tap_heel_kg: float = 30.0
    dip_interval_h: float = 2.0
    dip_duration_s: float = 120.0
    dip_tau_s: float = 20.0
    dip_noise_degC: float = 1.5
    lab_interval_h: float = 4.0
    lab_delay_h: float = 1.0
    lab_noise_wtpct: float = 0.05
    dcs_shed_timeout_s: float = 30.0
    dcs_local_feed_kg_h: float = 9.2
    dcs_heartbeat_period_s: float = 1.0
    events: tuple[Event, ...] = ()


def _check_keys(cls: type, data: Mapping[str, Any], where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")


def scenario_from_mapping(data: Mapping[str, Any], where: str) -> Scenario:
    """Build a scenario from parsed YAML, with errors naming ``where`` and the key."""
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{where}: top level must be a mapping")
    _check_keys(Scenario, data, where)
    kwargs: dict[str, Any] = dict(data)
    events = []
    for i, ev in enumerate(data.get("events", []) or []):
        if not isinstance(ev, Mapping):
            raise ScenarioError(f"{where}: events[{i}] must be a mapping")
        _check_keys(Event, ev, f"{where}: events[{i}]")
        if ev.get("kind") not in EVENT_KINDS:
            raise ScenarioError(f"{where}: events[{i}].kind must be one of {EVENT_KINDS}")
        try:
            events.append(Event(**ev))
        except TypeError as exc:
            raise ScenarioError(f"{where}: events[{i}]: {exc}") from None
    kwargs["events"] = tuple(sorted(events, key=lambda e: e.at_h))
    if "oxide_band_wtpct" in kwargs:
        lo, hi = (float(v) for v in kwargs["oxide_band_wtpct"])
        if not lo < hi:
            raise ScenarioError(f"{where}: oxide_band_wtpct must be [low, high]")
        kwargs["oxide_band_wtpct"] = (lo, hi)
    for key in ("plant_parameters", "parameter_spread", "initial"):
        if key in kwargs:
            kwargs[key] = {str(k): float(v) for k, v in (kwargs[key] or {}).items()}
    try:
        return Scenario(**kwargs)
    except TypeError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def load_scenario(name_or_path: str) -> Scenario:
    """Load ``sim/scenarios/NAME.yaml`` (or a path to a YAML file)."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = SCENARIO_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))
        raise ScenarioError(f"scenario {name_or_path!r} not found; shipped scenarios: {known}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path.name}: {exc}") from None
    return scenario_from_mapping(data, path.name)


def scenario_names() -> tuple[str, ...]:
    """Names of the shipped scenarios."""
    return tuple(sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml")))


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
