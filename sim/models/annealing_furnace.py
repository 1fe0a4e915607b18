"""Bell annealing furnace for aluminium coils (three thermal nodes).

Nodes per reference ``process_models.md`` §3: furnace/gas (heaters, inner
cover, circulating protective gas), load surface (outer wraps and coil ends)
and load core (never measured, S36). Heat reaches the load by forced
convection, raised by the protective-gas circulation (``h ∝ flow^0.8`` above a
natural-convection floor), plus radiation; it reaches the core through the
poorly conducting wound layers (``R_k``), so the core lags the surface by hours
(S38/S39).

Measured: the gas thermocouple and a load thermocouple pressed into the outer
wraps (a first-order lag of the surface node: contact is imperfect). The
load thermocouple is optional on real bell annealers (S36 says only gas
temperatures are measured); without it, drop ``load_tc_temp_degC`` from the
recipe's measurements and the core and surface become estimates driven by the
gas temperature alone.

Nominal batch: 30 t of Al coils annealed at 360 degC with a 2 h soak (S38).
Units: temperature °C, power kW, heat capacity kJ/K, time s.
"""

from __future__ import annotations

import casadi as ca

from sim.models.base import Parameter, ProcessModel, Signal, smooth_pos

SIGMA_KW_M2_K4 = 5.670374419e-11

STATES = (
    Signal("gas_temp_degC", "degC", "furnace / protective-gas node temperature"),
    Signal("surface_temp_degC", "degC", "load surface node temperature"),
    Signal("core_temp_degC", "degC", "load core node temperature (never measured)"),
    Signal("load_tc_temp_degC", "degC", "load thermocouple reading (lagged surface temperature)"),
)
INPUTS = (
    Signal("heater_power_kW", "kW", "heater power"),
    Signal("gas_flow_frac", "1", "protective-gas circulation, fraction of full fan speed"),
)
DISTURBANCES = (
    Signal("ambient_temp_degC", "degC", "temperature around the hood"),
)
OUTPUTS = (
    Signal("gas_temp_degC", "degC", "gas thermocouple"),
    Signal("load_tc_temp_degC", "degC", "load (outer-wrap) thermocouple"),
    Signal("heater_power_kW", "kW", "heater power read back"),
)
AUX = (
    Signal("core_surface_dT_K", "K", "surface minus core temperature (positive while heating)"),
    Signal("net_heat_kW", "kW", "heater power minus losses = rate of stored heat"),
    Signal("heat_loss_kW", "kW", "loss through hood and base to ambient"),
    Signal("gas_to_load_kW", "kW", "convection plus radiation from gas to load surface"),
    Signal("load_mean_temp_degC", "degC", "heat-capacity-weighted load temperature"),
)

PARAMETERS = (
    Parameter("load_mass_t", "t", 30.0, "aluminium coil mass in the furnace",
              "assumption (4 coils of ≈7.5 t; tens of tonnes typical)"),
    Parameter("load_cp_kJ_kgK", "kJ/(kg·K)", 0.95, "mean heat capacity of Al, 25–360 degC",
              "assumption: handbook Al (0.90 at 25 degC, ≈1.0 at 360 degC); not in S36–S43"),
    Parameter("surface_mass_fraction", "1", 0.3, "share of the load mass in the surface node",
              "assumption (outer wraps and coil ends)"),
    Parameter("furnace_heat_capacity_kJ_K", "kJ/K", 4000.0, "inner cover, base, heaters, fans",
              "assumption (≈8 t of steel)"),
    Parameter("convective_hA_kW_K", "kW/K", 3.2, "gas-to-surface hA at full circulation",
              "assumption (h ≈ 50 W/(m2·K) over ≈64 m2 of coil surface)"),
    Parameter("natural_convection_fraction", "1", 0.15, "hA share left with the fan stopped", "assumption"),
    Parameter("flow_exponent", "1", 0.8, "hA ∝ flow^n above the natural-convection floor",
              "assumption (turbulent forced convection, Dittus–Boelter type)"),
    Parameter("load_emissivity", "1", 0.1, "effective emissivity cover-to-coil (bright Al)", "assumption"),
    Parameter("load_area_m2", "m2", 64.0, "coil surface exposed to gas and cover", "assumption (4 coils)"),
    Parameter("core_resistance_K_kW", "K/kW", 0.45, "surface-to-core resistance through the wraps",
              "assumption: core time constant C_core·R_k ≈ 2.5 h (S38/S39: core lag of hours)"),
    Parameter("loss_resistance_K_kW", "K/kW", 6.0, "gas-to-ambient resistance through hood and base",
              "assumption (≈56 kW holding at 360 degC)"),
    Parameter("load_tc_time_constant_s", "s", 300.0, "load thermocouple lag (contact in the outer wraps)",
              "assumption"),
)


MODEL_NAME = "annealing_furnace"
"""The name recipes give this model (``model.name``)."""


def build() -> ProcessModel:
    """Build the symbolic annealing furnace model."""
    x = ca.SX.sym("x", len(STATES))
    u = ca.SX.sym("u", len(INPUTS))
    d = ca.SX.sym("d", len(DISTURBANCES))
    p = ca.SX.sym("p", len(PARAMETERS))
    P = {q.name: p[i] for i, q in enumerate(PARAMETERS)}
    T_f, T_s, T_c, T_tc = (x[i] for i in range(len(STATES)))
    power_kW, flow = u[0], u[1]
    T_amb = d[0]

    c_load = 1000.0 * P["load_mass_t"] * P["load_cp_kJ_kgK"]
    c_s = P["surface_mass_fraction"] * c_load
    c_c = c_load - c_s
    c_f = P["furnace_heat_capacity_kJ_K"]

    # Gas-to-surface: forced convection over a natural-convection floor, plus radiation (kW).
    flow_pos = smooth_pos(flow, 0.02)
    floor = P["natural_convection_fraction"]
    hA = P["convective_hA_kW_K"] * (floor + (1.0 - floor) * flow_pos ** P["flow_exponent"])
    q_rad = P["load_emissivity"] * SIGMA_KW_M2_K4 * P["load_area_m2"] * ((T_f + 273.15) ** 4 - (T_s + 273.15) ** 4)
    q_fs = hA * (T_f - T_s) + q_rad
    q_sc = (T_s - T_c) / P["core_resistance_K_kW"]
    q_loss = (T_f - T_amb) / P["loss_resistance_K_kW"]

    dT_f = (power_kW - q_fs - q_loss) / c_f
    dT_s = (q_fs - q_sc) / c_s
    dT_c = q_sc / c_c
    dT_tc = (T_s - T_tc) / P["load_tc_time_constant_s"]

    xdot = ca.vertcat(dT_f, dT_s, dT_c, dT_tc)
    y = ca.vertcat(T_f, T_tc, power_kW)
    aux = ca.vertcat(T_s - T_c, power_kW - q_loss, q_loss, q_fs, (c_s * T_s + c_c * T_c) / c_load)
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
        f=ca.Function("annealing_furnace_f", args, [xdot], names, ["xdot"]),
        h=ca.Function("annealing_furnace_h", args, [y], names, ["y"]),
        aux=ca.Function("annealing_furnace_aux", args, [aux], names, ["aux"]),
    )
