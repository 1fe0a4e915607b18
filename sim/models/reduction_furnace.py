"""Vacuum metallothermic reduction–distillation furnace (retort) for a volatile rare-earth metal.

Nominal process: lanthanothermic reduction of samarium oxide, ``Sm2O3 + 2 La → La2O3 + 2 Sm(g)``,
in a resistance-heated retort under vacuum; the samarium distils out of the briquetted charge and
condenses on a water-cooled condenser in the cold end of the retort. The same structure covers
Eu/Yb/Tm oxides with La, and (with other material data) the calciothermic reduction of fluorides
(``2 DyF3 + 3 Ca → 2 Dy + 3 CaF2`` at ≈1450–1550 °C) followed by distillation; the reductant's own
evaporation (significant for Ca) is not modelled. Process window of the literature: Sm2O3 + La at
≈1100–1300 °C, 1–10 Pa, a few hours (A. H. Daane, D. H. Dennison, F. H. Spedding, "The preparation
of samarium and ytterbium metals", J. Am. Chem. Soc. 75, 1953; C. K. Gupta, N. Krishnamurthy,
"Extractive Metallurgy of Rare Earths", CRC Press, 2005, ch. on metallothermic reduction).
The four process parameters are the reduction vacuum (pressure limit of the curve), temperature
and time (its soak) and the charge ratio (``reductant_ratio``, La over its stoichiometric need).

Nodes and balances:

* heater → retort wall (``retort_temp_degC``, heat capacity of retort and hot zone, losses to the
  cooling-water jacket through the insulation) → charge (``charge_temp_degC``, contact and
  radiation); a thermocouple in a thermowell in the charge bed (``tc_temp_degC``, first-order lag);
  the condenser (``condenser_temp_degC``) sees the hot zone through the baffles, takes the latent
  heat of the metal that condenses and is cooled by the water.
* reaction: ``dα/dt = k(T)·(1 − α)·(r − α)/r``, ``α`` the reduced share of the oxide, ``r`` the
  charge ratio (so a charge short of reductant, r < 1, stops at α = r), ``k`` Arrhenius around the
  rate at a reference temperature; reduction enthalpy taken from the charge.
* distillation: reduced metal still in the bed, ``m_free = α·m_max − distilled``, leaves as vapour
  with the pore-transport time ``τ_d`` at the share ``p_sat/(p_sat + p_hinder)`` of its vapour
  pressure (Clausius–Clapeyron ``p_sat = p_ref·exp(−B(1/T − 1/T_ref))``); the heat of sublimation
  is taken from the charge. First order in ``m_free``, so the bed never goes negative and the
  equation is not stiff.
* condensation: all distilled vapour reaches the condenser (``condensed_kg``); the deposit
  re-evaporates at the Hertz–Knudsen flux at the condenser's vapour pressure over its area
  (times the deposit's coverage ``m/(m + m_cov)``), and what re-evaporates is lost to the cold trap
  and pump line (``escaped_kg = distilled − condensed``, aux).
* pressure: ``V·dp/dt = Q_leak + Q_outgas + Q_reaction + f_v·(vapour to the pump) − S·p`` with
  thermal outgassing rising with charge temperature and with its heating rate (desorption of the
  hygroscopic oxide), gas released per kg of metal reduced and a small share of the metal vapour
  reaching the gauge. This is what limits the heating rate into the reduction temperature.

Every figure is an order of magnitude (marked ``assumption`` in its source) to be identified on the
furnace (see ``docs/furnace_models.md``). Units: temperature °C, power kW, heat capacity kJ/K,
pressure Pa, gas load Pa·m³/s, mass kg, time s.
"""

from __future__ import annotations

import math

import casadi as ca

from sim.models.base import Parameter, ProcessModel, Signal, smooth_pos

R_J_PER_MOL_K = 8.314462618
SIGMA_KW_M2_K4 = 5.670374419e-11
KELVIN = 273.15
GAS_REF_K = 293.15
"""Temperature at which gas loads (Pa·m³) are counted."""

