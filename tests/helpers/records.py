"""Short flight records of `apc sim` shared by the export and plot tests (written once per session)."""

from __future__ import annotations

from pathlib import Path

from apc.cli import main
from tests.helpers.sim_harness import ND_RECIPE, ROOT

VIM_RECIPE = ROOT / "recipes" / "vim_furnace.yaml"


def sim_record(path: Path, recipe: Path, hours: float, seed: int, *extra: str) -> Path:
    """Run `apc sim recipe --hours hours --seed seed --record path` and return ``path``."""
    assert main(["sim", str(recipe), "--hours", str(hours), "--seed", str(seed), "--json",
                 "--record", str(path), *extra]) == 0
    return path


def cell_record(directory: Path) -> Path:
    """0.5 h of the shipped cell recipe (baseline; still in STANDBY while its resistance means fill), seed 5."""
    return sim_record(directory / "cell.apcrec", ND_RECIPE, 0.5, 5)


def furnace_record(directory: Path) -> Path:
    """0.3 h of the shipped VIM furnace recipe (start of its batch), seed 5."""
    return sim_record(directory / "vim.apcrec", VIM_RECIPE, 0.3, 5)
