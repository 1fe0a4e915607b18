"""Baseline signals plus the Kalman filter's hidden states in one estimate.

The baseline signals (filtered voltage, pseudo-resistance and slope, last
dip) keep feeding the tracking-feed controller; the filter adds dissolved and
undissolved oxide, bath and metal temperature, anode–cathode distance and
slow biases, each with its covariance.

Health gates the unit (no writes while unhealthy). With ``gate_on_filter``
(a controller that acts on the filter's states) it is the worse of the two;
without it (the baseline controller, which reads only the signals) it is the
signals' health, so adding the filter never changes when the baseline may
act. The filter's own health is always reported as the extra
``filter_healthy`` (1 or 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from apc.types import Estimate, ValidatedInput


class _StateFilter(Protocol):
    def update(self, t_s: float, inputs: Mapping[str, ValidatedInput], applied: Mapping[str, float],
               extra_measurements: Mapping[str, tuple[float, float, float | None]] | None = None) -> Estimate: ...

    def reset(self) -> None: ...


class _SignalEstimator(Protocol):
    def update(self, t_s: float, inputs: Mapping[str, ValidatedInput], applied: Mapping[str, float]) -> Estimate: ...

    def reset(self) -> None: ...


class CompositeEstimator:
    """Runs the baseline signal estimator and a state filter side by side."""

    def __init__(self, signals: _SignalEstimator, state_filter: _StateFilter, soft_sensor: Any = None,
                 gate_on_filter: bool = True) -> None:
        self.signals = signals
        self.filter = state_filter
        self.soft_sensor = soft_sensor
        self.gate_on_filter = gate_on_filter

    def reset(self) -> None:
        """Forget all history."""
        self.signals.reset()
        self.filter.reset()
        if self.soft_sensor is not None:
            self.soft_sensor.reset()

    def update(self, t_s: float, inputs: Mapping[str, ValidatedInput], applied: Mapping[str, float]) -> Estimate:
        """Update both; the filter's states and covariance, the signals as extras."""
        base = self.signals.update(t_s, inputs, applied)
        extra = None
        soft_extras: dict[str, float] = {}
        if self.soft_sensor is not None:
            extra, soft_extras = self.soft_sensor.update(t_s, inputs, applied)
        est = self.filter.update(t_s, inputs, applied, extra)
        extras = dict(zip(base.names, base.x))
        extras.update(base.extras)
        extras.update(est.extras)
        extras.update(soft_extras)
        extras["filter_healthy"] = 1.0 if est.healthy else 0.0
        health = base.health if not base.healthy or not self.gate_on_filter else est.health
        return Estimate(est.names, est.units, est.x, est.P, health, extras)
