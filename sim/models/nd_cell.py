"""Lumped Nd/PrNd fluoride–oxide electrolysis cell (6 kA class).

States, inputs, disturbances and parameters follow the reference process
notes (Faraday production, oxide dissolution with saturation, Haupin-style
voltage breakdown, anode effect at the critical anode current density,
current efficiency falling with temperature and at small anode–cathode
distance, metal node that must stay above its melting point).

Units: mass kg, temperature °C, current kA, voltage V, power kW, length cm,
time s (rates in the names say otherwise: ``feed_kg_h``).
"""

from __future__ import annotations

import casadi as ca

from sim.models.base import Parameter, ProcessModel, Signal, smooth_pos

F_C_PER_MOL = 96485.33212
R_J_PER_MOL_K = 8.314462618
M_ND_KG_PER_MOL = 0.144242
M_ND2O3_KG_PER_MOL = 0.336482
M_CF4_KG_PER_MOL = 0.0880043
GWP_CF4 = 6500.0
GWP_C2F6 = 9200.0

STATES = (
    Signal("dissolved_oxide_kg", "kg", "Nd2O3 dissolved in the bath"),
    Signal("undissolved_oxide_kg", "kg", "Nd2O3 fed but not yet dissolved (suspended)"),
    Signal("bath_temp_degC", "degC", "bath temperature"),
    Signal("metal_temp_degC", "degC", "cathode / metal pool temperature"),
    Signal("acd_cm", "cm", "anode–cathode distance"),
    Signal("metal_pool_kg", "kg", "metal held in the crucible"),
)
INPUTS = (
    Signal("current_kA", "kA", "line current through the cell"),
    Signal("feed_kg_h", "kg/h", "oxide feed rate"),
    Signal("anode_move_cm_h", "cm/h", "anode movement toward the cathode"),
)
DISTURBANCES = (
    Signal("ambient_temp_degC", "degC", "temperature of the heat sink around the cell"),
    Signal("tap_kg_h", "kg/h", "metal tapping rate"),
    Signal("anode_effect", "1", "1 while the cell is in anode effect, else 0"),
)
OUTPUTS = (
    Signal("cell_voltage_V", "V", "cell voltage"),
    Signal("current_kA", "kA", "line current"),
    Signal("bath_temp_degC", "degC", "bath temperature"),
    Signal("dissolved_oxide_wtpct", "wt%", "dissolved oxide concentration"),
)
AUX = (
    Signal("dissolved_oxide_wtpct", "wt%", "dissolved oxide concentration"),
    Signal("oxide_saturation_wtpct", "wt%", "oxide solubility at bath temperature"),
    Signal("current_efficiency", "1", "cathodic current efficiency"),
    Signal("anode_cd_A_cm2", "A/cm2", "anode current density"),
    Signal("critical_cd_A_cm2", "A/cm2", "critical anode current density"),
    Signal("ae_margin_A_cm2", "A/cm2", "critical minus actual anode current density"),
    Signal("metal_rate_kg_h", "kg/h", "metal production rate"),
    Signal("oxide_consumption_kg_h", "kg/h", "oxide consumed by electrolysis"),
    Signal("pfc_rate_kgco2e_h", "kgCO2e/h", "PFC emissions as CO2 equivalent"),
    Signal("power_kW", "kW", "electrical power U·I"),
    Signal("cell_voltage_V", "V", "cell voltage"),
    Signal("reversible_V", "V", "reversible decomposition voltage"),
    Signal("anode_overvoltage_V", "V", "anode surface + concentration overvoltage"),
    Signal("bath_ohmic_V", "V", "ohmic drop in the bath incl. bubble layer"),
    Signal("heat_loss_kW", "kW", "heat lost through the shell"),
)

