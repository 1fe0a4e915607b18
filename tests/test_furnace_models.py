"""Tests for the furnace models (sim.models.vim_furnace, sim.models.annealing_furnace).

Physics and sources: ../shared/reference/process_models.md §3 and docs/furnace_models.md.
"""

from __future__ import annotations

import itertools
import math

import casadi as ca
import numpy as np
import pytest

from sim.models import get_model, model_names
from sim.models.base import ProcessModel
from sim.models.vim_furnace import ENTHALPY_REF_DEGC, M_ND_KG_PER_MOL, R_J_PER_MOL_K

VIM = get_model("vim_furnace")
ANN = get_model("annealing_furnace")
VP = dict(zip(VIM.parameter_names, VIM.parameter_vector()))
AP = dict(zip(ANN.parameter_names, ANN.parameter_vector()))
COOLING_WATER = 30.0
LEAK = 1e-3
AMBIENT = 25.0


def run(model: ProcessModel, x0: np.ndarray, u: list[float], d: list[float], dt_s: float, n: int,
        p: np.ndarray | None = None) -> np.ndarray:
    """States (n_x × (n+1)), x0 first, under constant u and d with RK4 steps of dt_s."""
    p_vec = model.parameter_vector() if p is None else p
    F = model.rk4_step(dt_s)
    xs = ca.SX.sym("x", len(model.states))
    step = ca.Function("step", [xs], [F(xs, ca.DM(u), ca.DM(d), ca.DM(p_vec))])
    X = np.asarray(step.mapaccum("run", n)(x0))
    return np.column_stack([x0, X])


