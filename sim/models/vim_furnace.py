"""Vacuum induction melting (VIM) furnace for a rare-earth metal charge.

One lumped charge (enthalpy state, so the melting plateau comes out of the
balance), one crucible/wall node that loses heat to the cooling water, a lagged
immersion thermocouple, the chamber pressure and the cumulative evaporation
loss (reference ``process_models.md`` §3, S31–S35; material data for Nd are
handbook values, marked as such).

Charge temperature is an explicit, smooth function of enthalpy ``T(H)``:
solid sensible heat, the latent heat taken up over a band of ``melting_band_K``
around the melting point, then liquid sensible heat. ``H = 0`` at 25 °C solid.

Pressure: ``V·dp/dt = Q_leak + Q_outgas + Q_vapour − S·p`` with outgassing
rising with charge temperature, with the heating rate (desorption per K) and
with the melting rate (dissolved gas); this is what limits the heating rate.
Evaporation: Langmuir flux at the Clausius–Clapeyron vapour pressure, reduced
by ``1/(1 + p/p_half)`` as chamber gas hinders the escape of the vapour.

Units: enthalpy MJ, power kW, temperature °C, pressure Pa, gas load Pa·m³/s,
mass kg, time s (rates in the names say otherwise: ``evaporation_rate_kg_h``).
"""

from __future__ import annotations

import math

import casadi as ca

from sim.models.base import Parameter, ProcessModel, Signal, smooth_pos

R_J_PER_MOL_K = 8.314462618
SIGMA_KW_M2_K4 = 5.670374419e-11
M_ND_KG_PER_MOL = 0.144242
ENTHALPY_REF_DEGC = 25.0
"""Charge enthalpy is zero for solid charge at this temperature."""

STATES = (
    Signal("charge_enthalpy_MJ", "MJ", "charge enthalpy relative to solid at 25 degC"),
    Signal("wall_temp_degC", "degC", "crucible / wall node temperature"),
    Signal("tc_temp_degC", "degC", "immersion thermocouple reading (lagged charge temperature)"),
    Signal("chamber_pressure_Pa", "Pa", "chamber pressure"),
    Signal("evaporated_kg", "kg", "cumulative metal lost by evaporation"),
)
INPUTS = (
    Signal("power_kW", "kW", "induction power (converter output)"),
)
DISTURBANCES = (
    Signal("cooling_water_temp_degC", "degC", "coil / jacket cooling water temperature"),
    Signal("leak_rate_Pa_m3_s", "Pa·m3/s", "air in-leakage into the chamber"),
)
OUTPUTS = (
    Signal("tc_temp_degC", "degC", "immersion thermocouple"),
    Signal("chamber_pressure_Pa", "Pa", "vacuum gauge"),
    Signal("power_kW", "kW", "induction power read back"),
)
AUX = (
    Signal("charge_temp_degC", "degC", "charge temperature T(H)"),
    Signal("liquid_fraction", "1", "molten share of the charge"),
    Signal("evaporation_rate_kg_h", "kg/h", "metal evaporation rate"),
    Signal("outgassing_Pa_m3_s", "Pa·m3/s", "outgassing gas load (thermal + heating + melting)"),
    Signal("net_heat_kW", "kW", "dH/dt of the charge"),
    Signal("charge_heating_rate_K_min", "K/min", "dT/dt of the charge"),
    Signal("cooling_water_loss_kW", "kW", "heat removed from the wall by the cooling water"),
)