PARAMETERS = (
    Parameter("bath_mass_kg", "kg", 500.0, "electrolyte mass", "reference §1 (assumed 500 kg bath)"),
    Parameter("bath_heat_capacity_kJ_K", "kJ/K", 900.0, "bath plus immersed parts", "assumption"),
    Parameter("heat_loss_resistance_K_kW", "K/kW", 30.6, "bath-to-ambient thermal resistance",
              "derived: heat balance at 6 kA settles at 1050 degC"),
    Parameter("thermoneutral_V", "V", 2.55, "thermoneutral voltage (CO route)", "reference §1 (derived)"),
    Parameter("reversible_ref_V", "V", 1.27, "reversible voltage at 1050 degC and saturation/e",
              "reference §1 (derived)"),
    Parameter("reversible_slope_V_K", "V/K", 0.00035, "decrease of reversible voltage with T", "assumption"),
    Parameter("anode_exchange_cd_A_cm2", "A/cm2", 0.32, "anode exchange current density",
              "derived: 1.62 V interfacial at 4.01 kA (S6)"),
    Parameter("anode_exchange_oxide_exponent", "1", 0.56, "i0 = i0_ref·(c/2 wt%)^n (oxide dependence)",
              "S16 (Haupin: i_r = 0.0029·C^0.56)"),
    Parameter("anode_transfer_coeff", "1", 0.5, "anode charge-transfer coefficient alpha", "assumption"),
    Parameter("cathode_overvoltage_V", "V", 0.10, "cathode overvoltage", "assumption"),
    Parameter("conductivity_S_cm", "S/cm", 3.5, "bath conductivity at 1050 degC", "assumption (fluoride melt)"),
    Parameter("conductivity_temp_coeff_K", "1/K", 0.001, "relative change of conductivity per K", "assumption"),
    Parameter("conduction_area_cm2", "cm2", 2150.0, "effective bath conduction area",
              "derived: R_bath = 1.1 mOhm at 4.01 kA (S6)"),
    Parameter("bubble_layer_cm_per_A_cm2", "cm/(A/cm2)", 0.4, "bubble-layer thickness per anode c.d.", "assumption"),
    Parameter("external_resistance_mohm", "mOhm", 0.0623, "conductors and contacts",
              "derived: 0.25 V at 4.01 kA (S6)"),
    Parameter("anode_area_cm2", "cm2", 6000.0, "immersed anode area", "assumption (1.0 A/cm2 at 6 kA)"),
    Parameter("cathode_area_cm2", "cm2", 1667.0, "cathode area", "assumption (3.6 A/cm2 at 6 kA, S7)"),
    Parameter("critical_cd_coeff_A_cm2", "A/cm2", 1.436, "i_cr = k(sqrt(c) - c0)(1 + a(T-1050))",
              "derived: 1.6 A/cm2 at 2 wt% (S8)"),
    Parameter("critical_cd_offset", "sqrt(wt%)", 0.30, "c0 in the critical c.d. law", "assumption"),
    Parameter("critical_cd_temp_coeff_K", "1/K", 0.002, "a in the critical c.d. law", "assumption"),
    Parameter("oxide_saturation_wtpct", "wt%", 3.5, "oxide solubility at 1050 degC", "S1 (2–4 wt%)"),
    Parameter("oxide_saturation_slope_wtpct_K", "wt%/K", 0.01, "solubility increase per K", "assumption"),
    Parameter("undissolved_fraction", "1", 0.5, "share of a feed that does not dissolve at once",
              "S16 (60 % for alumina), assumption"),
    Parameter("dissolution_rate_1_s", "1/s", 0.002, "dissolution rate of suspended oxide", "S16 (alumina)"),
    Parameter("dissolution_temp_coeff_K", "1/K", 0.01, "relative increase of dissolution rate per K", "assumption"),
    Parameter("sludge_settling_1_s", "1/s", 1.0e-5, "settling of suspended oxide into sludge", "assumption"),
    Parameter("ce_ref", "1", 0.751, "current efficiency before loss terms", "S7 (73.6 % at 1045 degC)"),
    Parameter("ce_temp_slope_K", "1/K", 0.0015, "CE loss per K above 1045 degC", "S7 trend, assumption"),
    Parameter("ce_cd_slope_cm2_A", "cm2/A", 0.04, "CE gain per A/cm2 of cathode c.d. above 3.6",
              "S7 trend, assumption"),
    Parameter("ce_low_oxide_gain", "1", 0.2, "CE loss amplitude at low oxide", "assumption"),
    Parameter("ce_low_oxide_scale_wtpct", "wt%", 0.5, "decay length of the low-oxide CE loss",
              "assumption"),
    Parameter("ce_backreaction_gain", "1", 0.6, "CE loss amplitude from metal back-reaction",
              "Hall–Héroult trend, assumption"),
    Parameter("ce_backreaction_scale_cm", "cm", 2.0, "ACD decay length of back-reaction", "assumption"),
    Parameter("ce_in_anode_effect", "1", 0.1, "fraction of CE left during an anode effect", "assumption"),
    Parameter("ae_voltage_jump_V", "V", 20.0, "voltage rise during an anode effect", "assumption"),
    Parameter("pfc_current_fraction", "1", 0.3, "share of current making CF4 in anode effect", "assumption"),
    Parameter("c2f6_to_cf4_mass_ratio", "1", 0.1, "C2F6 mass per CF4 mass", "assumption"),
    Parameter("anode_wear_cm_kAh", "cm/(kA·h)", 0.005, "ACD widening by anode consumption",
              "assumption (0.03 cm/h at 6 kA)"),
    Parameter("oxide_heat_capacity_kJ_kgK", "kJ/(kg·K)", 0.45, "Nd2O3 heat capacity", "assumption"),
    Parameter("feed_temp_degC", "degC", 25.0, "oxide temperature when fed", "assumption"),
    Parameter("bath_metal_htc_kW_K", "kW/K", 0.2, "bath-to-metal heat transfer hA", "assumption"),
    Parameter("metal_heat_capacity_kJ_kgK", "kJ/(kg·K)", 0.23, "liquid Nd heat capacity", "assumption"),
    Parameter("crucible_heat_capacity_kJ_K", "kJ/K", 10.0, "crucible and cathode heat capacity", "assumption"),
    Parameter("cathode_loss_resistance_K_kW", "K/kW", 335.0, "metal-to-ambient thermal resistance",
              "assumption (3 kW at 1035 degC)"),
    Parameter("metal_melting_degC", "degC", 1021.0, "melting point of the metal (Nd)", "reference §1"),
    Parameter("feed_delivery_factor", "1", 1.0, "oxide delivered per oxide commanded (feeder calibration)",
              "1 by definition; the filter's feed_bias estimates it"),
)


