"""Tests for the lumped Nd electrolysis cell model (sim.models.nd_cell).

The reference figures come from ../shared/reference/process_models.md §1
(Faraday, S6 voltage breakdown, S7 current efficiency, S8 critical c.d.).
"""

from __future__ import annotations

import itertools
import math

import casadi as ca
import numpy as np
import pytest

from sim.cell_plant import FARADAY_ND_KG_PER_KAH
from sim.models import get_model, model_names
from sim.models.nd_cell import M_ND2O3_KG_PER_MOL, M_ND_KG_PER_MOL

MODEL = get_model("nd_electrolysis_cell")
P0 = MODEL.parameter_vector()
PN = dict(zip(MODEL.parameter_names, P0))
AMBIENT = 30.0


def state(
    oxide_wtpct: float = 2.0,
    bath_degC: float = 1045.0,
    metal_degC: float = 1035.0,
    acd_cm: float = 8.0,
    undissolved_kg: float = 0.0,
    pool_kg: float = 40.0,
) -> np.ndarray:
    """State vector from readable values (oxide given in wt% of the nominal bath)."""
    return MODEL.vector(
        MODEL.state_names,
        {
            "dissolved_oxide_kg": oxide_wtpct * PN["bath_mass_kg"] / 100.0,
            "undissolved_oxide_kg": undissolved_kg,
            "bath_temp_degC": bath_degC,
            "metal_temp_degC": metal_degC,
            "acd_cm": acd_cm,
            "metal_pool_kg": pool_kg,
        },
    )


def aux(x: np.ndarray, current_kA: float = 6.0, feed_kg_h: float = 0.0, anode_effect: float = 0.0,
        p: np.ndarray = P0) -> dict[str, float]:
    """Named auxiliary signals at one operating point."""
    u = MODEL.vector(MODEL.input_names, {"current_kA": current_kA, "feed_kg_h": feed_kg_h, "anode_move_cm_h": 0.0})
    d = MODEL.vector(MODEL.disturbance_names,
                     {"ambient_temp_degC": AMBIENT, "tap_kg_h": 0.0, "anode_effect": anode_effect})
    a = np.asarray(MODEL.aux(x, u, d, p)).ravel()
    return dict(zip(MODEL.aux_names, (float(v) for v in a)))


# ------------------------------------------------------------------ Faraday
@pytest.mark.parametrize(
    ("bath_degC", "current_kA", "acd_cm"),
    [(1045.0, 6.0, 8.0), (1030.0, 6.0, 8.0), (1080.0, 4.0, 5.0), (1050.0, 6.0, 3.0)],
)
def test_faraday_metal_rate_per_kAh(bath_degC: float, current_kA: float, acd_cm: float) -> None:
    """metal_rate / (I·CE) is 1.794 kg/(kA·h) (±0.1 %) at any operating point."""
    a = aux(state(bath_degC=bath_degC, acd_cm=acd_cm), current_kA=current_kA)
    k = a["metal_rate_kg_h"] / (current_kA * a["current_efficiency"])
    assert k == pytest.approx(1.794, rel=1e-3)
    assert pytest.approx(1.794, rel=1e-3) == FARADAY_ND_KG_PER_KAH


def test_faraday_6kA_at_ce_075_gives_8_1_kg_h() -> None:
    """At 6 kA and CE 0.75 the model makes ≈8.1 kg/h of Nd."""
    a = aux(state(), current_kA=6.0)
    rate_at_075 = a["metal_rate_kg_h"] / a["current_efficiency"] * 0.75
    assert rate_at_075 == pytest.approx(8.1, abs=0.05)


def test_oxide_consumption_is_stoichiometric() -> None:
    """Oxide consumption / metal rate = M_Nd2O3/(2·M_Nd) = 1.166."""
    assert pytest.approx(1.166, rel=1e-3) == M_ND2O3_KG_PER_MOL / (2.0 * M_ND_KG_PER_MOL)
    for x in (state(), state(oxide_wtpct=1.2, bath_degC=1070.0)):
        a = aux(x)
        assert a["oxide_consumption_kg_h"] / a["metal_rate_kg_h"] == pytest.approx(1.166, rel=1e-3)