def aux_along(model: ProcessModel, X: np.ndarray, u: list[float], d: list[float],
              p: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Named aux signals evaluated at every column of X."""
    p_vec = model.parameter_vector() if p is None else p
    A = np.asarray(model.aux.map(X.shape[1])(X, ca.DM(u), ca.DM(d), ca.DM(p_vec)))
    return dict(zip(model.aux_names, A))


def vim_enthalpy_MJ(temp_degC: float, liquid: bool) -> float:
    """Charge enthalpy for a temperature well away from the plateau corners (nominal parameters)."""
    m, tm = VP["charge_mass_kg"], VP["melting_point_degC"]
    if not liquid:
        return m * VP["solid_cp_kJ_kgK"] * (temp_degC - ENTHALPY_REF_DEGC) / 1000.0
    h_kJ = m * (VP["solid_cp_kJ_kgK"] * (tm - ENTHALPY_REF_DEGC) + VP["latent_heat_kJ_kg"]
                + VP["liquid_cp_kJ_kgK"] * (temp_degC - tm))
    return h_kJ / 1000.0


def vim_state(charge_degC: float = 25.0, liquid: bool = False, wall_degC: float | None = None,
              pressure_Pa: float = 0.05) -> np.ndarray:
    """VIM state vector from readable values (thermocouple at the charge temperature)."""
    return VIM.vector(VIM.state_names, {
        "charge_enthalpy_MJ": vim_enthalpy_MJ(charge_degC, liquid),
        "wall_temp_degC": charge_degC if wall_degC is None else wall_degC,
        "tc_temp_degC": charge_degC,
        "chamber_pressure_Pa": pressure_Pa,
        "evaporated_kg": 0.0,
    })


def vim_aux(x: np.ndarray, power_kW: float = 0.0) -> dict[str, float]:
    """Named VIM aux signals at one point."""
    a = np.asarray(VIM.aux(x, [power_kW], [COOLING_WATER, LEAK], VIM.parameter_vector())).ravel()
    return dict(zip(VIM.aux_names, (float(v) for v in a)))


def trapezoid(values: np.ndarray, dt_s: float) -> float:
    """Trapezoidal integral of equally spaced samples."""
    return float(dt_s * (values.sum() - 0.5 * (values[0] + values[-1])))


# ------------------------------------------------------------------ VIM: heat balance and melting
def test_vim_heat_balance_closes() -> None:
    """ΔH + C_w·ΔT_w equals ∫(η·P − cooling-water loss − evaporation heat) dt over heat-up, melt and cool-down."""
    dt = 1.0
    stored_kJ, supplied_kJ, net_kJ = 0.0, 0.0, 0.0
    x, max_liquid = vim_state(), 0.0
    i_h, i_w = VIM.state_names.index("charge_enthalpy_MJ"), VIM.state_names.index("wall_temp_degC")
    for power, n in ((200.0, 900), (40.0, 600), (0.0, 900)):
        X = run(VIM, x, [power], [COOLING_WATER, LEAK], dt, n)
        a = aux_along(VIM, X, [power], [COOLING_WATER, LEAK])
        max_liquid = max(max_liquid, float(a["liquid_fraction"].max()))
        evap_heat_kW = a["evaporation_rate_kg_h"] / 3600.0 * VP["heat_of_vaporisation_kJ_kg"]
        gain = VP["coupling_efficiency"] * power - a["cooling_water_loss_kW"] - evap_heat_kW
        supplied_kJ += trapezoid(gain, dt)
        net_kJ += trapezoid(a["net_heat_kW"], dt)
        stored_kJ += 1000.0 * (X[i_h, -1] - X[i_h, 0]) + VP["wall_heat_capacity_kJ_K"] * (X[i_w, -1] - X[i_w, 0])
        x = X[:, -1]
    assert max_liquid > 0.999 and vim_aux(x)["liquid_fraction"] < 0.01  # melted and froze again
    assert supplied_kJ > 5e4
    assert stored_kJ == pytest.approx(supplied_kJ, rel=1e-5)
    h_change_kJ = 1000.0 * (x[i_h] - vim_state()[i_h])
    assert net_kJ == pytest.approx(h_change_kJ, rel=1e-4, abs=1.0)


def test_vim_melting_plateau_lasts_latent_heat_over_net_power() -> None:
    """At constant net heat the charge stays within 1.5 K of the melting point for m·L/q while melting 0→1."""
    p = VIM.parameter_vector({"charge_wall_htc_kW_K": 0.0, "charge_emissivity": 0.0, "evaporation_coefficient": 0.0})
    power, dt = 100.0, 0.25
    q_net = VP["coupling_efficiency"] * power
    n = int(300 / dt)
    X = run(VIM, vim_state(990.0), [power], [COOLING_WATER, LEAK], dt, n, p)
    a = aux_along(VIM, X, [power], [COOLING_WATER, LEAK], p)
    assert np.allclose(a["net_heat_kW"], q_net, rtol=1e-9)
    t, T, phi = np.arange(n + 1) * dt, a["charge_temp_degC"], a["liquid_fraction"]
    melting = (phi > 0.02) & (phi < 0.98)
    assert np.all(np.abs(T[melting] - VP["melting_point_degC"]) < 1.5)
    assert phi[0] < 1e-3 and phi[-1] > 0.999
    duration = np.interp(0.99, phi, t) - np.interp(0.01, phi, t)
    expected = 0.98 * VP["charge_mass_kg"] * VP["latent_heat_kJ_kg"] / q_net
    assert duration == pytest.approx(expected, rel=0.02)
    # Sensible heating either side of the plateau: q / (m·c_solid) and q / (m·c_liquid).
    rate = np.gradient(T, dt) * 60.0
    solid, liquid = t < np.interp(0.001, phi, t) - 5.0, t > np.interp(0.999, phi, t) + 5.0
    assert np.allclose(rate[solid], 60.0 * q_net / (VP["charge_mass_kg"] * VP["solid_cp_kJ_kgK"]), rtol=0.01)
    assert np.allclose(rate[liquid], 60.0 * q_net / (VP["charge_mass_kg"] * VP["liquid_cp_kJ_kgK"]), rtol=0.01)


def test_vim_thermocouple_lags_a_steady_ramp_by_rate_times_tau() -> None:
    """Under a steady solid-charge ramp the thermocouple reads low by heating rate × τ_tc."""
    p = VIM.parameter_vector({"charge_wall_htc_kW_K": 0.0, "charge_emissivity": 0.0})
    X = run(VIM, vim_state(), [100.0], [COOLING_WATER, LEAK], 0.5, int(15 * VP["tc_time_constant_s"] / 0.5), p)
    a = aux_along(VIM, X[:, -1:], [100.0], [COOLING_WATER, LEAK], p)
    lag = a["charge_temp_degC"][0] - X[VIM.state_names.index("tc_temp_degC"), -1]
    assert lag == pytest.approx(a["charge_heating_rate_K_min"][0] / 60.0 * VP["tc_time_constant_s"], rel=1e-3)


def test_vim_zero_power_relaxes_to_cooling_water() -> None:
    """With no power a molten 1100 °C charge cools to the cooling-water temperature; pressure to (leak+outgas)/S."""
    X = run(VIM, vim_state(1100.0, liquid=True, wall_degC=880.0, pressure_Pa=0.3),
            [0.0], [COOLING_WATER, LEAK], 10.0, int(24 * 3600 / 10.0))
    x_end = X[:, -1]
    a = vim_aux(x_end)
    assert a["charge_temp_degC"] == pytest.approx(COOLING_WATER, abs=0.2)
    assert x_end[VIM.state_names.index("wall_temp_degC")] == pytest.approx(COOLING_WATER, abs=0.2)
    assert x_end[VIM.state_names.index("tc_temp_degC")] == pytest.approx(COOLING_WATER, abs=0.2)
    assert a["liquid_fraction"] < 1e-6
    base_gas = LEAK + VP["outgassing_base_Pa_m3_s"] * math.exp((COOLING_WATER - ENTHALPY_REF_DEGC)
                                                              / VP["outgassing_temp_scale_K"])
    assert x_end[VIM.state_names.index("chamber_pressure_Pa")] == pytest.approx(
        base_gas / VP["pump_speed_m3_s"], rel=0.01)
    xdot = np.asarray(VIM.f(x_end, [0.0], [COOLING_WATER, LEAK], VIM.parameter_vector())).ravel()
    assert np.all(np.abs(xdot[:4]) < 1e-5)


# ------------------------------------------------------------------ VIM: pressure and evaporation
def test_vim_pressure_rises_with_heating_rate_and_falls_back() -> None:
    """Faster heating gives higher pressure; when the power stops the pressure falls back within minutes."""
    i_p = VIM.state_names.index("chamber_pressure_Pa")
    peaks, rates = [], []
    for power in (50.0, 100.0, 200.0):
        X = run(VIM, vim_state(), [power], [COOLING_WATER, LEAK], 1.0, 90)
        peaks.append(X[i_p, -1])
        rates.append(vim_aux(X[:, -1], power)["charge_heating_rate_K_min"])
    assert rates[0] < rates[1] < rates[2]
    assert peaks[0] < peaks[1] < peaks[2]
    assert peaks[0] > 3.0 * 0.05  # well above the cold base pressure
    hot = X[:, -1]
    assert vim_aux(hot)["charge_temp_degC"] < 900.0  # still solid: a pure heating-rate effect
    Y = run(VIM, hot, [0.0], [COOLING_WATER, LEAK], 1.0, 180)
    assert Y[i_p, -1] < 0.2 * hot[i_p]
    assert vim_aux(Y[:, -1])["outgassing_Pa_m3_s"] < 0.2 * vim_aux(hot, 200.0)["outgassing_Pa_m3_s"]


def test_vim_evaporation_grows_with_temperature_and_falls_with_pressure() -> None:
    """Evaporation rises steeply with temperature (×>10 from 1100 to 1400 °C) and falls with chamber pressure."""
    temps = np.arange(1100.0, 1401.0, 50.0)
    by_temp = [vim_aux(vim_state(t, liquid=True, pressure_Pa=0.1))["evaporation_rate_kg_h"] for t in temps]
    assert all(b > a for a, b in itertools.pairwise(by_temp))
    assert by_temp[-1] > 10.0 * by_temp[0]
    pressures = [1e-3, 0.1, 1.0, 5.0, 20.0, 100.0]
    by_p = [vim_aux(vim_state(1300.0, liquid=True, pressure_Pa=q))["evaporation_rate_kg_h"] for q in pressures]
    assert all(b < a for a, b in itertools.pairwise(by_p))
    assert by_p[-1] < 0.05 * by_p[0]
    # In vacuum: Langmuir flux at 1 Pa vapour pressure (1595 K, handbook Nd) over the melt surface.
    t_ref = VP["vapour_pressure_ref_degC"]
    langmuir_kg_h = 3600.0 * VP["melt_surface_m2"] * math.sqrt(
        M_ND_KG_PER_MOL / (2.0 * math.pi * R_J_PER_MOL_K * (t_ref + 273.15)))
    at_ref = vim_aux(vim_state(t_ref, liquid=True, pressure_Pa=1e-4))["evaporation_rate_kg_h"]
    assert at_ref == pytest.approx(langmuir_kg_h, rel=1e-3)


# ------------------------------------------------------------------ annealer
def _annealer_capacities() -> tuple[float, float, float]:
    """Heat capacities (kJ/K) of the gas, surface and core nodes from the nominal parameters."""
    c_load = 1000.0 * AP["load_mass_t"] * AP["load_cp_kJ_kgK"]
    c_surface = AP["surface_mass_fraction"] * c_load
    return AP["furnace_heat_capacity_kJ_K"], c_surface, c_load - c_surface


def test_annealer_heat_balance_closes() -> None:
    """Σ C·ΔT over gas, surface and core equals ∫(P − loss) dt (full power, then reduced flow and no power)."""
    caps = np.array(_annealer_capacities())
    dt, x = 30.0, np.full(4, AMBIENT)
    stored, supplied = 0.0, 0.0
    for power, flow, hours in ((800.0, 1.0, 4.0), (0.0, 0.3, 4.0)):
        n = int(hours * 3600 / dt)
        X = run(ANN, x, [power, flow], [AMBIENT], dt, n)
        a = aux_along(ANN, X, [power, flow], [AMBIENT])
        assert np.allclose(a["net_heat_kW"], power - a["heat_loss_kW"])
        supplied += trapezoid(power - a["heat_loss_kW"], dt)
        stored += float(caps @ (X[:3, -1] - X[:3, 0]))
        x = X[:, -1]
    assert supplied > 1e6  # GJ scale: a meaningful run
    assert stored == pytest.approx(supplied, rel=1e-5)


def test_annealer_zero_power_relaxes_to_ambient() -> None:
    """With no heating a batch at 360 °C cools to ambient; all nodes and the thermocouple end within 0.5 K."""
    X = run(ANN, np.full(4, 360.0), [0.0, 1.0], [AMBIENT], 300.0, int(800 * 3600 / 300.0))
    assert np.all(np.abs(X[:, -1] - AMBIENT) < 0.5)
    assert np.all(np.diff(X[2]) <= 1e-9)  # the core only cools


def test_annealer_gas_flow_raises_heat_transfer() -> None:
    """Heat flow from gas to load rises strictly with the protective-gas circulation."""
    x = ANN.vector(ANN.state_names, {"gas_temp_degC": 400.0, "surface_temp_degC": 250.0,
                                     "core_temp_degC": 150.0, "load_tc_temp_degC": 245.0})
    q = [float(ANN.aux(x, [300.0, f], [AMBIENT], ANN.parameter_vector())[ANN.aux_names.index("gas_to_load_kW")])
         for f in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(b > a for a, b in itertools.pairwise(q))
    assert q[-1] > 3.0 * q[0]


def test_annealer_core_lags_surface_by_hours_and_dT_peaks_in_ramp() -> None:
    """Gas ramp 2 K/min to 430 °C, surface held ≤ 363 °C: core lags the surface by hours, ΔT peaks in the ramp."""
    dt = 60.0
    F = ANN.rk4_step(dt)
    z = ca.SX.sym("z", len(ANN.states) + 1)  # states + time (s)
    x, t = z[:4], z[4]
    gas_sp = ca.fmin(ca.fmin(AMBIENT + 2.0 * t / 60.0, 430.0), 362.0 + 6.0 * (363.0 - x[1]))
    power = ca.fmin(ca.fmax(200.0 * (gas_sp - x[0]) + 56.0, 0.0), 800.0)
    step = ca.Function("step", [z], [ca.vertcat(F(x, ca.vertcat(power, 1.0), AMBIENT, ANN.parameter_vector()), t + dt)])
    n = int(24 * 3600 / dt)
    z0 = np.r_[np.full(4, AMBIENT), 0.0]
    Z = np.column_stack([z0, np.asarray(step.mapaccum("run", n)(z0))])
    hours = Z[4] / 3600.0
    surface, core = Z[1], Z[2]
    lag_h = np.interp(300.0, core, hours) - np.interp(300.0, surface, hours)
    assert lag_h > 2.0
    dT = surface - core
    i_peak = int(np.argmax(dT))
    assert dT[i_peak] > 80.0
    assert surface[i_peak] < 355.0  # the peak comes while the surface is still ramping
    t_core = float(np.interp(355.0, core, hours))
    assert 6.0 < t_core < 20.0
    soaked = hours >= t_core + 2.0
    assert soaked.any() and np.all(dT[soaked] < 10.0)
    assert surface.max() < 366.0


# ------------------------------------------------------------------ differentiability and hygiene
def _vim_points(rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Random (x, u, d) over the VIM operating range, plus the exact plateau corners."""
    h_sol, h_liq = vim_enthalpy_MJ(VP["melting_point_degC"], False), vim_enthalpy_MJ(VP["melting_point_degC"], True)
    hs = [*list(rng.uniform(-0.5, 60.0, n)), h_sol, h_liq, 0.5 * (h_sol + h_liq)]
    pts = []
    for h in hs:
        x = np.array([h, rng.uniform(15.0, 1300.0), rng.uniform(15.0, 1500.0), 10 ** rng.uniform(-3, 2),
                      rng.uniform(0.0, 2.0)])
        d = np.array([rng.uniform(15.0, 40.0), rng.uniform(0.0, 0.05)])
        pts.append((x, np.array([rng.uniform(0.0, 250.0)]), d))
    return pts


def _ann_points(rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Random (x, u, d) over the annealer operating range, including zero flow."""
    pts = []
    for k in range(n):
        x = rng.uniform(0.0, 600.0, 4)
        flow = 0.0 if k == 0 else rng.uniform(0.0, 1.0)
        pts.append((x, np.array([rng.uniform(0.0, 900.0), flow]), np.array([rng.uniform(-10.0, 45.0)])))
    return pts


@pytest.mark.parametrize("model_name", ["vim_furnace", "annealing_furnace"])
def test_functions_finite_and_differentiable(model_name: str) -> None:
    """f, h and aux and their Jacobians in x and u are finite over the operating range (seeded samples)."""
    model = get_model(model_name)
    rng = np.random.default_rng(20240611)
    pts = _vim_points(rng, 40) if model_name == "vim_furnace" else _ann_points(rng, 40)
    x = ca.SX.sym("x", len(model.states))
    u = ca.SX.sym("u", len(model.inputs))
    d = ca.SX.sym("d", len(model.disturbances))
    p = ca.DM(model.parameter_vector())
    outs = []
    for fn in (model.f, model.h, model.aux):
        e = fn(x, u, d, p)
        outs += [e, ca.jacobian(e, x), ca.jacobian(e, u)]
    check = ca.Function("check", [x, u, d], outs)
    for xv, uv, dv in pts:
        for value in check(xv, uv, dv):
            assert np.all(np.isfinite(np.asarray(value))), (model_name, xv, uv, dv)


@pytest.mark.parametrize("model_name", ["vim_furnace", "annealing_furnace"])
def test_parameters_have_units_sources_and_unique_names(model_name: str) -> None:
    """Every parameter has a unit, a description, a non-empty source and a finite nominal value; names unique."""
    model = get_model(model_name)
    assert model_name in model_names()
    assert len(model.parameter_names) == len(set(model.parameter_names))
    for q in model.parameters:
        assert q.unit.strip() and q.description.strip() and q.source.strip(), q.name
        assert math.isfinite(q.nominal), q.name
    for group in (model.state_names, model.input_names, model.disturbance_names, model.output_names,
                  model.aux_names):
        assert len(group) == len(set(group))
    for s in (*model.states, *model.inputs, *model.disturbances, *model.outputs, *model.aux_signals):
        assert s.unit.strip() and s.description.strip(), s.name


def test_outputs_are_the_measured_signals() -> None:
    """h returns thermocouple, pressure and power (VIM) and gas, load thermocouple and power (annealer)."""
    x = vim_state(500.0, pressure_Pa=2.0)
    x[VIM.state_names.index("tc_temp_degC")] = 480.0
    y = np.asarray(VIM.h(x, [120.0], [COOLING_WATER, LEAK], VIM.parameter_vector())).ravel()
    assert list(y) == pytest.approx([480.0, 2.0, 120.0])
    xa = np.array([400.0, 300.0, 200.0, 290.0])
    ya = np.asarray(ANN.h(xa, [500.0, 1.0], [AMBIENT], ANN.parameter_vector())).ravel()
    assert list(ya) == pytest.approx([400.0, 290.0, 500.0])