PARAMETERS = (
    Parameter("charge_mass_kg", "kg", 150.0, "metal charge (weighed per heat)",
              "assumption (100–200 kg charge class)"),
    Parameter("solid_cp_kJ_kgK", "kJ/(kg·K)", 0.21, "mean solid heat capacity 25 degC to melting",
              "assumption: handbook Nd, 27–33 J/(mol·K); not in S31–S48"),
    Parameter("liquid_cp_kJ_kgK", "kJ/(kg·K)", 0.34, "liquid heat capacity",
              "assumption: handbook Nd, ≈49 J/(mol·K); not in S31–S48"),
    Parameter("melting_point_degC", "degC", 1021.0, "melting point (Nd; PrNd ≈ 1000 degC)", "reference §1 (Nd)"),
    Parameter("latent_heat_kJ_kg", "kJ/kg", 49.5, "latent heat of fusion",
              "assumption: handbook Nd, 7.13 kJ/mol; not in S31–S48"),
    Parameter("melting_band_K", "K", 2.0, "width of the smoothed plateau corners (numerical)",
              "assumption (numerical smoothing, ±1 K at the corners)"),
    Parameter("coupling_efficiency", "1", 0.65, "share of converter power induced in the charge",
              "S33 (55–75 %, weak source)"),
    Parameter("charge_wall_htc_kW_K", "kW/K", 0.15, "charge-to-crucible contact conductance UA", "assumption"),
    Parameter("charge_emissivity", "1", 0.3, "charge free-surface emissivity", "assumption (liquid metal)"),
    Parameter("radiating_area_m2", "m2", 0.1, "charge area radiating to the hot zone", "assumption"),
    Parameter("wall_heat_capacity_kJ_K", "kJ/K", 60.0, "crucible, ramming mass and hot face",
              "assumption (≈55 kg ceramic at 1.1 kJ/(kg·K))"),
    Parameter("wall_loss_resistance_K_kW", "K/kW", 24.0, "wall-to-cooling-water resistance",
              "assumption (≈37 kW loss holding the charge at 1100 degC)"),
    Parameter("tc_time_constant_s", "s", 20.0, "thermocouple lag", "assumption (sheathed immersion thermocouple)"),
    Parameter("chamber_volume_m3", "m3", 3.0, "evacuated chamber volume", "assumption"),
    Parameter("pump_speed_m3_s", "m3/s", 0.3, "effective pumping speed at the chamber",
              "assumption (Roots stage ≈2000 m3/h, conductance-limited)"),
    Parameter("outgassing_base_Pa_m3_s", "Pa·m3/s", 0.01, "outgassing of the cold charge and hot zone", "assumption"),
    Parameter("outgassing_temp_scale_K", "K", 500.0, "e-folding of thermal outgassing with charge temperature",
              "assumption"),
    Parameter("outgassing_per_K_Pa_m3_K", "Pa·m3/K", 3.0, "gas desorbed per K of charge heating",
              "assumption (≈1.6 mol gas over a heat; identify by power steps)"),
    Parameter("melt_degassing_Pa_m3_kg", "Pa·m3/kg", 5.0, "dissolved gas released per kg melted", "assumption"),
    Parameter("vapour_pressure_ref_Pa", "Pa", 1.0, "vapour pressure at the reference temperature",
              "assumption: handbook Nd, 1 Pa at 1595 K (CRC table); not in S31–S48"),
    Parameter("vapour_pressure_ref_degC", "degC", 1321.85, "reference temperature of the vapour pressure",
              "assumption: handbook Nd, 1595 K"),
    Parameter("vapour_pressure_slope_K", "K", 36400.0, "Clausius–Clapeyron slope dln(p)/d(1/T)",
              "assumption: fit of handbook Nd (1 Pa at 1595 K, 10 Pa at 1774 K)"),
    Parameter("evaporation_coefficient", "1", 1.0, "Langmuir evaporation coefficient",
              "assumption (free evaporation, upper bound)"),
    Parameter("melt_surface_m2", "m2", 0.07, "free surface of the charge",
              "assumption (150 kg Nd in a 0.30 m bore crucible)"),
    Parameter("evaporation_half_pressure_Pa", "Pa", 2.0, "chamber pressure halving the evaporation rate",
              "assumption (gas mean free path ≈ melt scale at 1–2 Pa)"),
    Parameter("heat_of_vaporisation_kJ_kg", "kJ/kg", 2004.0, "latent heat of evaporation",
              "assumption: handbook Nd, 289 kJ/mol; not in S31–S48"),
    Parameter("vapour_gas_load_fraction", "1", 0.05, "share of metal vapour reaching the gauge/pump",
              "assumption (most condenses on the cold walls)"),
)


def _soft_relu(x: ca.SX, width: float) -> ca.SX:
    """Smooth max(0, x) that is exactly 0 at x = 0 (x·sigmoid(x/width)); tanh form never overflows."""
    return 0.5 * x * (1.0 + ca.tanh(x / (2.0 * width)))


def _smooth_ramp_slope(z: ca.SX, width: ca.SX) -> ca.SX:
    """Derivative of ``smooth_pos(z, width)`` with respect to z."""
    return 0.5 * (1.0 + z / ca.sqrt(z * z + width * width))


MODEL_NAME = "vim_furnace"
"""The name recipes give this model (``model.name``)."""


