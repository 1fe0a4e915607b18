"""Tests of the seed-list syntax shared by the command lines and the benches."""

from __future__ import annotations

import pytest

from apc.seeds import parse_seeds


def test_ranges_and_lists_parse_and_bad_text_is_refused() -> None:
    """``41-43`` is a range, ``0,2`` a list; text that names no seed is refused with what was given."""
    assert parse_seeds("41-43") == [41, 42, 43]
    assert parse_seeds("0,2") == [0, 2]
    assert parse_seeds("7") == [7]
    for bad in ("a-b", "", "3-1", "1,x"):
        with pytest.raises(ValueError, match=repr(bad)):
            parse_seeds(bad)
