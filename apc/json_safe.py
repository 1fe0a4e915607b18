"""Strict JSON from plain data: every non-finite float (NaN, ±inf) becomes ``None``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["finite_json"]


def finite_json(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as None, mappings as dicts with string keys, sequences as lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj
