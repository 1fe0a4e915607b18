"""Hashes that identify what produced a result (recipes, simulator, baseline)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent

SIMULATOR_FILES = ("sim/models/base.py", "sim/models/nd_cell.py", "sim/cell_plant.py", "sim/scenario.py",
                   "plant_io/sim_plant.py")
SIMULATOR_DIRS = ("sim/scenarios",)
BASELINE_FILES = ("controllers/tracking_feed.py", "estimators/filtered.py")


FURNACE_SIMULATOR_FILES = ("sim/models/base.py", "sim/models/vim_furnace.py", "sim/models/annealing_furnace.py",
                           "sim/furnace_plant.py", "plant_io/sim_furnace.py")
FURNACE_SIMULATOR_DIRS = ("sim/scenarios/furnace",)


def tree_sha256(files: tuple[str, ...], dirs: tuple[str, ...] = ()) -> str:
    """SHA-256 over the named source files and the files directly in ``dirs`` (sorted)."""
    h = hashlib.sha256()
    paths = [_ROOT / f for f in files]
    for d in dirs:
        paths.extend(sorted(p for p in (_ROOT / d).glob("*") if p.is_file()))
    for p in paths:
        h.update(str(p.relative_to(_ROOT)).encode())
        h.update(b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


def simulator_sha256() -> str:
    """Hash of the simulated plant: model, plant, scenarios and DCS emulation."""
    return tree_sha256(SIMULATOR_FILES, SIMULATOR_DIRS)


def furnace_simulator_sha256() -> str:
    """Hash of the simulated furnaces: models, plant, scenarios and DCS emulation."""
    return tree_sha256(FURNACE_SIMULATOR_FILES, FURNACE_SIMULATOR_DIRS)


def baseline_sha256(tuning: object = None) -> str:
    """Hash of the industrial baseline: tracking-feed controller, its estimate and its tuning.

    ``tuning`` is the recipe's baseline tuning (e.g. the ``controller.baseline``
    and ``estimator.filtered`` sections); its ``repr`` (frozen dataclasses)
    enters the hash, so other recipe edits leave the baseline hash unchanged.
    """
    h = hashlib.sha256(tree_sha256(BASELINE_FILES).encode())
    if tuning is not None:
        h.update(repr(tuning).encode())
    return h.hexdigest()
