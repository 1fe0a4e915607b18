"""The hold-the-last-plan policy shared by the MPCs: after failed solves, follow the still-valid
remainder of the last plan for up to ``hold_cycles`` failures, then fail with the reason."""

from __future__ import annotations

from apc.types import SolverStatus


def plan_status(fails: int, hold_cycles: int, has_plan: bool, solved_now: bool,
                reason: str) -> tuple[SolverStatus, str, bool]:
    """(status, reason, follow the plan) for a step whose last ``fails`` solves failed.

    ``has_plan``: a converged plan still covers this step; ``solved_now``: a solve ran this step.
    """
    if fails == 0 and has_plan:
        return (SolverStatus.OK if solved_now else SolverStatus.NOT_RUN), reason, True
    if has_plan and fails <= hold_cycles:
        return (SolverStatus.HELD,
                f"following last plan ({fails}/{hold_cycles} failed): {reason or 'last solve failed'}", True)
    return SolverStatus.FAILED, (f"{reason}; " if reason else "") + (
        f"{fails} failed solve(s), hold_cycles {hold_cycles} used up" if has_plan
        else "no valid plan to follow"), False
