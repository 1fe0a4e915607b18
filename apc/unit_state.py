"""What a unit remembers across a process restart: the operator's decisions and the plant's moves.

Kept in one small JSON file per unit (``<state_dir>/<unit>/unit_state.json``, written atomically
and fsynced, see :mod:`apc.state_file`):

* the latched shed reason (a shed stays latched through a restart until an operator asks again);
* the mode last requested (for the record: a restart never requests ON by itself);
* per MV: its enable flag, the operator limits in force (moved from the HMI), and for increment
  MVs the UTC time of the last move and the last sequence number written.

An increment's move is persisted *before* it is written (write-ahead), so neither a crash nor a
power loss between the write and the file can make the next process move it again too soon or
reuse a sequence number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apc.state_file import read_json_object, write_json_atomic
from apc.types import Mode

STATE_SCHEMA_VERSION = 1
STATE_FILE_NAME = "unit_state.json"


class UnitStateError(Exception):
    """A unit state file that cannot be used; the message names the file and what is wrong."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True)
class MvMemory:
    """What one MV keeps across a restart."""

    enabled: bool = True
    operator_limits: tuple[float, float] | None = None
    """Operator limits in force (``None``: the recipe's)."""
    last_move_utc: float | None = None
    """Increments: UTC seconds of the last move written or seen (``None``: none known)."""
    sequence: int = 0
    """Increments: last sequence number written."""


@dataclass(frozen=True)
class UnitMemory:
    """What one unit keeps across a restart."""

    requested_mode: Mode = Mode.OFF
    shed_reason: str = ""
    mvs: Mapping[str, MvMemory] = field(default_factory=dict)

    def to_json(self, unit: str) -> dict[str, Any]:
        """The state file's content."""
        return {
            "schema_version": STATE_SCHEMA_VERSION,
            "unit": unit,
            "requested_mode": self.requested_mode.value,
            "shed_reason": self.shed_reason,
            "mvs": {n: {"enabled": m.enabled,
                        "operator_limits": None if m.operator_limits is None else list(m.operator_limits),
                        "last_move_utc": m.last_move_utc, "sequence": m.sequence}
                    for n, m in self.mvs.items()},
        }


class UnitStateFile:
    """The state file of one unit: :meth:`load` at start, :meth:`save` on every change."""

    def __init__(self, path: Path, unit: str) -> None:
        self.path = Path(path)
        self.unit = unit

    def load(self) -> UnitMemory | None:
        """The remembered state, ``None`` when there is no file; :class:`UnitStateError` when it is
        unreadable, corrupt or another unit's (a unit never starts on state it cannot trust)."""
        if not self.path.exists():
            return None
        try:
            data = read_json_object(self.path)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UnitStateError(self.path, f"cannot read the unit state file: {exc}") from None
        return _parse(self.path, self.unit, data)

    def save(self, memory: UnitMemory) -> None:
        """Replace the file with ``memory`` (atomic, fsynced); ``OSError`` when it cannot be written."""
        write_json_atomic(self.path, memory.to_json(self.unit))


def _parse(path: Path, unit: str, data: Mapping[str, Any]) -> UnitMemory:
    def bad(what: str) -> UnitStateError:
        return UnitStateError(path, f"corrupt unit state file ({what})")

    if data.get("schema_version") != STATE_SCHEMA_VERSION:
        raise UnitStateError(path, f"unit state schema_version {data.get('schema_version')!r} is not "
                                   f"{STATE_SCHEMA_VERSION}")
    if data.get("unit") != unit:
        raise UnitStateError(path, f"it belongs to unit {data.get('unit')!r}, not {unit!r}")
    try:
        requested = Mode(data.get("requested_mode"))
    except ValueError:
        raise bad(f"requested_mode {data.get('requested_mode')!r}") from None
    shed = data.get("shed_reason")
    mvs_raw = data.get("mvs")
    if not isinstance(shed, str):
        raise bad("shed_reason must be a string")
    if not isinstance(mvs_raw, dict):
        raise bad("mvs must be a mapping")
    mvs: dict[str, MvMemory] = {}
    for name, m in mvs_raw.items():
        if not isinstance(m, dict):
            raise bad(f"mvs.{name} must be a mapping")
        enabled, limits = m.get("enabled"), m.get("operator_limits")
        last, seq = m.get("last_move_utc"), m.get("sequence")
        if not isinstance(enabled, bool):
            raise bad(f"mvs.{name}.enabled must be true or false")
        if limits is not None and not (isinstance(limits, list) and len(limits) == 2
                                       and all(_finite(v) for v in limits) and limits[0] <= limits[1]):
            raise bad(f"mvs.{name}.operator_limits must be [low, high]")
        if last is not None and not _finite(last):
            raise bad(f"mvs.{name}.last_move_utc must be a finite number")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise bad(f"mvs.{name}.sequence must be an integer >= 0")
        mvs[str(name)] = MvMemory(enabled, None if limits is None else (float(limits[0]), float(limits[1])),
                                  None if last is None else float(last), seq)
    return UnitMemory(requested, shed, mvs)


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
