"""Hashes that identify what produced a result: source trees (a kind's simulator, its baseline) and
the tuning a recipe gives the baseline. Each unit kind names its files (:mod:`apc.kinds`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def tree_sha256(files: tuple[str, ...], dirs: tuple[str, ...] = ()) -> str:
    """SHA-256 over the named source files and the files directly in ``dirs`` (sorted), paths
    relative to the project root."""
    h = hashlib.sha256()
    paths = [_ROOT / f for f in files]
    for d in dirs:
        paths.extend(sorted(p for p in (_ROOT / d).glob("*") if p.is_file()))
    for p in paths:
        h.update(str(p.relative_to(_ROOT)).encode())
        h.update(b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


def baseline_sha256(files: tuple[str, ...], tuning: object = None) -> str:
    """Hash of an industrial baseline: its source ``files`` and the recipe's tuning of it.

    ``tuning``'s ``repr`` (frozen dataclasses) enters the hash, so other recipe edits leave the
    baseline hash unchanged.
    """
    h = hashlib.sha256(tree_sha256(files).encode())
    if tuning is not None:
        h.update(repr(tuning).encode())
    return h.hexdigest()
