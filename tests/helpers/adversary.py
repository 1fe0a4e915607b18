"""A controller that pushes its increment MVs every cycle: the worst case for minimum intervals.

It implements :class:`apc.protocols.Controller` honestly (setpoints held at the readback, no
memory of its own moves), so whatever spacing the written moves have comes from the unit and its
guard alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from apc.types import Estimate, MvConstraint, Plan, SolverStatus


class AlwaysMove:
    """Proposes ``step`` on every increment MV in ``increments`` each cycle (alternating sign, so the
    position stays inside its limits), and holds every other MV at its readback."""

    def __init__(self, increments: tuple[str, ...], step: float = 0.1) -> None:
        self.increments = increments
        self.step_size = step
        self._sign = 1.0

    def track(self, applied: Mapping[str, float]) -> None:
        """Nothing to remember."""

    def step(self, t_s: float, estimate: Estimate, applied: Mapping[str, float], enabled: Mapping[str, bool],
             disturbances: Mapping[str, float], constraints: Mapping[str, MvConstraint]) -> Plan:
        """Move every increment MV now, hold the rest."""
        moves = {n: (self._sign * self.step_size if n in self.increments else v) for n, v in applied.items()}
        self._sign = -self._sign
        return Plan(moves, {}, SolverStatus.OK, 0, 0.0, "push")