STATES = (
    Signal("charge_temp_degC", "degC", "charge (briquetted oxide + reductant in its crucible) temperature"),
    Signal("retort_temp_degC", "degC", "retort wall / hot zone temperature"),
    Signal("tc_temp_degC", "degC", "charge thermocouple reading (thermowell, lagged charge temperature)"),
    Signal("condenser_temp_degC", "degC", "condenser temperature"),
    Signal("chamber_pressure_Pa", "Pa", "retort pressure at the vacuum gauge"),
    Signal("reacted_fraction", "1", "reduced share of the oxide"),
    Signal("distilled_kg", "kg", "metal that has left the charge as vapour (cumulative)"),
    Signal("condensed_kg", "kg", "metal held on the condenser"),
)
INPUTS = (
    Signal("power_kW", "kW", "heater power"),
)
DISTURBANCES = (
    Signal("cooling_water_temp_degC", "degC", "jacket and condenser cooling water temperature"),
    Signal("leak_rate_Pa_m3_s", "Pa·m3/s", "air in-leakage into the retort"),
)
OUTPUTS = (
    Signal("tc_temp_degC", "degC", "charge thermocouple"),
    Signal("chamber_pressure_Pa", "Pa", "vacuum gauge"),
    Signal("power_kW", "kW", "heater power read back"),
)
AUX = (
    Signal("reduction_rate_kg_h", "kg/h", "metal reduced per hour"),
    Signal("distillation_rate_kg_h", "kg/h", "metal vapour leaving the charge per hour"),
    Signal("reevaporation_rate_kg_h", "kg/h", "metal re-evaporating from the condenser (lost) per hour"),
    Signal("metal_in_charge_kg", "kg", "reduced metal not yet distilled"),
    Signal("escaped_kg", "kg", "distilled metal not held by the condenser"),
    Signal("metal_yield", "1", "condensed metal over the metal in the oxide"),
    Signal("reductant_left_fraction", "1", "reductant left over its initial amount"),
    Signal("charge_vapour_pressure_Pa", "Pa", "metal vapour pressure at the charge temperature"),
    Signal("condenser_vapour_pressure_Pa", "Pa", "metal vapour pressure at the condenser temperature"),
    Signal("outgassing_Pa_m3_s", "Pa·m3/s", "gas load of outgassing and reaction"),
    Signal("net_heat_kW", "kW", "heat into the charge (C·dT/dt)"),
    Signal("charge_heating_rate_K_min", "K/min", "dT/dt of the charge"),
    Signal("cooling_water_loss_kW", "kW", "heat removed by the jacket and the condenser"),
)