# ------------------------------------------------------------------ voltage (S6)
def test_voltage_breakdown_at_4_01_kA_matches_s6() -> None:
    """6 kA cell at 4.01 kA, 1045 °C, 2 wt%, ACD 8 cm: 6.3 V = 4.43 ohmic + 1.62 interfacial + 0.25 ext."""
    a = aux(state(oxide_wtpct=2.0, bath_degC=1045.0, acd_cm=8.0), current_kA=4.01)
    interfacial = a["reversible_V"] + a["anode_overvoltage_V"] + PN["cathode_overvoltage_V"]
    assert a["cell_voltage_V"] == pytest.approx(6.3, abs=0.1)
    assert a["bath_ohmic_V"] == pytest.approx(4.43, abs=0.05)
    assert interfacial == pytest.approx(1.62, abs=0.05)
    assert a["cell_voltage_V"] - a["bath_ohmic_V"] - interfacial == pytest.approx(0.25, abs=0.03)
    assert a["power_kW"] == pytest.approx(4.01 * a["cell_voltage_V"], rel=1e-9)


def test_voltage_rises_with_acd() -> None:
    """Cell voltage increases with the anode–cathode distance (ohmic drop)."""
    volts = [aux(state(acd_cm=d))["cell_voltage_V"] for d in (3.0, 5.0, 8.0, 10.0)]
    assert all(b > a + 0.5 for a, b in itertools.pairwise(volts))


# ------------------------------------------------------------------ current efficiency (S7)
def test_current_efficiency_at_1045C_6kA() -> None:
    """CE is 73.6 % (±1.5 points) at 1045 °C and 6 kA (cathode c.d. 3.6 A/cm²)."""
    assert 6000.0 / PN["cathode_area_cm2"] == pytest.approx(3.6, abs=0.01)
    assert aux(state(bath_degC=1045.0), current_kA=6.0)["current_efficiency"] == pytest.approx(0.736, abs=0.015)


def test_current_efficiency_falls_with_temperature() -> None:
    """CE decreases strictly as the bath gets hotter (1030–1130 °C)."""
    ce = [aux(state(bath_degC=t))["current_efficiency"] for t in np.arange(1030.0, 1131.0, 10.0)]
    assert all(b < a for a, b in itertools.pairwise(ce))
    assert ce[0] - ce[-1] > 0.05


def test_current_efficiency_rises_with_cathode_current_density() -> None:
    """CE increases with the cathode current density (S7 trend)."""
    ce = [aux(state(), current_kA=i)["current_efficiency"] for i in (3.0, 4.0, 5.0, 6.0)]
    assert all(b > a for a, b in itertools.pairwise(ce))


def test_current_efficiency_falls_at_small_acd() -> None:
    """Metal back-reaction: CE(ACD 3 cm) < CE(ACD 8 cm) − 0.03, monotone in ACD."""
    ce = {d: aux(state(acd_cm=d))["current_efficiency"] for d in (2.0, 3.0, 5.0, 8.0)}
    assert ce[3.0] < ce[8.0] - 0.03
    assert ce[2.0] < ce[3.0] < ce[5.0] < ce[8.0]


def test_current_efficiency_collapses_in_anode_effect() -> None:
    """With anode_effect = 1 CE collapses to a small fraction of its normal value."""
    normal = aux(state())["current_efficiency"]
    in_ae = aux(state(), anode_effect=1.0)
    assert in_ae["current_efficiency"] < 0.15
    assert in_ae["current_efficiency"] < 0.2 * normal
    assert in_ae["metal_rate_kg_h"] < 0.2 * aux(state())["metal_rate_kg_h"]


