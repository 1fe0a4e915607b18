"""The annealing furnace's filter tuning: the parameter biases that absorb the annealer model's
largest uncertainties (losses, gas-to-load transfer, the load's core resistance and mass, which
differs from batch to batch), noise, bounds, and the seeding of the load from its thermocouples."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from estimators.ekf import BiasState
from estimators.furnace_ekf import FurnaceFilterTuning
from sim.models.base import ProcessModel


def seed_load_temperatures(model: ProcessModel, p: np.ndarray, x0: dict[str, float], meas: Mapping[str, float]) -> None:
    """Surface and core at the load thermocouple (else at the gas thermocouple)."""
    for src in ("load_tc_temp_degC", "gas_temp_degC"):
        v = meas.get(src, math.nan)
        if math.isfinite(v):
            x0["surface_temp_degC"] = v
            x0["core_temp_degC"] = v
            if "load_tc_temp_degC" not in meas:
                x0["load_tc_temp_degC"] = v
            return


ANNEALING_TUNING = FurnaceFilterTuning(
    biases=(
        BiasState("loss_bias", "loss_resistance_K_kW", "log"),
        BiasState("transfer_bias", "convective_hA_kW_K", "log"),
        BiasState("core_bias", "core_resistance_K_kW", "log"),
        BiasState("mass_bias", "load_mass_t", "log"),
    ),
    initial={"gas_temp_degC": 25.0, "surface_temp_degC": 25.0, "core_temp_degC": 25.0,
             "load_tc_temp_degC": 25.0, "loss_bias": 0.0, "transfer_bias": 0.0, "core_bias": 0.0,
             "mass_bias": 0.0},
    initial_std={"gas_temp_degC": 1.0, "surface_temp_degC": 3.0, "core_temp_degC": 5.0,
                 "load_tc_temp_degC": 1.0, "loss_bias": 0.2, "transfer_bias": 0.2, "core_bias": 0.2,
                 "mass_bias": 0.15},
    process_std_per_sqrt_h={"gas_temp_degC": 2.0, "surface_temp_degC": 1.0, "core_temp_degC": 0.5,
                            "load_tc_temp_degC": 0.5, "loss_bias": 0.01, "transfer_bias": 0.02, "core_bias": 0.0,
                            "mass_bias": 0.0},
    measurement_std={"gas_temp_degC": 1.0, "load_tc_temp_degC": 1.0},
    measurement_rel_std={},
    bounds={"gas_temp_degC": (-50.0, 1000.0), "surface_temp_degC": (-50.0, 1000.0),
            "core_temp_degC": (-50.0, 1000.0), "load_tc_temp_degC": (-50.0, 1000.0),
            "loss_bias": (-1.5, 1.5), "transfer_bias": (-1.5, 1.5), "core_bias": (-1.5, 1.5),
            "mass_bias": (-0.7, 0.7)},
    disturbance_values={"ambient_temp_degC": 25.0},
    input_values={"gas_flow_frac": 1.0},
    std_signals=("core_surface_dT_K",),
    seed=seed_load_temperatures,
)
"""Filter tuning of the ``annealing_furnace`` model."""
