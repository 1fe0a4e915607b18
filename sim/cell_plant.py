"""The "true" electrolysis cell: the shared model plus what controllers never see.

On top of :mod:`sim.models.nd_cell` the plant adds a wall node between bath
and ambient, sludge settling into a permanent pool, shot feeding with a dead
time, a rectifier that ramps, bubble (coloured) voltage noise, latched anode
effects with hysteresis, thermocouple dips with lag, delayed oxide lab
samples, metal tapping (with per-seed time and heel jitter) and timed scenario events (also drawn per
seed from the scenario's event series): current orders, ambient steps, anode changes (gap jump, instant
3 K drop and the cold anode's heat drawn over time), feeder bias and blockages, feed oxide quality and
thermocouple drift. Its parameters are drawn
per seed around the nominal ones. Everything is seeded and reproducible.
"""

from __future__ import annotations

import math
from collections import deque

import casadi as ca
import numpy as np

from sim.models import get_model
from sim.models.base import ProcessModel, rk4
from sim.models.buffered import BufferedFunction
from sim.models.nd_cell import F_C_PER_MOL, M_ND_KG_PER_MOL
from sim.plant_events import Reading, ScenarioEvents, draw_parameters, expand_series
from sim.scenario import Event, Scenario

MODEL_NAME = "nd_electrolysis_cell"
# Extra plant states after the model's: wall temperature, then integrals.
_EXTRA = ("wall_temp_degC", "sludge_kg", "metal_made_kg", "charge_kAh", "energy_kWh", "pfc_kg_co2e")


def _plant_step_function(model: ProcessModel, dt_s: float) -> ca.Function:
    """RK4 over the model plus wall node and integrals, one CasADi call per step."""
    nx = len(model.states)
    xa = ca.SX.sym("xa", nx + len(_EXTRA))
    u = ca.SX.sym("u", len(model.inputs))
    d = ca.SX.sym("d", len(model.disturbances))  # d[0] = ambient (true heat sink)
    p = ca.SX.sym("p", len(model.parameters))
    wall = ca.SX.sym("wall", 3)  # R_bath_wall K/kW, R_wall_amb K/kW, C_wall kJ/K
    i_rloss = model.parameter_names.index("heat_loss_resistance_K_kW")
    i_ksl = model.parameter_names.index("sludge_settling_1_s")
    i_mu = model.state_names.index("undissolved_oxide_kg")
    i_tb = model.state_names.index("bath_temp_degC")
    i_tm = model.state_names.index("metal_temp_degC")
    aux_index = {n: i for i, n in enumerate(model.aux_names)}

    def rhs(z: ca.SX) -> ca.SX:
        x = z[:nx]
        t_wall = z[nx]
        p_bath = ca.vertcat(p[:i_rloss], wall[0], p[i_rloss + 1 :])
        d_bath = ca.vertcat(t_wall, d[1:])
        xdot = model.f(x, u, d_bath, p_bath)
        # Only the bath loses heat through the wall node; the metal/crucible node keeps
        # losing to the true ambient (as in the model), else the plant settles ~20 K hotter.
        xdot_metal = model.f(x, u, d, p)[i_tm]
        xdot = ca.vertcat(xdot[:i_tm], xdot_metal, xdot[i_tm + 1 :])
        a = model.aux(x, u, d_bath, p_bath)
        q_in = (x[i_tb] - t_wall) / wall[0]
        q_out = (t_wall - d[0]) / wall[1]
        return ca.vertcat(
            xdot,
            (q_in - q_out) / wall[2],
            p[i_ksl] * x[i_mu],
            a[aux_index["metal_rate_kg_h"]] / 3600.0,
            u[0] / 3600.0,
            a[aux_index["power_kW"]] / 3600.0,
            a[aux_index["pfc_rate_kgco2e_h"]] / 3600.0,
        )

    return ca.Function("cell_plant_step", [xa, u, d, p, wall], rk4(rhs, xa, dt_s))