PARAMETERS = (
    # charge
    Parameter("oxide_mass_kg", "kg", 30.0, "rare-earth oxide in the charge (weighed per batch)",
              "assumption (tens of kg per retort)"),
    Parameter("oxide_molar_mass_kg_mol", "kg/mol", 0.34872, "molar mass of the oxide (Sm2O3)", "Sm2O3 formula"),
    Parameter("metal_molar_mass_kg_mol", "kg/mol", 0.15036, "molar mass of the metal (Sm)", "Sm atomic mass"),
    Parameter("metal_per_oxide", "mol/mol", 2.0, "metal atoms per oxide formula unit", "Sm2O3 formula"),
    Parameter("reductant_ratio", "1", 1.2, "charge ratio: reductant over its stoichiometric need",
              "assumption (10–30 % La excess, as in practice for Sm2O3)"),
    Parameter("reductant_stoich_kg_per_kg_oxide", "kg/kg", 0.7967, "stoichiometric reductant per kg oxide",
              "Sm2O3 + 2 La: 2 x 138.91 / 348.72"),
    Parameter("charge_cp_kJ_kgK", "kJ/(kg·K)", 0.40, "mean heat capacity of oxide and reductant",
              "assumption: handbook order for RE oxides and La, 0.3–0.5 kJ/(kg·K)"),
    Parameter("crucible_heat_capacity_kJ_K", "kJ/K", 30.0, "crucible / charge boats",
              "assumption (≈50 kg steel or Mo)"),
    # kinetics and thermochemistry
    Parameter("rate_ref_1_s", "1/s", 6.0e-4, "reduction rate constant at the reference temperature",
              "assumption: ≈90 % reduced after ≈2 h at 1200 degC (few hours in Daane et al. 1953)"),
    Parameter("rate_ref_degC", "degC", 1200.0, "reference temperature of the rate constant", "assumption"),
    Parameter("activation_energy_kJ_mol", "kJ/mol", 250.0, "apparent activation energy of the reduction",
              "assumption (solid-state, diffusion-limited reduction)"),
    Parameter("reduction_enthalpy_kJ_mol", "kJ/mol", 15.0, "reaction enthalpy per mol metal (condensed metal)",
              "assumption: formation enthalpies of Sm2O3 and La2O3 (≈ +29 kJ per mol Sm2O3)"),
    Parameter("sublimation_enthalpy_kJ_mol", "kJ/mol", 207.0, "enthalpy of sublimation of the metal",
              "handbook Sm (ΔHf of the monatomic gas ≈ 207 kJ/mol)"),
    # vapour pressure (Clausius–Clapeyron)
    Parameter("vapour_pressure_ref_Pa", "Pa", 1.0, "metal vapour pressure at the reference temperature",
              "handbook Sm (CRC vapour pressure table: 1 Pa at 1001 K)"),
    Parameter("vapour_pressure_ref_degC", "degC", 727.85, "reference temperature of the vapour pressure",
              "handbook Sm, 1001 K"),
    Parameter("vapour_pressure_slope_K", "K", 23900.0, "Clausius–Clapeyron slope dln(p)/d(1/T)",
              "fit of handbook Sm (1 Pa at 1001 K, 100 Pa at 1240 K); 0.013 Pa at 846 K as in vendor data"),
    Parameter("distillation_time_s", "s", 900.0, "pore transport time of the vapour out of the charge bed",
              "assumption"),
    Parameter("vapour_hinder_Pa", "Pa", 50.0, "vapour pressure at which the bed releases vapour at half rate",
              "assumption"),
    Parameter("fastest_rate_s", "s", 60.0, "shortest time scale of reduction and re-evaporation",
              "assumption (heat supply limits both; keeps RK4 at 20 s steps stable at any temperature)"),
    Parameter("condenser_area_m2", "m2", 0.3, "condensing area", "assumption"),
    Parameter("deposit_cover_kg", "kg", 0.05, "deposit that covers the condenser (re-evaporation scale)",
              "assumption"),
    # heat transfer
    Parameter("heater_efficiency", "1", 0.9, "share of heater power into the retort", "assumption"),
    Parameter("retort_heat_capacity_kJ_K", "kJ/K", 250.0, "retort, heater and hot face of the insulation",
              "assumption (≈300 kg steel retort plus hot zone)"),
    Parameter("retort_loss_resistance_K_kW", "K/kW", 45.0, "retort-to-jacket resistance of the insulation",
              "assumption (≈26 kW loss at 1200 degC)"),
    Parameter("charge_retort_htc_kW_K", "kW/K", 0.06, "retort-to-charge contact conductance UA", "assumption"),
    Parameter("charge_emissivity", "1", 0.6, "effective emissivity retort–charge", "assumption"),
    Parameter("charge_area_m2", "m2", 0.5, "charge (crucible) area facing the retort", "assumption"),
    Parameter("condenser_view_area_m2", "m2", 0.015, "hot-zone area the condenser sees through the baffles",
              "assumption"),
    Parameter("condenser_heat_capacity_kJ_K", "kJ/K", 40.0, "condenser sleeve", "assumption"),
    Parameter("condenser_resistance_K_kW", "K/kW", 50.0, "condenser-to-water resistance",
              "assumption (condenser at ≈300–500 degC while metal condenses)"),
    Parameter("tc_time_constant_s", "s", 120.0, "thermowell thermocouple lag", "assumption"),
    # vacuum
    Parameter("chamber_volume_m3", "m3", 1.5, "retort, condenser and manifold volume", "assumption"),
    Parameter("pump_speed_m3_s", "m3/s", 0.05, "effective pumping speed at the retort (conductance-limited)",
              "assumption"),
    Parameter("outgassing_base_Pa_m3_s", "Pa·m3/s", 0.002, "outgassing of the cold charge and retort", "assumption"),
    Parameter("outgassing_temp_scale_K", "K", 400.0, "e-folding of thermal outgassing with charge temperature",
              "assumption"),
    Parameter("outgassing_per_K_Pa_m3_K", "Pa·m3/K", 0.8, "gas desorbed per K of charge heating",
              "assumption (moisture and CO2 of the hygroscopic oxide, ≈0.4 mol over a batch)"),
    Parameter("reaction_gas_Pa_m3_kg", "Pa·m3/kg", 8.0, "non-condensable gas released per kg metal reduced",
              "assumption (hydrogen of the reductant, carbonate of the oxide)"),
    Parameter("vapour_gas_load_fraction", "1", 2.0e-4, "share of the metal vapour reaching the gauge/pump",
              "assumption (almost all condenses before the gauge)"),
)


MODEL_NAME = "reduction_furnace"
"""The name recipes give this model (``model.name``)."""


