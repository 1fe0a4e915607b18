"""The industrial baseline: tracking feed, resistance-driven electrode moves, current held.

Reference §2: alternate underfeed (~70 % of nominal) and overfeed (~140 %);
switch to overfeed when the pseudo-resistance slope fitted to 2-min means
rises past a trigger (or the underfeed has lasted its maximum, or the cell is
in a confirmed anode effect: the estimate's ``anode_effect_detected``, set once
the measured voltage has stayed above ``anode_effect_voltage_V`` for
``estimator.filtered.ae_confirm_s``); overfeed for a fixed time. The electrode moves toward a
target resistance with a deadband and a minimum interval, only during
overfeed when oxide is high and R reflects the gap; after each thermocouple
dip the target is corrected toward the bath-temperature target (the daily
heat-balance correction plants make, done per dip). Line current is held.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

from apc.kinds.electrolysis_cell.recipe import TrackingFeedSection
from apc.types import Estimate, MvConstraint, Plan, SolverStatus


class FeedPhase(enum.Enum):
    """Phase of the tracking feed cycle."""

    UNDERFEED = "underfeed"
    OVERFEED = "overfeed"


@dataclass(frozen=True)
class MvNames:
    """Which recipe MV plays which role."""

    feed: str = "oxide_feed"
    anode: str = "anode_move"
    current: str = "line_current"


class TrackingFeedController:
    """Stateful baseline controller; see module docstring."""

    def __init__(self, cfg: TrackingFeedSection, mvs: MvNames = MvNames()) -> None:
        self.cfg = cfg
        self.mvs = mvs
        self.phase = FeedPhase.OVERFEED
        self._phase_start: float | None = None
        self._last_attempt_t: float | None = None
        """Last time it asked for an electrode move while driving the electrode (its own pacing)."""
        self._last_dip: float | None = None
        self.target_correction_uohm = 0.0

    def track(self, applied: Mapping[str, float]) -> None:
        """Nothing to forget: the feed cycle runs on; the electrode's minimum interval comes from the
        unit (its last confirmed move) and the pacing of its own attempts is not reset by a mode change."""

    def _switch(self, phase: FeedPhase, t_s: float) -> None:
        self.phase = phase
        self._phase_start = t_s

    def step(self, t_s: float, estimate: Estimate, applied: Mapping[str, float],
             enabled: Mapping[str, bool], disturbances: Mapping[str, float],
             constraints: Mapping[str, MvConstraint] | None = None) -> Plan:
        """Feed by phase, move the electrode toward the target resistance, hold current.

        Of ``constraints`` only the electrode's ``since_last_move_s`` (for its minimum interval) is
        read: like the plant logic it stands for, the baseline leaves limits to the output guard and
        knows nothing of the DCS's windup status.
        """
        cfg = self.cfg
        if self._phase_start is None:
            self._phase_start = t_s
        in_phase = t_s - self._phase_start
        in_anode_effect = estimate.value("anode_effect_detected") >= 0.5
        slope = estimate.value("resistance_slope_uohm_h")
        r = estimate.value("pseudo_resistance_uohm")
        self._correct_target(estimate.value("bath_temp_dip_degC"))
        reason = ""
        if self.phase is FeedPhase.UNDERFEED:
            if in_anode_effect:
                self._switch(FeedPhase.OVERFEED, t_s)
                reason = "anode effect: overfeed"
            elif in_phase >= cfg.max_underfeed_s:
                self._switch(FeedPhase.OVERFEED, t_s)
                reason = "underfeed time limit"
            elif in_phase >= cfg.min_underfeed_s and not math.isnan(slope) and slope > cfg.slope_trigger_uohm_per_h:
                self._switch(FeedPhase.OVERFEED, t_s)
                reason = f"slope {slope:.2f} uOhm/h > trigger"
        elif in_phase >= cfg.overfeed_duration_s:
            self._switch(FeedPhase.UNDERFEED, t_s)
            reason = "overfeed done"
        ratio = cfg.overfeed_ratio if self.phase is FeedPhase.OVERFEED else cfg.underfeed_ratio
        moves: dict[str, float] = {}
        if self.mvs.feed in applied:
            moves[self.mvs.feed] = cfg.nominal_feed_kg_h * ratio
        if self.mvs.current in applied:
            moves[self.mvs.current] = applied[self.mvs.current]
        if self.mvs.anode in applied:
            moves[self.mvs.anode] = self._electrode(t_s, r, enabled.get(self.mvs.anode, False),
                                                    (constraints or {}).get(self.mvs.anode))
        return Plan(moves, {}, SolverStatus.OK, 0, 0.0, reason or self.phase.value)

    def _correct_target(self, dip_degC: float) -> None:
        """After a new dip, move the resistance target against the temperature error."""
        cfg = self.cfg
        if math.isnan(dip_degC) or dip_degC == self._last_dip:
            return
        self._last_dip = dip_degC
        corr = self.target_correction_uohm - cfg.target_correction_uohm_per_K * (dip_degC - cfg.bath_temp_target_degC)
        lim = cfg.target_correction_limit_uohm
        self.target_correction_uohm = max(-lim, min(lim, corr))

    def _electrode(self, t_s: float, r_uohm: float, driving: bool, c: MvConstraint | None) -> float:
        """One attempt per ``electrode_min_interval_s`` while it drives the electrode (as the plant logic
        paces its move requests, whether or not the DCS could carry one out), and never sooner than that
        after the last move the unit confirmed (``since_last_move_s``)."""
        interval = self.cfg.electrode_min_interval_s
        since = math.inf if c is None else c.since_last_move_s
        if since < interval or (self._last_attempt_t is not None and t_s - self._last_attempt_t < interval):
            return 0.0
        delta = self._electrode_move(r_uohm)
        if delta != 0.0 and driving:
            self._last_attempt_t = t_s
        return delta

    def _electrode_move(self, r_uohm: float) -> float:
        cfg = self.cfg
        if self.phase is not FeedPhase.OVERFEED or math.isnan(r_uohm):
            return 0.0
        error = r_uohm - (cfg.target_resistance_uohm + self.target_correction_uohm)
        if abs(error) <= cfg.resistance_deadband_uohm:
            return 0.0
        # R above target → gap too wide → move the anode toward the cathode (positive).
        return max(-cfg.electrode_step_cm, min(cfg.electrode_step_cm, error / cfg.electrode_uohm_per_cm))