# ------------------------------------------------------------------ anode effect
def test_ae_margin_falls_with_oxide_and_crosses_zero_near_1_wtpct() -> None:
    """ae_margin decreases as oxide falls and turns negative below ~1 wt% at 6 kA."""
    grid = np.linspace(3.3, 0.3, 31)
    margins = [aux(state(oxide_wtpct=c, bath_degC=1050.0))["ae_margin_A_cm2"] for c in grid]
    assert all(b < a for a, b in itertools.pairwise(margins))
    assert aux(state(oxide_wtpct=2.0, bath_degC=1050.0))["critical_cd_A_cm2"] == pytest.approx(1.6, abs=0.1)
    lo, hi = 0.3, 3.3  # bisection on the zero crossing
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if aux(state(oxide_wtpct=mid, bath_degC=1050.0))["ae_margin_A_cm2"] < 0.0:
            lo = mid
        else:
            hi = mid
    assert 0.8 < lo < 1.2
    assert aux(state(oxide_wtpct=0.8, bath_degC=1050.0))["ae_margin_A_cm2"] < 0.0
    assert aux(state(oxide_wtpct=1.3, bath_degC=1050.0))["ae_margin_A_cm2"] > 0.0


def test_voltage_jumps_and_pfc_in_anode_effect() -> None:
    """anode_effect = 1 raises the voltage by ae_voltage_jump_V and makes PFC; 0 makes none."""
    normal = aux(state())
    in_ae = aux(state(), anode_effect=1.0)
    assert in_ae["cell_voltage_V"] - normal["cell_voltage_V"] == pytest.approx(PN["ae_voltage_jump_V"], abs=1e-9)
    assert in_ae["cell_voltage_V"] > normal["cell_voltage_V"] + 10.0
    assert normal["pfc_rate_kgco2e_h"] == 0.0
    assert in_ae["pfc_rate_kgco2e_h"] > 0.0


# ------------------------------------------------------------------ heat balance
def _closed_loop_steps(n_steps: int, dt_s: float, current_kA: float, feed_factor: float | None,
                       feed_kg_h: float = 0.0) -> ca.Function:
    """rk4_step(dt) with feed = feed_factor × consumption (or a fixed feed) and wear-compensating moves."""
    F = MODEL.rk4_step(dt_s)
    x = ca.SX.sym("x", len(MODEL.states))
    p = ca.SX.sym("p", len(MODEL.parameters))
    move = PN["anode_wear_cm_kAh"] * current_kA
    d = ca.DM([AMBIENT, 0.0, 0.0])
    if feed_factor is not None:
        a = MODEL.aux(x, ca.vertcat(current_kA, 0.0, move), d, p)
        feed = feed_factor * a[MODEL.aux_names.index("oxide_consumption_kg_h")]
    else:
        feed = feed_kg_h
        move = 0.0
    step = ca.Function("step", [x, p], [F(x, ca.vertcat(current_kA, feed, move), d, p)])
    return step.mapaccum("run", n_steps)


def test_heat_balance_settles_near_1050C() -> None:
    """72 h at 6 kA, feed = consumption, wear compensated, from 1030 °C: bath settles to 1050 ± 10 °C."""
    dt, hours = 5.0, 72
    n = int(hours * 3600 / dt)
    x0 = state(oxide_wtpct=2.0, bath_degC=1030.0, metal_degC=1030.0, undissolved_kg=2.0)
    X = np.asarray(_closed_loop_steps(n, dt, 6.0, feed_factor=1.0)(x0, P0))
    i_tb, i_tm = MODEL.state_names.index("bath_temp_degC"), MODEL.state_names.index("metal_temp_degC")
    i_acd = MODEL.state_names.index("acd_cm")
    tb, tm = X[i_tb], X[i_tm]
    assert np.all(np.isfinite(X))
    last_day = slice(n - int(24 * 3600 / dt), n)
    assert np.all(np.abs(tb[last_day] - 1050.0) <= 10.0)
    assert np.ptp(tb[last_day]) < 3.0  # settled: only the slow drift of oxide (sludge losses) remains
    assert np.allclose(X[i_acd], 8.0, atol=1e-6)  # moves exactly compensate wear
    # Once the bath is in its band, the metal pool stays liquid.
    in_band = int(np.argmax(np.abs(tb - 1050.0) <= 10.0))
    assert np.abs(tb[in_band] - 1050.0) <= 10.0
    assert tm[in_band:].min() > PN["metal_melting_degC"]