def build() -> ProcessModel:
    """Build the symbolic reduction–distillation furnace model."""
    x = ca.SX.sym("x", len(STATES))
    u = ca.SX.sym("u", len(INPUTS))
    d = ca.SX.sym("d", len(DISTURBANCES))
    p = ca.SX.sym("p", len(PARAMETERS))
    P = {q.name: p[i] for i, q in enumerate(PARAMETERS)}
    T, T_r, T_tc, T_c, p_ch, alpha, distilled, condensed = (x[i] for i in range(len(STATES)))
    power_kW = u[0]
    T_cool, q_leak = d[0], d[1]

    M = P["metal_molar_mass_kg_mol"]
    ratio = P["reductant_ratio"]
    m_max = P["oxide_mass_kg"] / P["oxide_molar_mass_kg_mol"] * P["metal_per_oxide"] * M
    m_reductant = P["oxide_mass_kg"] * (1.0 + ratio * P["reductant_stoich_kg_per_kg_oxide"])
    C_ch = m_reductant * P["charge_cp_kJ_kgK"] + P["crucible_heat_capacity_kJ_K"]

    def kelvin(t_degC: ca.SX) -> ca.SX:
        """Absolute temperature kept above 250 K (the exponentials stay finite in a wild iterate)."""
        return 250.0 + smooth_pos(t_degC + KELVIN - 250.0, 1.0)

    T_K, T_rK, T_cK = kelvin(T), kelvin(T_r), kelvin(T_c)

    def p_sat(t_K: ca.SX) -> ca.SX:
        return P["vapour_pressure_ref_Pa"] * ca.exp(
            -P["vapour_pressure_slope_K"] * (1.0 / t_K - 1.0 / (P["vapour_pressure_ref_degC"] + KELVIN)))

    # Reduction (1/s), limited by the oxide and the reductant left.
    k = P["rate_ref_1_s"] * ca.exp(-1000.0 * P["activation_energy_kJ_mol"] / R_J_PER_MOL_K
                                   * (1.0 / T_K - 1.0 / (P["rate_ref_degC"] + KELVIN)))
    k = k / (1.0 + k * P["fastest_rate_s"])  # saturates far above the process window (stiff-safe)
    dalpha = k * (1.0 - alpha) * (ratio - alpha) / ratio
    reduce_kg_s = m_max * dalpha

    # Distillation out of the bed and re-evaporation from the condenser (kg/s).
    ps_ch, ps_c = p_sat(T_K), p_sat(T_cK)
    m_free = alpha * m_max - distilled
    distil_kg_s = m_free / P["distillation_time_s"] * ps_ch / (ps_ch + P["vapour_hinder_Pa"])
    hk_kg_m2_s = ps_c * ca.sqrt(M / (2.0 * math.pi * R_J_PER_MOL_K * T_cK))
    kappa = hk_kg_m2_s * P["condenser_area_m2"] / (smooth_pos(condensed, 1e-4) + P["deposit_cover_kg"])
    reevap_kg_s = condensed * kappa / (1.0 + kappa * P["fastest_rate_s"])

    # Heat (kW).
    q_rc = P["charge_retort_htc_kW_K"] * (T_r - T) + P["charge_emissivity"] * SIGMA_KW_M2_K4 * P["charge_area_m2"] * (
        T_rK**4 - T_K**4)
    q_react = reduce_kg_s / M * P["reduction_enthalpy_kJ_mol"] + distil_kg_s / M * P["sublimation_enthalpy_kJ_mol"]
    net_kW = q_rc - q_react
    dT = net_kW / C_ch
    q_view = SIGMA_KW_M2_K4 * P["condenser_view_area_m2"] * (T_rK**4 - T_cK**4)
    q_latent = (distil_kg_s - reevap_kg_s) / M * P["sublimation_enthalpy_kJ_mol"]
    q_jacket = (T_r - T_cool) / P["retort_loss_resistance_K_kW"]
    q_cond_water = (T_c - T_cool) / P["condenser_resistance_K_kW"]
    dT_r = (P["heater_efficiency"] * power_kW - q_rc - q_view - q_jacket) / P["retort_heat_capacity_kJ_K"]
    dT_c = (q_view + q_latent - q_cond_water) / P["condenser_heat_capacity_kJ_K"]
    dT_tc = (T - T_tc) / P["tc_time_constant_s"]

    # Gas (Pa·m3/s).
    q_outgas = (P["outgassing_base_Pa_m3_s"] * ca.exp((T - 25.0) / P["outgassing_temp_scale_K"])
                + P["outgassing_per_K_Pa_m3_K"] * smooth_pos(dT, 1e-5)
                + P["reaction_gas_Pa_m3_kg"] * reduce_kg_s)
    q_vapour = P["vapour_gas_load_fraction"] * (distil_kg_s + reevap_kg_s) / M * R_J_PER_MOL_K * GAS_REF_K
    dp = (q_leak + q_outgas + q_vapour - P["pump_speed_m3_s"] * p_ch) / P["chamber_volume_m3"]

    xdot = ca.vertcat(dT, dT_r, dT_tc, dT_c, dp, dalpha, distil_kg_s, distil_kg_s - reevap_kg_s)
    y = ca.vertcat(T_tc, p_ch, power_kW)
    aux = ca.vertcat(reduce_kg_s * 3600.0, distil_kg_s * 3600.0, reevap_kg_s * 3600.0, m_free,
                     distilled - condensed, condensed / m_max, (ratio - alpha) / ratio, ps_ch, ps_c, q_outgas,
                     net_kW, dT * 60.0, q_jacket + q_cond_water)
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
        f=ca.Function("reduction_furnace_f", args, [xdot], names, ["xdot"]),
        h=ca.Function("reduction_furnace_h", args, [y], names, ["y"]),
        aux=ca.Function("reduction_furnace_aux", args, [aux], names, ["aux"]),
    )
