"""The installed package carries every data file the runtime loads (a wheel is not an editable checkout)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_scenario_file_is_package_data() -> None:
    """Each YAML under sim/scenarios/ matches a package-data pattern of pyproject.toml, so `pip install .` ships it."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["sim"]
    files = sorted(p.relative_to(ROOT / "sim").as_posix() for p in (ROOT / "sim" / "scenarios").rglob("*.yaml"))
    assert files, "no scenario files found"
    missing = [f for f in files if not any(fnmatch.fnmatchcase(f, pat) and f.count("/") == pat.count("/")
                                           for pat in patterns)]
    assert missing == []
