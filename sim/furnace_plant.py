"""The "true" furnaces: a registered furnace model plus what controllers never see.

One class serves both furnaces (vacuum induction melting, coil annealing): the
scenario names the model, the per-seed spread of its parameters (load mass,
coupling, losses …), the disturbances, the measurement noise and the
actuator lag. The plant integrates the model by RK4 in fixed steps with the
true (drawn) parameters, lags each MV through its actuator, adds seeded
noise to every measured output and keeps the energy drawn. Everything is
reproducible from the seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import casadi as ca
import numpy as np

from sim.models import get_model
from sim.models.base import rk4
from sim.plant_events import Reading, ScenarioEvents, draw_parameters
from sim.scenario_loader import Event, ScenarioError, load_scenario_file, scenario_from_mapping

FURNACE_SCENARIO_DIR = Path(__file__).with_name("scenarios") / "furnace"
FURNACE_EVENT_KINDS = ("input_fault", "dcs_heartbeat_freeze", "loop_local", "compute_stall", "compute_crash")


@dataclass(frozen=True)
class LocalPi:
    """The DCS's own temperature loop, in force while the APC does not drive the MV."""

    measurement: str
    """Measured output the DCS holds (at its value when the APC let go)."""
    kp: float
    """MV units per K."""
    ti_s: float


@dataclass(frozen=True)
class FurnaceScenario:
    """Everything a simulated furnace needs besides a seed."""

    name: str
    model: str
    description: str = ""
    plant_dt_s: float = 5.0
    plant_parameters: Mapping[str, float] = field(default_factory=dict)
    parameter_spread: Mapping[str, float] = field(default_factory=dict)
    """Relative standard deviation per parameter, drawn per seed (clipped at 3 sigma)."""
    initial: Mapping[str, float] = field(default_factory=dict)
    """Initial states by name (others start at the model's ``initial_state`` or 0)."""
    disturbances: Mapping[str, float] = field(default_factory=dict)
    noise: Mapping[str, float] = field(default_factory=dict)
    """Standard deviation per measured output (absolute)."""
    relative_noise: Mapping[str, float] = field(default_factory=dict)
    """Relative standard deviation per measured output (e.g. vacuum gauges)."""
    actuator_lag_s: Mapping[str, float] = field(default_factory=dict)
    """First-order lag from setpoint to applied value per model input."""
    initial_inputs: Mapping[str, float] = field(default_factory=dict)
    local_pi: Mapping[str, LocalPi] = field(default_factory=dict)
    """DCS fallback per model input: a PI holding a measured temperature (else hold the MV)."""
    output_limits: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """What each DCS loop can deliver per model input (e.g. converter power 0–200 kW)."""
    dcs_shed_timeout_s: float = 30.0
    dcs_heartbeat_period_s: float = 1.0
    events: tuple[Event, ...] = ()


def furnace_scenario_from_mapping(data: Mapping[str, Any], where: str) -> FurnaceScenario:
    """Build a furnace scenario from parsed YAML, with errors naming ``where`` and the key."""
    sc = scenario_from_mapping(FurnaceScenario, data, where, FURNACE_EVENT_KINDS)
    try:
        get_model(sc.model)
    except KeyError as exc:
        raise ScenarioError(f"{where}: model: {exc}") from None
    return sc


def load_furnace_scenario(name_or_path: str) -> FurnaceScenario:
    """Load ``sim/scenarios/furnace/NAME.yaml`` (or a path to a YAML file)."""
    return load_scenario_file(name_or_path, FURNACE_SCENARIO_DIR, furnace_scenario_from_mapping, "furnace scenario")


def _step_function(model_name: str, dt_s: float) -> ca.Function:
    """RK4 of the model plus the energy integral (kWh of every input named ``*_kW``)."""
    m = get_model(model_name)
    nx = len(m.states)
    z = ca.SX.sym("z", nx + 1)
    u = ca.SX.sym("u", len(m.inputs))
    d = ca.SX.sym("d", len(m.disturbances))
    p = ca.SX.sym("p", len(m.parameters))
    power = sum((u[i] for i, n in enumerate(m.input_names) if n.endswith("_kW")), ca.SX(0))

    def rhs(zz: ca.SX) -> ca.SX:
        return ca.vertcat(m.f(zz[:nx], u, d, p), power / 3600.0)

    return ca.Function(f"{model_name}_plant_step", [z, u, d, p], rk4(rhs, z, dt_s))


