"""In-process simulated plant behind :class:`apc.protocols.PlantIO`.

Besides serving the simulator's measurements, this adapter plays the DCS:
each loop is remote (accepting APC setpoints) only while the APC sets its
``apc_active`` flag, keeps its heartbeat counting and (for setpoint loops)
rewrites the setpoint within the shed timeout. Otherwise the loop sheds to
its fallback: feed → the DCS's fixed local schedule, electrode → no moves,
current → hold. Readbacks report what is in force. While a scenario caps a
loop's output (``output_limit``), the DCS holds it at the cap and reports
``<loop>.at_high_limit``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from apc.types import WriteResult
from plant_io.sim_adapter import DcsHeartbeats, SimulatedPlantIO
from sim.cell_plant import CellPlant

# Signal tags served for an electrolysis cell.
MEASURED = {
    "cell.voltage_V": "cell_voltage_V",
    "cell.current_kA": "current_kA",
    "cell.bath_temp_dip_degC": "bath_temp_dip_degC",
    "cell.oxide_lab_wtpct": "oxide_lab_wtpct",
    "cell.metal_tapped_kg": "metal_tapped_kg",
}


@dataclass
class _Loop:
    """DCS-side state of one loop."""

    name: str
    kind: str  # "setpoint" | "increment"
    fallback: str
    remote: bool = False
    apc_active: bool = False
    last_sp_write_s: float = -1e18
    last_seq: int = 0
    pending_move: float = 0.0
    sheds: int = 0


@dataclass
class DcsSide:
    """The DCS functions the APC talks to, around one simulated cell."""

    plant: CellPlant
    shed_timeout_s: float
    local_feed_kg_h: float
    heartbeat_period_s: float
    loops: dict[str, _Loop] = field(default_factory=dict)
    heartbeats: DcsHeartbeats = field(init=False)

    def __post_init__(self) -> None:
        self.heartbeats = DcsHeartbeats(self.plant, self.heartbeat_period_s)
        self.loops = {
            "feed": _Loop("feed", "setpoint", "dcs_schedule"),
            "anode": _Loop("anode", "increment", "no_moves"),
            "current": _Loop("current", "setpoint", "hold"),
        }
        self.feed_sp_kg_h = self.local_feed_kg_h
        self.plant.set_feed_rate(self.feed_sp_kg_h)

    def _locked_local(self, loop: str) -> bool:
        return any(ev.signal == loop for ev in self.plant.active_events("loop_local"))

    def output_cap(self, loop: str) -> float:
        """High limit of a loop's output in force now (inf without an ``output_limit`` event)."""
        return min((ev.value for ev in self.plant.active_events("output_limit") if ev.signal == loop),
                   default=math.inf)

    def _apply_caps(self) -> None:
        cap = self.output_cap("feed")
        if self.feed_sp_kg_h > cap:
            self.feed_sp_kg_h = cap
            self.plant.set_feed_rate(cap)
        cap = self.output_cap("current")
        if self.plant.current_sp_kA > cap:
            self.plant.set_current_sp(cap)

    def scan(self, now_s: float) -> None:
        """One DCS scan: hold capped outputs at their cap, update remote status, apply fallbacks."""
        self._apply_caps()
        hb_fresh = self.heartbeats.apc_fresh(now_s, self.shed_timeout_s)
        for loop in self.loops.values():
            ok = loop.apc_active and hb_fresh and not self._locked_local(loop.name)
            if loop.kind == "setpoint":
                ok = ok and now_s - loop.last_sp_write_s <= self.shed_timeout_s
            if loop.remote and not ok:
                loop.remote = False
                loop.sheds += 1
                if loop.name == "feed":
                    self.feed_sp_kg_h = min(self.local_feed_kg_h, self.output_cap("feed"))
                    self.plant.set_feed_rate(self.feed_sp_kg_h)
            elif not loop.remote and ok:
                loop.remote = True

    def apply(self, tag: str, value: float, now_s: float) -> WriteResult:
        """Apply one APC write as a DCS would."""
        if tag == DcsHeartbeats.APC_TAG:
            return self.heartbeats.apc_written(value, now_s)
        loop_name, _, attr = tag.partition(".")
        loop = self.loops.get(loop_name)
        if loop is None:
            return WriteResult(tag, False, "BadNodeIdUnknown")
        if attr == "apc_active":
            loop.apc_active = value >= 0.5
            self.scan(now_s)
            return WriteResult(tag, True)
        if loop.name == "feed" and attr == "sp_kg_h":
            loop.last_sp_write_s = now_s
            self.scan(now_s)
            if loop.remote:
                self.feed_sp_kg_h = min(max(0.0, value), self.output_cap("feed"))
                self.plant.set_feed_rate(self.feed_sp_kg_h)
            return WriteResult(tag, True)
        if loop.name == "current" and attr == "sp_kA":
            loop.last_sp_write_s = now_s
            self.scan(now_s)
            if loop.remote:
                self.plant.set_current_sp(min(value, self.output_cap("current")))
            return WriteResult(tag, True)
        if loop.name == "anode" and attr == "move_cm":
            loop.pending_move = value
            return WriteResult(tag, True)
        if loop.name == "anode" and attr == "move_seq":
            seq = int(value)
            if loop.remote and seq != loop.last_seq:
                loop.last_seq = seq
                room = self.output_cap("anode") - self.plant.anode_position_cm
                self.plant.move_anode(min(loop.pending_move, max(room, 0.0)))
            return WriteResult(tag, True)
        return WriteResult(tag, False, "BadNotWritable")

    def readbacks(self, now_s: float) -> dict[str, float]:
        """DCS-side tags: readbacks, remote status and heartbeat."""
        loops = self.loops
        plant = self.plant
        return {
            "feed.sp_readback_kg_h": self.feed_sp_kg_h,
            "feed.remote": 1.0 if loops["feed"].remote else 0.0,
            "current.sp_readback_kA": self.plant.current_sp_kA,
            "current.remote": 1.0 if loops["current"].remote else 0.0,
            "anode.position_cm": self.plant.anode_position_cm,
            "anode.seq_readback": float(loops["anode"].last_seq),
            "anode.remote": 1.0 if loops["anode"].remote else 0.0,
            "feed.at_high_limit": 1.0 if self.feed_sp_kg_h >= self.output_cap("feed") else 0.0,
            "current.at_high_limit": 1.0 if plant.current_sp_kA >= self.output_cap("current") else 0.0,
            "anode.at_high_limit": 1.0 if plant.anode_position_cm >= self.output_cap("anode") else 0.0,
            "dcs.heartbeat": self.heartbeats.dcs_counter(now_s),
        }

    def writable(self) -> frozenset[str]:
        """Tags the APC may write."""
        return WRITABLE


SAMPLED = frozenset({"cell.bath_temp_dip_degC", "cell.oxide_lab_wtpct"})
"""Cell signals whose readings carry the time the sample was taken (dip, lab)."""

WRITABLE = frozenset({
    "apc.heartbeat", "feed.apc_active", "feed.sp_kg_h", "current.apc_active", "current.sp_kA",
    "anode.apc_active", "anode.move_cm", "anode.move_seq",
})


class SimulatedCellIO(SimulatedPlantIO[CellPlant, DcsSide]):
    """PlantIO for one simulated cell with its DCS side (see the module docstring)."""

    def __init__(self, plant: CellPlant, now_s: Callable[[], float], utc: Callable[[], float]) -> None:
        sc = plant.scenario
        dcs = DcsSide(plant, sc.dcs_shed_timeout_s, sc.dcs_local_feed_kg_h, sc.dcs_heartbeat_period_s)
        super().__init__(plant, dcs, MEASURED, SAMPLED, now_s, utc)
