"""Baseline estimate: filtered measurements, pseudo-resistance and its slope.

What a plant's cell controller computes today (reference §2): the voltage is
low-pass filtered, the pseudo-resistance R = (U − E0)/I is averaged over
fixed intervals (2 min), and a straight line through the last means gives the
slope that the tracking feed switches on. The last thermocouple dip is the
bath temperature. Anode effects are confirmed on the raw voltage and current
(:mod:`apc.kinds.electrolysis_cell.anode_effect`), reported as the extra
``anode_effect_detected`` (1/0); samples of an excursion above the threshold
enter the resistance means only once it is confirmed (an outlier never does). No hidden state is inferred here (that is
the Kalman filter's job).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

import numpy as np

from apc.kinds.electrolysis_cell.anode_effect import AnodeEffectConfig, AnodeEffectDetector, AnodeEffectPhase
from apc.kinds.electrolysis_cell.recipe import FilteredEstimatorSection
from apc.types import Estimate, ValidatedInput

NAMES = (
    "cell_voltage_V",
    "current_kA",
    "pseudo_resistance_uohm",
    "resistance_slope_uohm_h",
    "bath_temp_dip_degC",
)
UNITS = ("V", "kA", "uOhm", "uOhm/h", "degC")
AE_DETECTED = "anode_effect_detected"
"""Extra signal: 1.0 while a confirmed anode effect is in force, else 0.0."""


class FilteredEstimator:
    """Filtered voltage and current, 2-min mean pseudo-resistance, a least-squares slope and the
    anode-effect detector (threshold ``anode_effect_voltage_V``, times from ``cfg``)."""

    def __init__(self, cfg: FilteredEstimatorSection, *, voltage: str = "cell_voltage",
                 current: str = "line_current", dip: str = "bath_temp_dip", electrode: str = "",
                 anode_effect_voltage_V: float = 15.0) -> None:
        self.cfg = cfg
        self.anode_effect = AnodeEffectDetector(AnodeEffectConfig.from_sections(anode_effect_voltage_V, cfg))
        self._voltage, self._current, self._dip = voltage, current, dip
        self._electrode = electrode
        self._n_means = max(3, round(cfg.slope_window_s / cfg.mean_interval_s))
        self.reset()

    def reset(self) -> None:
        """Forget all history."""
        self._t_last: float | None = None
        self._u_f = math.nan
        self._i_f = math.nan
        self._dip_degC = math.nan
        self._acc_sum = 0.0
        self._acc_n = 0
        self._acc_start: float | None = None
        self._means: deque[tuple[float, float]] = deque(maxlen=self._n_means)
        self._r_mean = math.nan
        self._electrode_pos: float | None = None
        self._warmed = False
        self._held: list[tuple[float, float]] = []
        """Resistance samples of an unconfirmed excursion above the anode-effect threshold."""
        self.anode_effect.reset()

    def _accumulate(self, t_s: float, r_uohm: float) -> None:
        """One resistance sample into the current mean; close the mean after ``mean_interval_s``."""
        if self._acc_start is None:
            self._acc_start = t_s
        self._acc_sum += r_uohm
        self._acc_n += 1
        if t_s - self._acc_start >= self.cfg.mean_interval_s - 1e-9:
            mean = self._acc_sum / self._acc_n
            self._means.append((t_s, mean))
            self._r_mean = mean
            self._acc_sum, self._acc_n, self._acc_start = 0.0, 0, None

    def _slope_uohm_h(self) -> float:
        if len(self._means) < self._n_means:
            return math.nan
        t = np.array([m[0] for m in self._means]) / 3600.0
        r = np.array([m[1] for m in self._means])
        t = t - t.mean()
        return float(np.dot(t, r - r.mean()) / np.dot(t, t))

    def update(self, t_s: float, inputs: Mapping[str, ValidatedInput], applied: Mapping[str, float]) -> Estimate:
        """Filter this cycle's voltage and current; skip (and report) invalid ones."""
        dt = 0.0 if self._t_last is None else t_s - self._t_last
        self._t_last = t_s
        a = 1.0 - math.exp(-dt / self.cfg.voltage_filter_tau_s) if dt > 0 else 1.0
        problems = []
        u_in, i_in = inputs.get(self._voltage), inputs.get(self._current)
        ae = self.anode_effect.update(t_s, _valid_value(u_in), _valid_value(i_in))
        if u_in is not None and u_in.ok and u_in.sample is not None:
            u = u_in.sample.value
            self._u_f = u if math.isnan(self._u_f) else self._u_f + a * (u - self._u_f)
        else:
            problems.append(f"{self._voltage} invalid")
        if i_in is not None and i_in.ok and i_in.sample is not None:
            i = i_in.sample.value
            self._i_f = i if math.isnan(self._i_f) else self._i_f + a * (i - self._i_f)
        else:
            problems.append(f"{self._current} invalid")
        pos = applied.get(self._electrode) if self._electrode else None
        if pos is not None and self._electrode_pos is not None and pos != self._electrode_pos:
            # An electrode move steps R: restart the slope fit rather than read the step as a trend.
            self._means.clear()
            self._acc_sum, self._acc_n, self._acc_start = 0.0, 0, None
            self._held.clear()
        self._electrode_pos = pos
        dip = inputs.get(self._dip)
        if dip is not None and dip.ok and dip.sample is not None:
            self._dip_degC = dip.sample.value
        if not problems and self._i_f > 0.1 and u_in is not None and u_in.sample is not None:
            # R from the raw voltage: the mean is the filter for the slope.
            r = (u_in.sample.value - self.cfg.back_emf_V) / (i_in.sample.value * 1e3) * 1e6  # type: ignore[union-attr]
            if ae.phase is AnodeEffectPhase.SUSPECT:
                # Above the threshold, not confirmed: held back until the detector decides, so an
                # outlier never enters the means and a confirmed anode effect enters them as before.
                self._held.append((t_s, r))
            else:
                if ae.confirmed_now:
                    for t_held, r_held in self._held:
                        self._accumulate(t_held, r_held)
                self._held.clear()
                self._accumulate(t_s, r)
        slope = self._slope_uohm_h()
        self._warmed = self._warmed or not math.isnan(slope)
        if problems:
            health = "; ".join(problems)
        elif not self._warmed:
            health = f"warming up: {len(self._means)}/{self._n_means} resistance means"
        else:
            health = "ok"
        x = (self._u_f, self._i_f, self._r_mean, slope, self._dip_degC)
        return Estimate(NAMES, UNITS, x, None, health, {AE_DETECTED: 1.0 if ae.detected else 0.0})


def _valid_value(vi: ValidatedInput | None) -> float | None:
    """The sample's value when the validator passed it, else None."""
    return vi.sample.value if vi is not None and vi.ok and vi.sample is not None else None