class FurnacePlant:
    """Simulated furnace driven by DCS-level inputs (setpoints of its model inputs)."""

    def __init__(self, scenario: FurnaceScenario, seed: int) -> None:
        self.scenario = scenario
        self.seed = seed
        self.model = m = get_model(scenario.model)
        self.params = draw_parameters(m, scenario.plant_parameters, scenario.parameter_spread, seed, scenario.name)
        self._p = np.array([self.params[n] for n in m.parameter_names])
        self._dt = scenario.plant_dt_s
        self._step = _step_function(scenario.model, self._dt)
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
        unknown = sorted(set(scenario.initial) - set(m.state_names))
        if unknown:
            raise ScenarioError(f"{scenario.name}: initial names unknown states {unknown}")
        self._z = np.array([float(scenario.initial.get(n, 0.0)) for n in m.state_names] + [0.0])
        self._d = np.array([float(scenario.disturbances.get(n, 0.0)) for n in m.disturbance_names])
        self.setpoints = {n: float(scenario.initial_inputs.get(n, 0.0)) for n in m.input_names}
        self.applied = dict(self.setpoints)
        self.t_s = 0.0
        self._events = ScenarioEvents(scenario.events)
        self._meas = self._measure_now()

    # --------------------------------------------------------------- inputs
    def set_input(self, name: str, value: float) -> None:
        """Setpoint of one model input (the actuator follows with its lag)."""
        if name not in self.setpoints:
            raise KeyError(f"{name!r} is not an input of {self.model.name!r}")
        self.setpoints[name] = float(value)

    # ------------------------------------------------------------- dynamics
    def active_events(self, kind: str) -> list[Event]:
        """Events of ``kind`` in force now."""
        return self._events.active(kind, self.t_s)

    def _one_step(self) -> None:
        dt = self._dt
        self._events.due(self.t_s, dt)  # furnace events all act through active_events and readings
        for name, sp in self.setpoints.items():
            tau = self.scenario.actuator_lag_s.get(name, 0.0)
            a = 1.0 - math.exp(-dt / tau) if tau > 0 else 1.0
            self.applied[name] += a * (sp - self.applied[name])
        u = [self.applied[n] for n in self.model.input_names]
        self._z = np.asarray(self._step(self._z, u, self._d, self._p)).ravel()
        self.t_s += dt
        self._meas = self._measure_now()

    def advance_to(self, t_s: float) -> None:
        """Integrate until plant time reaches ``t_s`` (in whole plant steps)."""
        while self.t_s + 1e-9 < t_s:
            self._one_step()

    def _measure_now(self) -> dict[str, float]:
        m, sc = self.model, self.scenario
        nx = len(m.states)
        u = [self.applied[n] for n in m.input_names]
        y = np.asarray(m.h(self._z[:nx], u, self._d, self._p)).ravel()
        out = {}
        for name, v in zip(m.output_names, y):
            noisy = float(v) * (1.0 + sc.relative_noise.get(name, 0.0) * self._rng.standard_normal())
            out[name] = noisy + sc.noise.get(name, 0.0) * self._rng.standard_normal()
        return out

    # ------------------------------------------------------------- outputs
    def measurements(self) -> dict[str, Reading]:
        """What the field instruments report now (with scenario faults applied)."""
        return {name: self._events.reading(name, Reading(value, "good"), self.t_s)
                for name, value in self._meas.items()}

    def truth(self) -> dict[str, float]:
        """States, aux signals and energy: for KPIs and benchmarks only."""
        m = self.model
        nx = len(m.states)
        u = [self.applied[n] for n in m.input_names]
        a = np.asarray(m.aux(self._z[:nx], u, self._d, self._p)).ravel()
        out = {"t_s": self.t_s, "energy_kWh": float(self._z[nx])}
        out.update(zip(m.state_names, (float(v) for v in self._z[:nx])))
        out.update(zip(m.aux_names, (float(v) for v in a)))
        out.update({f"applied_{n}": v for n, v in self.applied.items()})
        return out