def test_a_cold_bath_freezes_the_metal_and_a_nominal_one_does_not() -> None:
    """No free lunch at the limits: a 1030 degC bath freezes the metal, a 1050 degC bath keeps it liquid."""
    dt = 5.0
    n = int(6 * 3600 / dt)
    i_tm = MODEL.state_names.index("metal_temp_degC")
    cold = np.asarray(_closed_loop_steps(n, dt, 6.0, feed_factor=1.0)(
        state(oxide_wtpct=2.0, bath_degC=1030.0, metal_degC=1030.0, undissolved_kg=2.0), P0))
    warm = np.asarray(_closed_loop_steps(n, dt, 6.0, feed_factor=1.0)(
        state(oxide_wtpct=2.0, bath_degC=1050.0, metal_degC=1035.0, undissolved_kg=2.0), P0))
    assert cold[i_tm].min() < PN["metal_melting_degC"]
    assert warm[i_tm].min() > PN["metal_melting_degC"]


# ------------------------------------------------------------------ sludge / saturation
@pytest.mark.parametrize("feed_kg_h", [14.0, 28.0, 40.0])
def test_overfeeding_grows_undissolved_and_caps_at_saturation(feed_kg_h: float) -> None:
    """Feed well above consumption: undissolved oxide grows, dissolved wt% never exceeds saturation."""
    dt = 5.0
    n = int(6 * 3600 / dt)
    x0 = state(oxide_wtpct=2.5, bath_degC=1050.0, undissolved_kg=2.0)
    consumption = aux(x0)["oxide_consumption_kg_h"]
    assert feed_kg_h > 1.4 * consumption
    X = np.asarray(_closed_loop_steps(n, dt, 6.0, feed_factor=None, feed_kg_h=feed_kg_h)(x0, P0))
    A = np.asarray(MODEL.aux.map(n)(X, [6.0, feed_kg_h, 0.0], [AMBIENT, 0.0, 0.0], P0))
    c = A[MODEL.aux_names.index("dissolved_oxide_wtpct")]
    c_sat = A[MODEL.aux_names.index("oxide_saturation_wtpct")]
    m_u = X[MODEL.state_names.index("undissolved_oxide_kg")]
    assert np.max(c - c_sat) <= 0.05
    assert c[-1] > c_sat[-1] - 0.3  # it does get to saturation
    assert m_u[-1] > 2.0 + 0.3 * (feed_kg_h - consumption) * 6.0 * 0.5
    assert np.all(np.diff(m_u[len(m_u) // 2:]) > 0.0)


# ------------------------------------------------------------------ definition hygiene
def test_parameters_have_units_sources_and_unique_names() -> None:
    """Every parameter has a unit, a source and a finite nominal value; all names are unique."""
    names = MODEL.parameter_names
    assert len(names) == len(set(names))
    for q in MODEL.parameters:
        assert q.unit.strip(), q.name
        assert q.source.strip(), q.name
        assert q.description.strip(), q.name
        assert math.isfinite(q.nominal), q.name
    for group in (MODEL.state_names, MODEL.input_names, MODEL.disturbance_names, MODEL.output_names,
                  MODEL.aux_names):
        assert len(group) == len(set(group))
    for s in (*MODEL.states, *MODEL.inputs, *MODEL.disturbances, *MODEL.outputs, *MODEL.aux_signals):
        assert s.unit.strip(), s.name
    assert "nd_electrolysis_cell" in model_names()


def test_parameter_vector_overrides_and_rejects_unknown_names() -> None:
    """parameter_vector applies overrides by name and raises KeyError for unknown names."""
    p = MODEL.parameter_vector({"ce_ref": 0.7})
    assert p[MODEL.parameter_names.index("ce_ref")] == 0.7
    assert np.array_equal(np.delete(p, MODEL.parameter_names.index("ce_ref")),
                          np.delete(P0, MODEL.parameter_names.index("ce_ref")))
    with pytest.raises(KeyError, match="no_such_parameter"):
        MODEL.parameter_vector({"no_such_parameter": 1.0})
