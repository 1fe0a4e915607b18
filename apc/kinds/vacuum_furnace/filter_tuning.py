"""The vacuum induction furnace's filter tuning: the parameter biases that absorb the VIM model's
largest uncertainties (coupling, outgassing, melt degassing), noise, bounds, and the seeding of the
charge enthalpy from the thermocouple."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy.optimize import brentq

from estimators.ekf import BiasState
from estimators.furnace_ekf import FurnaceFilterTuning
from sim.models.base import ProcessModel


def seed_charge_enthalpy(model: ProcessModel, p: np.ndarray, x0: dict[str, float], meas: Mapping[str, float]) -> None:
    """Charge and wall at the thermocouple; enthalpy by inverting the model's T(H)."""
    temp = meas.get("tc_temp_degC", math.nan)
    if not math.isfinite(temp):
        return
    i_t = model.aux_names.index("charge_temp_degC")
    x = np.array([x0[n] for n in model.state_names])
    u = np.zeros(len(model.inputs))
    d = np.zeros(len(model.disturbances))
    i_h = model.state_names.index("charge_enthalpy_MJ")

    def temp_of(h_MJ: float) -> float:
        x[i_h] = h_MJ
        return float(np.asarray(model.aux(x, u, d, p)).ravel()[i_t])

    lo, hi = -5.0, 200.0
    if temp_of(lo) < temp < temp_of(hi):
        x0["charge_enthalpy_MJ"] = float(brentq(lambda h: temp_of(h) - temp, lo, hi, xtol=1e-6))
    x0["wall_temp_degC"] = temp


VIM_TUNING = FurnaceFilterTuning(
    biases=(
        BiasState("coupling_bias", "coupling_efficiency", "log"),
        BiasState("outgassing_bias", "outgassing_per_K_Pa_m3_K", "log"),
        BiasState("base_outgassing_bias", "outgassing_base_Pa_m3_s", "log"),
        BiasState("melt_degassing_bias", "melt_degassing_Pa_m3_kg", "log"),
    ),
    initial={"charge_enthalpy_MJ": 0.0, "wall_temp_degC": 25.0, "tc_temp_degC": 25.0,
             "chamber_pressure_Pa": 0.05, "evaporated_kg": 0.0, "coupling_bias": 0.0,
             "outgassing_bias": 0.0, "base_outgassing_bias": 0.0, "melt_degassing_bias": 0.0},
    initial_std={"charge_enthalpy_MJ": 0.15, "wall_temp_degC": 20.0, "tc_temp_degC": 1.0,
                 "chamber_pressure_Pa": 0.05, "evaporated_kg": 1e-3, "coupling_bias": 0.15,
                 "outgassing_bias": 0.3, "base_outgassing_bias": 0.5, "melt_degassing_bias": 0.3},
    # The melt's gas release comes in bursts the nominal model only roughly knows: the pressure
    # state may move fast (the gauge is trusted), else the gate rejects the real rise.
    process_std_per_sqrt_h={"charge_enthalpy_MJ": 0.3, "wall_temp_degC": 10.0, "tc_temp_degC": 1.0,
                            "chamber_pressure_Pa": 1.0, "evaporated_kg": 0.01, "coupling_bias": 0.05,
                            "outgassing_bias": 0.1, "base_outgassing_bias": 0.2, "melt_degassing_bias": 0.3},
    measurement_std={"tc_temp_degC": 1.0, "chamber_pressure_Pa": 0.02},
    measurement_rel_std={"chamber_pressure_Pa": 0.04},
    bounds={"charge_enthalpy_MJ": (-5.0, 200.0), "wall_temp_degC": (0.0, 2000.0),
            "tc_temp_degC": (0.0, 2000.0), "chamber_pressure_Pa": (0.0, 1.0e5),
            "evaporated_kg": (0.0, 1.0e3), "coupling_bias": (-1.0, 1.0), "outgassing_bias": (-2.0, 2.0),
            "base_outgassing_bias": (-3.0, 3.0), "melt_degassing_bias": (-2.0, 2.0)},
    disturbance_values={"cooling_water_temp_degC": 25.0, "leak_rate_Pa_m3_s": 1.0e-3},
    std_signals=("charge_temp_degC", "liquid_fraction"),
    seed=seed_charge_enthalpy,
)
"""Filter tuning of the ``vim_furnace`` model."""