class CellPlant:
    """Simulated Nd electrolysis cell driven by DCS-level inputs.

    Inputs are what the DCS applies: the rectifier current setpoint, the
    feeder rate setpoint and discrete anode moves. Time is plant seconds from
    the start; :meth:`advance_to` integrates in fixed ``plant_dt_s`` steps.
    """

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self.seed = seed
        self.model = get_model(MODEL_NAME)
        self.params = draw_parameters(self.model, scenario.plant_parameters, scenario.parameter_spread, seed,
                                      scenario.name)
        self._p = np.array([self.params[n] for n in self.model.parameter_names])
        self._dt = scenario.plant_dt_s
        self._step = BufferedFunction(_plant_step_function(self.model, self._dt))
        self._aux_fn = BufferedFunction(self.model.aux)
        r_total = self.params["heat_loss_resistance_K_kW"]
        share = scenario.wall_resistance_share
        self._wall = np.array([r_total * share, r_total * (1.0 - share), scenario.wall_heat_capacity_kJ_K])
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
        self._aux_index = {n: i for i, n in enumerate(self.model.aux_names)}
        self._x = self._initial_state()
        self.t_s = 0.0
        # Actuators.
        self.current_sp_kA = scenario.current_kA
        self.current_kA = scenario.current_kA
        self.feed_sp_kg_h = 0.0
        self._feed_acc_kg = 0.0
        self._shots: deque[float] = deque()  # landing times
        self._pending_move_cm = 0.0
        self.anode_position_cm = 0.0
        self.anode_effect = False
        self.metal_tapped_kg = 0.0
        self.oxide_fed_kg = 0.0
        """Oxide that reached the bath (what the feeder delivered, times its oxide content)."""
        self._ambient = scenario.ambient_temp_degC
        # Measurements.
        self._bubble_V = 0.0
        self._dip: Reading | None = None
        self._lab: Reading | None = None
        self._lab_queue: deque[tuple[float, float, float]] = deque()  # (report_t, sample_t, value)
        self._next_dip_t = scenario.dip_interval_h * 3600.0
        self._next_lab_t = scenario.lab_interval_h * 3600.0
        self._tap_rng = np.random.default_rng(np.random.SeedSequence([seed, 4]))
        self._taps = 1  # the next tap's number: due at taps x interval (+ jitter)
        self._next_tap_t = scenario.tap_interval_h * 3600.0 + self._tap_jitter_s()
        self._cold_anodes: list[tuple[float, float]] = []  # (heat still to draw kJ, time constant s)
        series = expand_series(scenario.event_series, seed, scenario.current_kA, self._dt) \
            if scenario.event_series else ()
        self._events = ScenarioEvents(scenario.events + series)
        self._aux = self._eval_aux()
        self._voltage_meas = self._aux[self._aux_index["cell_voltage_V"]]

    # ----------------------------------------------------------------- setup
    def _initial_state(self) -> np.ndarray:
        init = dict(self.scenario.initial)
        bath_kg = self.params["bath_mass_kg"]
        x = {
            "dissolved_oxide_kg": init.get("dissolved_oxide_wtpct", 2.0) * bath_kg / 100.0,
            "undissolved_oxide_kg": init.get("undissolved_oxide_kg", 2.0),
            "bath_temp_degC": init.get("bath_temp_degC", 1050.0),
            "metal_temp_degC": init.get("metal_temp_degC", 1035.0),
            "acd_cm": init.get("acd_cm", 8.0),
            "metal_pool_kg": init.get("metal_pool_kg", 40.0),
        }
        t_b = x["bath_temp_degC"]
        share = self.scenario.wall_resistance_share
        t_wall = t_b - share * (t_b - self.scenario.ambient_temp_degC)
        extra = [t_wall, 0.0, 0.0, 0.0, 0.0, 0.0]
        return np.array([x[n] for n in self.model.state_names] + extra, dtype=float)

    # --------------------------------------------------------------- inputs
    def set_current_sp(self, current_kA: float) -> None:
        """Rectifier current setpoint (the rectifier ramps to it)."""
        self.current_sp_kA = float(current_kA)

    def set_feed_rate(self, feed_kg_h: float) -> None:
        """Feeder rate setpoint; the feeder turns it into shots."""
        self.feed_sp_kg_h = max(0.0, float(feed_kg_h))

    def move_anode(self, delta_cm: float) -> None:
        """Move the anode toward the cathode by ``delta_cm`` (executed next step)."""
        self._pending_move_cm += float(delta_cm)

    # ------------------------------------------------------------- dynamics
    def _eval_aux(self) -> np.ndarray:
        nx = len(self.model.states)
        x = self._x[:nx]
        d = (self._x[nx], 0.0, 1.0 if self.anode_effect else 0.0)
        return self._aux_fn(x, (self.current_kA, 0.0, 0.0), d, self._p)[0].reshape(-1)

    def _events_due(self) -> None:
        for ev in self._events.due(self.t_s, self._dt):
            if ev.kind == "current_order":
                self.current_sp_kA = ev.value
            elif ev.kind == "current_step":
                self.current_sp_kA += ev.value
            elif ev.kind == "ambient_step":
                self._ambient = ev.value
            elif ev.kind == "anode_change":
                self._x[self.model.state_names.index("acd_cm")] += ev.value
                self._x[self.model.state_names.index("bath_temp_degC")] -= 3.0
                if ev.heat_kJ > 0.0:
                    self._cold_anodes.append((ev.heat_kJ, max(ev.duration_h * 3600.0, self._dt)))
        if self._cold_anodes:
            self._cold_anode_heat()

    def _cold_anode_heat(self) -> None:
        """Each new anode draws its heat from the bath, first order over its time constant."""
        drawn = 0.0
        left = []
        for heat_kJ, tau_s in self._cold_anodes:
            q = heat_kJ * (1.0 - math.exp(-self._dt / tau_s))
            drawn += q
            if heat_kJ - q > 1.0:
                left.append((heat_kJ - q, tau_s))
        self._cold_anodes = left
        self._x[self.model.state_names.index("bath_temp_degC")] -= drawn / self.params["bath_heat_capacity_kJ_K"]

    def _tap_jitter_s(self) -> float:
        j = self.scenario.tap_time_jitter_h
        return j * 3600.0 * float(self._tap_rng.uniform(-1.0, 1.0)) if j > 0.0 else 0.0

    def _tap_heel_kg(self) -> float:
        j = self.scenario.tap_heel_jitter_kg
        return self.scenario.tap_heel_kg + (j * float(self._tap_rng.uniform(-1.0, 1.0)) if j > 0.0 else 0.0)

    def _feeder_factor(self) -> float:
        """What the feeder delivers per kg commanded now (bias, 0 while blocked)."""
        if self._events.active("feeder_blocked", self.t_s):
            return 0.0
        return self._events.factor("feeder_bias", self.t_s)

    def active_events(self, kind: str) -> list[Event]:
        """Events of ``kind`` in force now (for the DCS side and measurements)."""
        return self._events.active(kind, self.t_s)

    def _one_step(self) -> None:
        dt = self._dt
        sc = self.scenario
        self._events_due()
        # Rectifier ramp.
        step = sc.current_ramp_kA_s * dt
        self.current_kA += min(max(self.current_sp_kA - self.current_kA, -step), step)
        # Feeder: accumulate, drop shots, deliver after the dead time.
        self._feed_acc_kg += self.feed_sp_kg_h * self._feeder_factor() * dt / 3600.0
        while self._feed_acc_kg >= sc.feeder_shot_kg:
            self._feed_acc_kg -= sc.feeder_shot_kg
            self._shots.append(self.t_s + sc.feeder_dead_time_s)
        landed = 0.0
        while self._shots and self._shots[0] < self.t_s + dt:
            self._shots.popleft()
            landed += sc.feeder_shot_kg
        feed_kg_h = landed * self._events.factor("oxide_quality", self.t_s) * 3600.0 / dt
        self.oxide_fed_kg += feed_kg_h * dt / 3600.0
        move_cm_h = self._pending_move_cm * 3600.0 / dt
        self.anode_position_cm += self._pending_move_cm
        self._pending_move_cm = 0.0
        # Anode effect latch with hysteresis.
        margin = self._aux[self._aux_index["ae_margin_A_cm2"]]
        if not self.anode_effect and margin < 0.0:
            self.anode_effect = True
        elif self.anode_effect and margin > sc.ae_recover_margin_A_cm2:
            self.anode_effect = False
        tap_kg_h = 0.0
        if self.t_s + dt > self._next_tap_t:
            pool = self._x[self.model.state_names.index("metal_pool_kg")]
            tapped = max(0.0, pool - self._tap_heel_kg())
            tap_kg_h = tapped * 3600.0 / dt
            self.metal_tapped_kg += tapped
            self._taps += 1
            self._next_tap_t = self._taps * sc.tap_interval_h * 3600.0 + self._tap_jitter_s()
        u = [self.current_kA, feed_kg_h, move_cm_h]
        d = [self._ambient, tap_kg_h, 1.0 if self.anode_effect else 0.0]
        self._x = self._step(self._x, u, d, self._p, self._wall)[0].reshape(-1)
        self.t_s += dt
        self._aux = self._eval_aux()
        self._measure(dt)

    def _measure(self, dt: float) -> None:
        sc = self.scenario
        rng = self._rng
        a = math.exp(-dt / sc.bubble_noise_tau_s)
        self._bubble_V = a * self._bubble_V + sc.bubble_noise_V * math.sqrt(1 - a * a) * rng.standard_normal()
        extra = 5.0 * self._bubble_V if self.anode_effect else 0.0
        self._voltage_meas = (
            self._aux[self._aux_index["cell_voltage_V"]] + self._bubble_V + extra
            + sc.voltage_noise_V * rng.standard_normal()
        )
        self._current_meas = self.current_kA + sc.current_noise_kA * rng.standard_normal()
        t_b = self._x[self.model.state_names.index("bath_temp_degC")]
        if self.t_s >= self._next_dip_t + sc.dip_duration_s:
            # Thermocouple from ambient, first-order lag over the dip, plus noise.
            lag = (t_b - sc.ambient_temp_degC) * math.exp(-sc.dip_duration_s / sc.dip_tau_s)
            value = (t_b - lag + sc.dip_noise_degC * rng.standard_normal()
                     + self._events.drift("thermocouple_drift", self.t_s))
            self._dip = Reading(value, "good", self._next_dip_t)
            self._next_dip_t += sc.dip_interval_h * 3600.0
        if self.t_s >= self._next_lab_t:
            c = self._aux[self._aux_index["dissolved_oxide_wtpct"]]
            value = c + sc.lab_noise_wtpct * rng.standard_normal()
            self._lab_queue.append((self._next_lab_t + sc.lab_delay_h * 3600.0, self._next_lab_t, value))
            self._next_lab_t += sc.lab_interval_h * 3600.0
        while self._lab_queue and self._lab_queue[0][0] <= self.t_s:
            _, t_sample, value = self._lab_queue.popleft()
            self._lab = Reading(value, "good", t_sample)

    def advance_to(self, t_s: float) -> None:
        """Integrate until plant time reaches ``t_s`` (in whole plant steps)."""
        while self.t_s + 1e-9 < t_s:
            self._one_step()

    # ------------------------------------------------------------- outputs
    def measurements(self) -> dict[str, Reading]:
        """What the field instruments report now (dips and lab results may be absent)."""
        out = {
            "cell_voltage_V": Reading(self._voltage_meas, "good"),
            "current_kA": Reading(self._current_meas if self.t_s > 0 else self.current_kA, "good"),
            "anode_position_cm": Reading(self.anode_position_cm, "good"),
            "metal_tapped_kg": Reading(self.metal_tapped_kg, "good"),
        }
        if self._dip is not None:
            out["bath_temp_dip_degC"] = self._dip
        if self._lab is not None:
            out["oxide_lab_wtpct"] = self._lab
        return {name: self._events.reading(name, r, self.t_s) for name, r in out.items()}

    def truth(self) -> dict[str, float]:
        """The simulator's truth, for KPIs and estimator benchmarks only."""
        nx = len(self.model.states)
        x = dict(zip(self.model.state_names, (float(v) for v in self._x[:nx])))
        extra = dict(zip(_EXTRA, (float(v) for v in self._x[nx:])))
        a = dict(zip(self.model.aux_names, (float(v) for v in self._aux)))
        return {
            "t_s": self.t_s,
            "bath_temp_degC": x["bath_temp_degC"],
            "metal_temp_degC": x["metal_temp_degC"],
            "dissolved_oxide_wtpct": a["dissolved_oxide_wtpct"],
            "undissolved_oxide_kg": x["undissolved_oxide_kg"],
            "acd_cm": x["acd_cm"],
            "metal_pool_kg": x["metal_pool_kg"],
            "wall_temp_degC": extra["wall_temp_degC"],
            "cell_voltage_V": a["cell_voltage_V"],
            "current_kA": self.current_kA,
            "current_efficiency": a["current_efficiency"],
            "ae_margin_A_cm2": a["ae_margin_A_cm2"],
            "anode_effect": 1.0 if self.anode_effect else 0.0,
            "metal_kg": extra["metal_made_kg"],
            "charge_kAh": extra["charge_kAh"],
            "energy_kWh": extra["energy_kWh"],
            "pfc_kg_co2e": extra["pfc_kg_co2e"],
            "sludge_kg": extra["sludge_kg"],
            "metal_below_melting": 1.0 if x["metal_temp_degC"] < self.params["metal_melting_degC"] else 0.0,
        }


FARADAY_ND_KG_PER_KAH = 1000.0 * 3600.0 * M_ND_KG_PER_MOL / (3.0 * F_C_PER_MOL)
