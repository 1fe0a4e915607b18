"""Recipe sections of the furnaces (vacuum induction, annealing, …): the filter choice, the PID
baseline and curve MPC, the heating curve and how a batch runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from apc.recipe.curve_schema import BatchSection, CurveSection
from apc.recipe.furnace_tuning import FurnaceMpcSection, FurnacePidSection
from apc.recipe.learning_schema import LearningSection
from apc.recipe.schema import ControllerSection, EstimatorSection, Recipe


@dataclass(frozen=True)
class FurnaceEstimatorSection(EstimatorSection):
    """The furnace filter (its tuning is the kind's, per model)."""

    kind: Literal["ekf"] = "ekf"
    """``ekf``: the furnace Kalman filter on the recipe's nominal model."""


@dataclass(frozen=True)
class FurnaceControllerSection(ControllerSection):
    """Controller choice and tuning of a furnace."""

    pid: FurnacePidSection | None = None
    """The industrial PID baseline; required when ``kind`` is ``baseline``."""
    furnace_mpc: FurnaceMpcSection | None = None
    """The curve-tracking MPC; required when ``kind`` is ``mpc``."""


@dataclass(frozen=True)
class FurnaceRecipe(Recipe):
    """A furnace's recipe: the generic sections, its controllers, its heating curve and batch."""

    estimator: FurnaceEstimatorSection
    controller: FurnaceControllerSection
    curve: CurveSection | None = None
    """The heating curve (see ``docs/heating_curves.md``); required."""
    batch: BatchSection | None = None
    """How a batch runs the curve (state file, restart, soak extension, preview); required."""
    learning: LearningSection | None = None
    """Learning across batches (see ``docs/batch_learning.md``); None: none."""
