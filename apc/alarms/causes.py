"""The alarm causes a unit raises, with their default severity (OPC UA 1–1000) and title."""

from __future__ import annotations

from dataclasses import dataclass

from apc.recipe.schema import ALARM_CAUSES


@dataclass(frozen=True)
class CauseInfo:
    """What a cause means to an operator."""

    title: str
    severity: int
    """Default severity: 1–1000, higher is more urgent (OPC UA Part 9 ranges: 801–1000 high)."""


CAUSES: dict[str, CauseInfo] = {
    "shed": CauseInfo("APC shed the unit to the DCS", 700),
    "batch_held": CauseInfo("furnace batch held", 600),
    "estimator_unhealthy": CauseInfo("state estimator unhealthy", 500),
    "link_lost": CauseInfo("plant link lost", 800),
    "dcs_heartbeat_lost": CauseInfo("DCS heartbeat lost", 800),
    "solver_failing": CauseInfo("controller solves failing", 500),
    "anode_effect": CauseInfo("anode effect", 900),
    "anode_effect_forecast": CauseInfo("anode effect forecast", 600),
    "specific_energy_high": CauseInfo("specific energy above threshold", 400),
    "recorder_failed": CauseInfo("flight record or audit log cannot be written", 900),
    "compute_restarted": CauseInfo("compute worker restarted", 600),
}
assert tuple(CAUSES) == ALARM_CAUSES
