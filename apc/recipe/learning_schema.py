"""The ``learning:`` section of a furnace recipe: what a batch learns from the batches before it.

Two things are learned (see ``docs/batch_learning.md``):

* the filter's parameter biases (``carry_parameters``): the next batch's filter starts from the
  last batch's identified biases, their covariance multiplied by ``inflate_factor`` and widened by a
  random walk of ``random_walk_std[name]`` per batch (drift between batches) and, when the batch
  is of another material lot than the last, by ``lot_change_std[name]``;
* the curve's adjustable terms (``adjust``): a run-to-run step on each term from the last batch's
  measured outcome, inside [low, high] and by at most ``max_step`` per batch. ``apply: auto`` runs
  the next batch with it; ``apply: propose`` only shows it to the engineer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ADJUSTABLE_TERMS", "AdjustableTerm", "LearningSection"]

ADJUSTABLE_TERMS = ("melt_power_kW", "soak_extension_min", "ramp_rate_degC_min")
"""What run-to-run may adjust: the power of every melt segment, the extension of every soak, the
rate of one ramp (``segment``)."""


@dataclass(frozen=True)
class AdjustableTerm:
    """One curve term run-to-run may move, with its engineering bounds."""

    low: float
    high: float
    max_step: float
    """Largest change from one batch to the next (> 0)."""
    target: float
    """What the term steers, by term: ``melt_power_kW`` and ``ramp_rate_degC_min``: the peak chamber
    pressure of the melt / ramp as a fraction of ``curve.pressure_limit_Pa`` (0–1);
    ``soak_extension_min``: minutes of estimated-core soak beyond the required time to keep."""
    gain: float = 0.5
    """Share of the computed correction applied per batch (0–1]."""
    segment: int | None = None
    """``ramp_rate_degC_min``: index of the ramp it sets (required there)."""
    time_target: float | None = None
    """``melt_power_kW`` only: the melt's duration to stay under, as a fraction of its timeout
    (0–1]. A slower melt is not stepped down on its pressure (the melt is pressure-limited: the
    in-batch pressure limit holds the vessel, less power only brings the timeout nearer) and steps up
    on its time when the pressure allows; None: the pressure alone decides."""

    def __post_init__(self) -> None:
        for name in ("low", "high", "max_step", "target", "gain"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number")
        if not self.low < self.high:
            raise ValueError(f"low must be below high, got [{self.low:g}, {self.high:g}]")
        if not self.max_step > 0:
            raise ValueError("max_step must be > 0")
        if not 0 < self.gain <= 1:
            raise ValueError("gain must be in (0, 1]")
        if self.time_target is not None and not (math.isfinite(self.time_target) and 0 < self.time_target <= 1):
            raise ValueError("time_target is a fraction of the melt's timeout, in (0, 1]")


@dataclass(frozen=True)
class LearningSection:
    """Learning across batches (see the module docstring)."""

    enabled: bool = False
    """False: every batch starts from the recipe's nominal values (the history is still kept)."""
    history_file: str = "history.sqlite"
    """Batch history (SQLite), beside the batch state file."""
    carry_parameters: bool = True
    """Start the filter's parameter biases from the last batch's identified ones."""
    inflate_factor: float = 2.0
    """Covariance multiplier applied to the carried biases (≥ 1)."""
    random_walk_std: dict[str, float] = field(default_factory=dict)
    """Per bias name: standard deviation of its drift from one batch to the next (process noise
    per batch); missing names drift by 0."""
    lot_change_std: dict[str, float] = field(default_factory=dict)
    """Per bias name: standard deviation of its change when the batch's material lot differs from the
    last batch's (another charge: its outgassing, mass, resistance); added to the carried variance
    on a new lot, so a filter primed by the last lot is not sure of what the new one does."""
    adjust: dict[str, AdjustableTerm] = field(default_factory=dict)
    """Run-to-run terms by name (:data:`ADJUSTABLE_TERMS`)."""
    apply: Literal["auto", "propose"] = "propose"
    """``auto``: the next batch runs with the adjusted terms; ``propose``: they are shown only."""
    guarantee_soak: bool = True
    """With learning enabled, the PID baseline's soaks also wait for the estimated controlled signal
    (the core) to complete the soak time inside the band by ``batch.soak_margin_sigmas``: a learnt
    extension that proves too short for a new lot lengthens that batch's soak instead of missing it."""

    def __post_init__(self) -> None:
        if not (self.inflate_factor >= 1.0 and math.isfinite(self.inflate_factor)):
            raise ValueError("inflate_factor must be a finite number >= 1")
        for field_name in ("random_walk_std", "lot_change_std"):
            for name, std in getattr(self, field_name).items():
                if not (std >= 0 and math.isfinite(std)):
                    raise ValueError(f"{field_name} {name!r} must be a finite number >= 0")
        for name, term in self.adjust.items():
            if name not in ADJUSTABLE_TERMS:
                raise ValueError(f"adjust {name!r} is not adjustable (known: {', '.join(ADJUSTABLE_TERMS)})")
            if name == "ramp_rate_degC_min" and term.segment is None:
                raise ValueError("adjust ramp_rate_degC_min needs segment (the index of its ramp)")
            if name in ("melt_power_kW", "ramp_rate_degC_min") and not 0 < term.target <= 1:
                raise ValueError(f"adjust {name}: target is a fraction of the pressure limit, in (0, 1]")
            if term.time_target is not None and name != "melt_power_kW":
                raise ValueError(f"adjust {name}: time_target applies to melt_power_kW only")
            if name == "soak_extension_min" and term.low < 0:
                raise ValueError("adjust soak_extension_min: low must be >= 0")
        text = self.history_file.strip()
        if not text or text.startswith(("/", "\\")) or ".." in text.replace("\\", "/").split("/"):
            raise ValueError("history_file must be a relative path beside the batch state file")
