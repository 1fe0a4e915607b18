"""Seed lists as the command lines and benches write them: ``41-46`` (a range) or ``0,1,2``."""

from __future__ import annotations

__all__ = ["parse_seeds"]


def parse_seeds(text: str) -> list[int]:
    """``41-46`` → 41…46, ``0,1,2`` → [0, 1, 2]; a ValueError says what is wrong."""
    try:
        if "-" in text.strip().lstrip("-"):
            lo, hi = (int(v) for v in text.split("-"))
            seeds = list(range(lo, hi + 1))
        else:
            seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{text!r}: expected seeds as 41-46 or 0,1,2") from None
    if not seeds:
        raise ValueError(f"{text!r}: names no seed")
    return seeds
