"""The reduction furnace's filter tuning: the parameter biases that absorb the reduction model's
largest uncertainties (reaction rate, retort-to-charge heat transfer, insulation losses, outgassing),
noise, bounds, and the seeding of the temperatures from the charge thermocouple."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from estimators.ekf import BiasState
from estimators.furnace_ekf import FurnaceFilterTuning
from sim.models.base import ProcessModel


def seed_from_thermocouple(model: ProcessModel, p: np.ndarray, x0: dict[str, float], meas: Mapping[str, float]) -> None:
    """Charge, retort and thermocouple at the charge thermocouple (a batch starts from a furnace at
    rest); the condenser stays at the tuning's initial value (cooling water)."""
    temp = meas.get("tc_temp_degC", math.nan)
    if not math.isfinite(temp):
        return
    for name in ("charge_temp_degC", "retort_temp_degC", "tc_temp_degC"):
        x0[name] = temp


REDUCTION_TUNING = FurnaceFilterTuning(
    biases=(
        BiasState("rate_bias", "rate_ref_1_s", "log"),
        BiasState("transfer_bias", "charge_retort_htc_kW_K", "log"),
        BiasState("loss_bias", "retort_loss_resistance_K_kW", "log"),
        BiasState("outgassing_bias", "outgassing_per_K_Pa_m3_K", "log"),
    ),
    initial={"charge_temp_degC": 25.0, "retort_temp_degC": 25.0, "tc_temp_degC": 25.0,
             "condenser_temp_degC": 25.0, "chamber_pressure_Pa": 0.05, "reacted_fraction": 0.0,
             "distilled_kg": 0.0, "condensed_kg": 0.0, "rate_bias": 0.0, "transfer_bias": 0.0,
             "loss_bias": 0.0, "outgassing_bias": 0.0},
    initial_std={"charge_temp_degC": 3.0, "retort_temp_degC": 10.0, "tc_temp_degC": 1.0,
                 "condenser_temp_degC": 5.0, "chamber_pressure_Pa": 0.05, "reacted_fraction": 1e-3,
                 "distilled_kg": 1e-3, "condensed_kg": 1e-3, "rate_bias": 0.3, "transfer_bias": 0.2,
                 "loss_bias": 0.15, "outgassing_bias": 0.3},
    # The retort node absorbs the heater and loss errors; the reaction's progress is known only
    # through the model (and the gas it releases), so it may drift slowly.
    process_std_per_sqrt_h={"charge_temp_degC": 1.0, "retort_temp_degC": 5.0, "tc_temp_degC": 0.5,
                            "condenser_temp_degC": 5.0, "chamber_pressure_Pa": 0.5, "reacted_fraction": 0.02,
                            "distilled_kg": 0.2, "condensed_kg": 0.2, "rate_bias": 0.05,
                            "transfer_bias": 0.05, "loss_bias": 0.02, "outgassing_bias": 0.1},
    measurement_std={"tc_temp_degC": 1.0, "chamber_pressure_Pa": 0.02},
    measurement_rel_std={"chamber_pressure_Pa": 0.04},
    bounds={"charge_temp_degC": (0.0, 2000.0), "retort_temp_degC": (0.0, 2000.0), "tc_temp_degC": (0.0, 2000.0),
            "condenser_temp_degC": (0.0, 1500.0), "chamber_pressure_Pa": (0.0, 1.0e5),
            "reacted_fraction": (0.0, 1.0), "distilled_kg": (0.0, 1.0e3), "condensed_kg": (0.0, 1.0e3),
            "rate_bias": (-2.0, 2.0), "transfer_bias": (-1.0, 1.0), "loss_bias": (-1.0, 1.0),
            "outgassing_bias": (-2.0, 2.0)},
    disturbance_values={"cooling_water_temp_degC": 25.0, "leak_rate_Pa_m3_s": 2.0e-3},
    std_signals=("metal_in_charge_kg",),
    seed=seed_from_thermocouple,
)
"""Filter tuning of the ``reduction_furnace`` model."""