MODEL_NAME = "nd_electrolysis_cell"
"""The name recipes give this model (``model.name``)."""


def build() -> ProcessModel:
    """Build the symbolic cell model."""
    x = ca.SX.sym("x", len(STATES))
    u = ca.SX.sym("u", len(INPUTS))
    d = ca.SX.sym("d", len(DISTURBANCES))
    p = ca.SX.sym("p", len(PARAMETERS))
    P = {q.name: p[i] for i, q in enumerate(PARAMETERS)}
    m_d, m_u, T_b, T_m, acd, m_pool = (x[i] for i in range(len(STATES)))
    I_kA, feed_kg_h, move_cm_h = u[0], u[1], u[2]
    T_amb, tap_kg_h, ae = d[0], d[1], d[2]

    I_A = I_kA * 1000.0
    T_K = T_b + 273.15
    RT_F = R_J_PER_MOL_K * T_K / F_C_PER_MOL
    dT = T_b - 1050.0

    # Oxide concentration and solubility.
    c = 100.0 * m_d / P["bath_mass_kg"]
    c_pos = smooth_pos(c - 0.02, 0.02) + 0.02
    c_sat = P["oxide_saturation_wtpct"] + P["oxide_saturation_slope_wtpct_K"] * dT

    # Current densities and the anode-effect limit.
    i_a = I_A / P["anode_area_cm2"]
    i_c = I_A / P["cathode_area_cm2"]
    i_cr = (
        P["critical_cd_coeff_A_cm2"]
        * smooth_pos(ca.sqrt(c_pos) - P["critical_cd_offset"], 0.01)
        * (1.0 + P["critical_cd_temp_coeff_K"] * dT)
    )

    # Voltage breakdown: E_rev + anode surface + concentration + cathode + ohmic + external.
    e_rev = P["reversible_ref_V"] - P["reversible_slope_V_K"] * dT + RT_F / 6.0 * ca.log(c_sat / c_pos)
    i0 = P["anode_exchange_cd_A_cm2"] * (c_pos / 2.0) ** P["anode_exchange_oxide_exponent"]
    eta_surf = RT_F / P["anode_transfer_coeff"] * ca.asinh(i_a / (2.0 * i0))
    eta_conc = RT_F / 2.0 * ca.log(i_cr / smooth_pos(i_cr - i_a, 0.02))
    kappa = P["conductivity_S_cm"] * ca.exp(P["conductivity_temp_coeff_K"] * dT)
    d_eff = acd + P["bubble_layer_cm_per_A_cm2"] * i_a
    u_bath = I_A * d_eff / (kappa * P["conduction_area_cm2"])
    u_ext = I_A * P["external_resistance_mohm"] * 1e-3
    voltage = e_rev + eta_surf + eta_conc + P["cathode_overvoltage_V"] + u_bath + u_ext + ae * P["ae_voltage_jump_V"]

    # Current efficiency: temperature, cathode c.d., low oxide, metal back-reaction, anode effect.
    ce_raw = (
        P["ce_ref"]
        - P["ce_temp_slope_K"] * (T_b - 1045.0)
        + P["ce_cd_slope_cm2_A"] * (i_c - 3.6)
        - P["ce_low_oxide_gain"] * ca.exp(-c_pos / P["ce_low_oxide_scale_wtpct"])
        - P["ce_backreaction_gain"] * ca.exp(-acd / P["ce_backreaction_scale_cm"])
    )
    ce = ca.fmin(ca.fmax(ce_raw, 0.05), 0.98) * (1.0 - ae * (1.0 - P["ce_in_anode_effect"]))

    # Faraday: metal and oxide rates (kg/s).
    metal_kg_s = ce * I_A * M_ND_KG_PER_MOL / (3.0 * F_C_PER_MOL)
    oxide_kg_s = ce * I_A * M_ND2O3_KG_PER_MOL / (6.0 * F_C_PER_MOL)
    cf4_kg_s = ae * P["pfc_current_fraction"] * I_A * M_CF4_KG_PER_MOL / (4.0 * F_C_PER_MOL)
    pfc_co2e_kg_s = cf4_kg_s * (GWP_CF4 + P["c2f6_to_cf4_mass_ratio"] * GWP_C2F6)

    # Oxide balance with saturation-limited dissolution and sludge settling.
    feed_kg_s = feed_kg_h * P["feed_delivery_factor"] / 3600.0
    k_d = P["dissolution_rate_1_s"] * ca.exp(P["dissolution_temp_coeff_K"] * dT)
    dissolving = k_d * m_u * smooth_pos(1.0 - c / c_sat, 0.01)
    # The share that dissolves at once cannot dissolve into a saturated bath either:
    # near saturation it joins the undissolved oxide (gate = 1 below c_sat - 0.2 wt%).
    direct = (1.0 - P["undissolved_fraction"]) * feed_kg_s * 0.5 * (1.0 - ca.tanh((c - c_sat) / 0.05))
    dm_u = feed_kg_s - direct - dissolving - P["sludge_settling_1_s"] * m_u
    dm_d = direct + dissolving - oxide_kg_s

    # Heat balance (kW, kJ/K).
    power_kW = I_kA * voltage
    q_joule = I_kA * (voltage - P["thermoneutral_V"])
    q_loss = (T_b - T_amb) / P["heat_loss_resistance_K_kW"]
    q_feed = feed_kg_s * P["oxide_heat_capacity_kJ_kgK"] * (T_b - P["feed_temp_degC"])
    q_bm = P["bath_metal_htc_kW_K"] * (T_b - T_m)
    dT_b = (q_joule - q_loss - q_feed - q_bm) / P["bath_heat_capacity_kJ_K"]
    c_metal = P["metal_heat_capacity_kJ_kgK"] * m_pool + P["crucible_heat_capacity_kJ_K"]
    q_cath = (T_m - T_amb) / P["cathode_loss_resistance_K_kW"]
    q_drip = metal_kg_s * P["metal_heat_capacity_kJ_kgK"] * (T_b - T_m)
    dT_m = (q_bm + q_drip - q_cath) / c_metal

    # Anode wear widens the gap; a positive move closes it.
    d_acd = P["anode_wear_cm_kAh"] * I_kA / 3600.0 - move_cm_h / 3600.0
    dm_pool = metal_kg_s - tap_kg_h / 3600.0

    xdot = ca.vertcat(dm_d, dm_u, dT_b, dT_m, d_acd, dm_pool)
    y = ca.vertcat(voltage, I_kA, T_b, c)
    aux = ca.vertcat(
        c, c_sat, ce, i_a, i_cr, i_cr - i_a, metal_kg_s * 3600.0, oxide_kg_s * 3600.0,
        pfc_co2e_kg_s * 3600.0, power_kW, voltage, e_rev, eta_surf + eta_conc, u_bath, q_loss,
    )
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
        f=ca.Function("nd_cell_f", args, [xdot], names, ["xdot"]),
        h=ca.Function("nd_cell_h", args, [y], names, ["y"]),
        aux=ca.Function("nd_cell_aux", args, [aux], names, ["aux"]),
    )