def build() -> ProcessModel:
    """Build the symbolic VIM furnace model."""
    x = ca.SX.sym("x", len(STATES))
    u = ca.SX.sym("u", len(INPUTS))
    d = ca.SX.sym("d", len(DISTURBANCES))
    p = ca.SX.sym("p", len(PARAMETERS))
    P = {q.name: p[i] for i, q in enumerate(PARAMETERS)}
    H_MJ, T_w, T_tc, p_ch, _evaporated = (x[i] for i in range(len(STATES)))
    power_kW = u[0]
    T_cool, q_leak = d[0], d[1]

    # Enthalpy -> temperature with a smoothed melting plateau (kJ, K).
    H = 1000.0 * H_MJ
    mc_s = P["charge_mass_kg"] * P["solid_cp_kJ_kgK"]
    mc_l = P["charge_mass_kg"] * P["liquid_cp_kJ_kgK"]
    H_sol = mc_s * (P["melting_point_degC"] - ENTHALPY_REF_DEGC)
    H_lat = P["charge_mass_kg"] * P["latent_heat_kJ_kg"]
    w = P["melting_band_K"] * mc_s  # T deviates by band/2 at the plateau corners
    z_sol, z_liq = H - H_sol, H - H_sol - H_lat
    T = ENTHALPY_REF_DEGC + (H - smooth_pos(z_sol, w)) / mc_s + smooth_pos(z_liq, w) / mc_l
    phi = (smooth_pos(z_sol, w) - smooth_pos(z_liq, w)) / H_lat
    dT_dH = (1.0 - _smooth_ramp_slope(z_sol, w)) / mc_s + _smooth_ramp_slope(z_liq, w) / mc_l
    dphi_dH = (_smooth_ramp_slope(z_sol, w) - _smooth_ramp_slope(z_liq, w)) / H_lat

    # Evaporation: Langmuir flux at the Clausius–Clapeyron vapour pressure, hindered by chamber gas.
    T_K = T + 273.15
    T_K_safe = 250.0 + smooth_pos(T_K - 250.0, 1.0)
    p_vap = P["vapour_pressure_ref_Pa"] * ca.exp(
        -P["vapour_pressure_slope_K"] * (1.0 / T_K_safe - 1.0 / (P["vapour_pressure_ref_degC"] + 273.15))
    )
    langmuir_kg_m2_s = P["evaporation_coefficient"] * p_vap * ca.sqrt(
        M_ND_KG_PER_MOL / (2.0 * math.pi * R_J_PER_MOL_K * T_K_safe)
    )
    p_pos = smooth_pos(p_ch, 1e-3)
    evap_kg_s = langmuir_kg_m2_s * P["melt_surface_m2"] / (1.0 + p_pos / P["evaporation_half_pressure_Pa"])

    # Heat balance (kW): induction in, exchange with the wall, latent heat of evaporation.
    q_ind = P["coupling_efficiency"] * power_kW
    q_rad = P["charge_emissivity"] * SIGMA_KW_M2_K4 * P["radiating_area_m2"] * (T_K**4 - (T_w + 273.15) ** 4)
    q_cw = P["charge_wall_htc_kW_K"] * (T - T_w) + q_rad
    q_evap = evap_kg_s * P["heat_of_vaporisation_kJ_kg"]
    dH_kW = q_ind - q_cw - q_evap
    q_water = (T_w - T_cool) / P["wall_loss_resistance_K_kW"]
    dT_w = (q_cw - q_water) / P["wall_heat_capacity_kJ_K"]
    dT_tc = (T - T_tc) / P["tc_time_constant_s"]

    # Gas balance (Pa·m3/s): leak + outgassing (thermal, heating, melting) + vapour − pumping.
    dT_dt = dT_dH * dH_kW
    dphi_dt = dphi_dH * dH_kW
    q_outgas = (
        P["outgassing_base_Pa_m3_s"] * ca.exp((T - ENTHALPY_REF_DEGC) / P["outgassing_temp_scale_K"])
        + P["outgassing_per_K_Pa_m3_K"] * _soft_relu(dT_dt, 0.002)
        + P["melt_degassing_Pa_m3_kg"] * P["charge_mass_kg"] * _soft_relu(dphi_dt, 1e-6)
    )
    q_vapour = P["vapour_gas_load_fraction"] * evap_kg_s / M_ND_KG_PER_MOL * R_J_PER_MOL_K * 293.15
    dp = (q_leak + q_outgas + q_vapour - P["pump_speed_m3_s"] * p_ch) / P["chamber_volume_m3"]

    xdot = ca.vertcat(dH_kW / 1000.0, dT_w, dT_tc, dp, evap_kg_s)
    y = ca.vertcat(T_tc, p_ch, power_kW)
    aux = ca.vertcat(T, phi, evap_kg_s * 3600.0, q_outgas, dH_kW, dT_dt * 60.0, q_water)
    args = [x, u, d, p]
    names = ["x", "u", "d", "p"]
    return ProcessModel(
        name=MODEL_NAME,
        states=STATES,
        inputs=INPUTS,
        disturbances=DISTURBANCES,
        parameters=PARAMETERS,
        outputs=OUTPUTS,
        aux_signals=AUX,
        f=ca.Function("vim_furnace_f", args, [xdot], names, ["xdot"]),
        h=ca.Function("vim_furnace_h", args, [y], names, ["y"]),
        aux=ca.Function("vim_furnace_aux", args, [aux], names, ["aux"]),
    )
