"""Anode-effect forecast: the probability of an anode effect within a horizon and its expected lead time.

Two routes, combined as independent evidence (noisy-OR), each cheap and closed-form (no solver):

* **Oxide route**, from the Kalman filter's dissolved oxide c with its σ, its net rate ċ (feed and
  dissolution minus the Faraday consumption η·I·M/(6F), from the model at the estimate) with σ_ċ
  and correlation ρ, and the critical concentration c_cr at which the critical anode current
  density falls to the actual one. At each horizon step t_k = k·Δ (k = 0 … N, N·Δ = horizon)::

      μ_k = c + ċ·t_k
      σ_k² = σ_c² + 2ρ·σ_c·σ_ċ·t_k + σ_ċ²·t_k²
      P_k = Φ((c_cr − μ_k) / σ_k)                  (Gaussian: P(oxide < critical) at t_k)

* **Voltage route**, the classic precursor: the pseudo-resistance slope s (µΩ/h) of the baseline
  signals, through a logistic ``p_v = 1 / (1 + exp(−(s − s50) / w))`` (``s50``: slope at which
  p_v = ½, ``w``: its width). It carries no time, so it counts as a hazard from now on.

Combined per step: ``Q_k = 1 − (1 − P_k)(1 − p_v)``. The forecast probability is ``max_k Q_k`` (the
chance of being below critical at some step of the horizon, under the filter's Gaussian); the
lead time is the first t_k with ``Q_k ≥ ½`` (the median onset), the horizon when the probability
reaches the threshold but the median lies beyond it, and NaN when the probability is below the
threshold (no forecast). Missing inputs (NaN) drop their route.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from apc.kinds.electrolysis_cell.recipe import CellEstimatorSection, CellRecipe

__all__ = ["AeForecast", "AeForecastConfig", "combined_forecast", "forecast", "oxide_probabilities",
           "voltage_probability"]


@dataclass(frozen=True)
class AeForecastConfig:
    """Forecast settings (from the recipe: :meth:`from_recipe`; fields documented there)."""

    horizon_s: float = 1800.0
    step_s: float = 60.0
    threshold: float = 0.2
    slope_uohm_h: float = 40.0
    slope_width_uohm_h: float = 10.0

    def __post_init__(self) -> None:
        for name in ("horizon_s", "step_s", "slope_width_uohm_h"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in (0, 1], got {self.threshold!r}")
        if not math.isfinite(self.slope_uohm_h):
            raise ValueError(f"slope_uohm_h must be finite, got {self.slope_uohm_h!r}")

    @classmethod
    def from_section(cls, est: CellEstimatorSection) -> AeForecastConfig:
        """The ``estimator.ae_forecast_*`` fields of a cell recipe."""
        return cls(horizon_s=est.ae_forecast_horizon_s, step_s=est.ae_forecast_step_s,
                   threshold=est.ae_forecast_threshold, slope_uohm_h=est.ae_forecast_slope_uohm_h,
                   slope_width_uohm_h=est.ae_forecast_slope_width_uohm_h)

    @classmethod
    def from_recipe(cls, recipe: CellRecipe) -> AeForecastConfig:
        """The recipe's forecast settings."""
        return cls.from_section(recipe.estimator)

    @property
    def n_steps(self) -> int:
        """Horizon steps N (the horizon rounded up to whole steps)."""
        return max(1, math.ceil(self.horizon_s / self.step_s - 1e-9))


@dataclass(frozen=True)
class AeForecast:
    """One cycle's forecast."""

    probability: float
    """Probability (0–1) of an anode effect within the horizon."""
    lead_s: float
    """Expected time to onset, s (0: now); NaN when ``probability`` is below the threshold."""
    oxide_probability: float
    """The oxide route alone (0 without an oxide estimate)."""
    voltage_probability: float
    """The voltage route alone (0 without a slope)."""


def _phi(z: float) -> float:
    """Standard normal CDF."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def oxide_probabilities(c_wtpct: float, c_std_wtpct: float, critical_wtpct: float, rate_wtpct_h: float,
                        rate_std_wtpct_h: float, corr: float, cfg: AeForecastConfig) -> list[float]:
    """P(oxide < critical) at t_k = k·step_s, k = 0 … N (see the module docstring); all 0 when an
    input is NaN. A zero σ gives a step (1 below critical, 0 above)."""
    inputs = (c_wtpct, c_std_wtpct, critical_wtpct, rate_wtpct_h)
    n = cfg.n_steps
    if not all(math.isfinite(v) for v in inputs):
        return [0.0] * (n + 1)
    r_std = rate_std_wtpct_h if math.isfinite(rate_std_wtpct_h) else 0.0
    rho = min(1.0, max(-1.0, corr)) if math.isfinite(corr) else 0.0
    out = []
    for k in range(n + 1):
        t_h = min(k * cfg.step_s, cfg.horizon_s) / 3600.0
        mu = c_wtpct + rate_wtpct_h * t_h  # μ_k = c + ċ·t_k
        var = c_std_wtpct**2 + 2.0 * rho * c_std_wtpct * r_std * t_h + (r_std * t_h) ** 2  # σ_k²
        sigma = math.sqrt(max(var, 0.0))
        if sigma <= 0.0:
            out.append(1.0 if mu < critical_wtpct else 0.0)
        else:
            out.append(_phi((critical_wtpct - mu) / sigma))  # P_k = Φ((c_cr − μ_k)/σ_k)
    return out


def voltage_probability(slope_uohm_h: float, cfg: AeForecastConfig) -> float:
    """Logistic in the pseudo-resistance slope: ½ at ``slope_uohm_h``; 0 when the slope is NaN."""
    if not math.isfinite(slope_uohm_h):
        return 0.0
    z = (slope_uohm_h - cfg.slope_uohm_h) / cfg.slope_width_uohm_h
    if z < -700.0:
        return 0.0
    return 1.0 / (1.0 + math.exp(-z))


def combined_forecast(p_oxide: list[float], p_voltage: float, cfg: AeForecastConfig) -> AeForecast:
    """Noisy-OR of the two routes per step; probability = max over the horizon, lead = first step at
    which the combined probability reaches ½ (see the module docstring)."""
    q = [1.0 - (1.0 - p) * (1.0 - p_voltage) for p in p_oxide]  # Q_k = 1 − (1 − P_k)(1 − p_v)
    prob = max(q)
    if prob < cfg.threshold:
        lead = math.nan
    else:
        k_half = next((k for k, v in enumerate(q) if v >= 0.5), None)
        lead = cfg.horizon_s if k_half is None else min(k_half * cfg.step_s, cfg.horizon_s)
    return AeForecast(prob, lead, max(p_oxide), p_voltage)


def forecast(c_wtpct: float, c_std_wtpct: float, critical_wtpct: float, rate_wtpct_h: float,
             rate_std_wtpct_h: float, corr: float, slope_uohm_h: float, cfg: AeForecastConfig) -> AeForecast:
    """Both routes and their combination for one cycle."""
    p_ox = oxide_probabilities(c_wtpct, c_std_wtpct, critical_wtpct, rate_wtpct_h, rate_std_wtpct_h, corr, cfg)
    return combined_forecast(p_ox, voltage_probability(slope_uohm_h, cfg), cfg)
