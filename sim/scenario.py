"""Scenarios: what the simulated plant does, independent of any controller.

A scenario (``sim/scenarios/NAME.yaml``) fixes the plant's sampling regime,
noise, per-seed parameter spread, tapping, DCS fallback behaviour and timed
events. It never contains controller tuning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.scenario_loader import COMPUTE_FAULTS, ComputeFaultFeed, Event, EventSeries, ScenarioError, load_scenario_file
from sim.scenario_loader import scenario_from_mapping as from_mapping

__all__ = ["COMPUTE_FAULTS", "EVENT_KINDS", "SCENARIO_DIR", "SERIES_KINDS", "ComputeFaultFeed", "Event", "EventSeries",
           "Scenario", "ScenarioError", "load_scenario", "scenario_from_mapping", "scenario_names"]

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
    "feeder_bias",  # the feeder delivers (1 + value) x what it is commanded (calibration error)
    "feeder_blocked",  # the feeder delivers nothing (plugged), unknown to the DCS
    "oxide_quality",  # the feed's oxide content is (1 + value) x nominal (purity, moisture)
    "thermocouple_drift",  # the dip thermocouple reads value degC/h x time since the event began too high
    "current_step",  # the rectifier setpoint moves by value kA (a step of an ordered ramp)
)

SERIES_KINDS = (*EVENT_KINDS, "rectifier_order")
"""Kinds an ``event_series`` may draw: the event kinds plus ``rectifier_order``: the grid orders the
line current down to ``value`` kA for ``duration_h``. The rectifier's output is capped
(``output_limit`` on ``current``) by a cap ramping from ``cap_from_kA`` down to ``value`` at
``ramp_kA_s``, held to the order's end; then ``current_step`` events ramp the setpoint back up by
``current_kA - value`` at the same rate. Whoever writes the current follows it within its own rate;
a line current nobody writes goes down to the order and back to ``current_kA``."""


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
    tap_time_jitter_h: float = 0.0
    """Each tap happens up to ± this late or early (uniform, drawn per seed)."""
    tap_heel_jitter_kg: float = 0.0
    """Each tap leaves the heel ± up to this (uniform, drawn per seed)."""
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
    event_series: Mapping[str, EventSeries] = field(default_factory=dict)
    """Recurring events drawn per seed (see :class:`EventSeries`), added to ``events``."""


def scenario_from_mapping(data: Mapping[str, Any], where: str) -> Scenario:
    """Build a cell scenario from parsed YAML, with errors naming ``where`` and the key."""
    sc = from_mapping(Scenario, data, where, EVENT_KINDS)
    for name, series in sc.event_series.items():
        if series.kind not in SERIES_KINDS:
            raise ScenarioError(f"{where}: event_series.{name}.kind must be one of {SERIES_KINDS}")
        if not series.every_h > 0.0:
            raise ScenarioError(f"{where}: event_series.{name}.every_h must be > 0")
        if series.jitter_h >= 0.5 * series.every_h:
            raise ScenarioError(f"{where}: event_series.{name}.jitter_h must be < every_h / 2")
    return sc


def load_scenario(name_or_path: str) -> Scenario:
    """Load ``sim/scenarios/NAME.yaml`` (or a path to a YAML file)."""
    return load_scenario_file(name_or_path, SCENARIO_DIR, scenario_from_mapping)


def scenario_names() -> tuple[str, ...]:
    """Names of the shipped scenarios."""
    return tuple(sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml")))
