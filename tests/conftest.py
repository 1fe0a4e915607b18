"""Session fixtures: short simulated flight records (tests/helpers/records.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.records import cell_record, furnace_record


@pytest.fixture(scope="session")
def cell_record_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 0.5 h record of the shipped cell recipe (baseline, seed 5)."""
    return cell_record(tmp_path_factory.mktemp("cell_record"))


@pytest.fixture(scope="session")
def furnace_record_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 0.3 h record of the shipped VIM furnace recipe (seed 5)."""
    return furnace_record(tmp_path_factory.mktemp("furnace_record"))
