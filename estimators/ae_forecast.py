"""The anode-effect forecast on top of a cell estimator: adds its extras to every estimate.

Wraps the cell's estimator (the baseline signals alone, or signals plus Kalman filter) and adds
``ae_forecast_probability`` (0–1) and ``ae_forecast_lead_s`` (NaN when no forecast), plus the two
routes alone (``ae_forecast_oxide_probability``, ``ae_forecast_voltage_probability``). It reads only
the wrapped estimate: the filter's dissolved oxide, its σ, critical oxide and oxide rate (the oxide
route; absent with the signals alone) and the pseudo-resistance slope (the voltage route). The math
is :mod:`apc.kinds.electrolysis_cell.anode_effect_forecast`. Nothing else in the estimate changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

from apc.kinds.electrolysis_cell.anode_effect_forecast import AeForecast, AeForecastConfig, forecast
from apc.types import Estimate, ValidatedInput

AE_FORECAST_PROBABILITY = "ae_forecast_probability"
"""Extra: probability (0–1) of an anode effect within the recipe's horizon."""
AE_FORECAST_LEAD = "ae_forecast_lead_s"
"""Extra: expected time to the anode effect's onset, s; NaN while the probability is below the threshold."""
AE_FORECAST_OXIDE = "ae_forecast_oxide_probability"
AE_FORECAST_VOLTAGE = "ae_forecast_voltage_probability"
FORECAST_EXTRAS = (AE_FORECAST_PROBABILITY, AE_FORECAST_LEAD, AE_FORECAST_OXIDE, AE_FORECAST_VOLTAGE)

SLOPE = "resistance_slope_uohm_h"
OXIDE_INPUTS = ("dissolved_oxide_wtpct", "dissolved_oxide_std_wtpct", "critical_oxide_wtpct",
                "dissolved_oxide_rate_wtpct_h", "dissolved_oxide_rate_std_wtpct_h", "dissolved_oxide_rate_corr")
"""Extras of the cell filter the oxide route reads, in the order of :func:`forecast`'s arguments."""


class _Estimator(Protocol):
    def update(self, t_s: float, inputs: Mapping[str, ValidatedInput], applied: Mapping[str, float]) -> Estimate: ...

    def reset(self) -> None: ...


def signal(est: Estimate, name: str) -> float:
    """A named value of an estimate: a state/signal in ``names`` or an extra; NaN when absent."""
    if name in est.extras:
        return float(est.extras[name])
    if name in est.names:
        return float(est.x[est.names.index(name)])
    return math.nan


def forecast_of(est: Estimate, cfg: AeForecastConfig) -> AeForecast:
    """The forecast from one estimate (pure)."""
    c, c_std, c_crit, rate, rate_std, corr = (signal(est, n) for n in OXIDE_INPUTS)
    return forecast(c, c_std, c_crit, rate, rate_std, corr, signal(est, SLOPE), cfg)


class ForecastingEstimator:
    """A cell estimator whose estimates also carry the anode-effect forecast."""

    def __init__(self, inner: _Estimator, cfg: AeForecastConfig) -> None:
        self.inner = inner
        self.cfg = cfg

    def reset(self) -> None:
        """Forget all history (the forecast itself keeps none)."""
        self.inner.reset()

    def update(self, t_s: float, inputs: Mapping[str, ValidatedInput], applied: Mapping[str, float]) -> Estimate:
        """The wrapped estimate with the forecast's extras added."""
        est = self.inner.update(t_s, inputs, applied)
        fc = forecast_of(est, self.cfg)
        extras = {**est.extras, AE_FORECAST_PROBABILITY: fc.probability, AE_FORECAST_LEAD: fc.lead_s,
                  AE_FORECAST_OXIDE: fc.oxide_probability, AE_FORECAST_VOLTAGE: fc.voltage_probability}
        return Estimate(est.names, est.units, est.x, est.P, est.health, extras)
