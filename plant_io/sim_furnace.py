"""In-process simulated furnace behind :class:`apc.protocols.PlantIO`, with its DCS side.

Tags: ``furnace.<output>`` for every measured model output; per model input
``<input>.sp`` (written by the APC), ``<input>.sp_readback``, ``<input>.remote``,
``<input>.apc_active`` and ``<input>.at_high_limit``; ``apc.heartbeat`` and
``dcs.heartbeat``. A loop is remote (takes APC setpoints) while the APC sets
``apc_active``, keeps its heartbeat counting and rewrites the setpoint within
the shed timeout. Otherwise the DCS holds the furnace itself: a local PI keeps
the loop's temperature at its value when the APC let go (or the MV is held).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from apc.types import WriteResult
from plant_io.sim_adapter import DcsHeartbeats, SimulatedPlantIO
from sim.furnace_plant import FurnacePlant


@dataclass
class _FurnaceLoop:
    """DCS-side state of one furnace loop."""

    name: str
    low: float
    high: float
    remote: bool = False
    apc_active: bool = False
    last_sp_write_s: float = -1e18
    sheds: int = 0
    hold_degC: float | None = None
    integral: float = 0.0
    last_scan_s: float | None = None


class FurnaceDcs:
    """The DCS functions the APC talks to, around one simulated furnace."""

    def __init__(self, plant: FurnacePlant) -> None:
        sc = plant.scenario
        self.plant = plant
        self.shed_timeout_s = sc.dcs_shed_timeout_s
        self.loops = {n: _FurnaceLoop(n, *sc.output_limits.get(n, (-math.inf, math.inf)))
                      for n in plant.model.input_names}
        self.heartbeats = DcsHeartbeats(plant, sc.dcs_heartbeat_period_s)

    def scan(self, now_s: float) -> None:
        """One DCS scan: remote status, then the local fallback of loops that are not remote."""
        hb_fresh = self.heartbeats.apc_fresh(now_s, self.shed_timeout_s)
        local = {ev.signal for ev in self.plant.active_events("loop_local")}
        for loop in self.loops.values():
            ok = (loop.apc_active and hb_fresh and loop.name not in local
                  and now_s - loop.last_sp_write_s <= self.shed_timeout_s)
            if loop.remote and not ok:
                loop.sheds += 1
                self._take_over(loop)
            loop.remote = ok
            if not ok:
                self._local_control(loop, now_s)
            loop.last_scan_s = now_s

    def _take_over(self, loop: _FurnaceLoop) -> None:
        pi = self.plant.scenario.local_pi.get(loop.name)
        if pi is None:
            return
        meas = self.plant.measurements()[pi.measurement].value
        loop.hold_degC = meas if math.isfinite(meas) else None
        loop.integral = self.plant.setpoints[loop.name]

    def _local_control(self, loop: _FurnaceLoop, now_s: float) -> None:
        pi = self.plant.scenario.local_pi.get(loop.name)
        if pi is None or loop.hold_degC is None or loop.last_scan_s is None:
            return
        dt = max(0.0, now_s - loop.last_scan_s)
        meas = self.plant.measurements()[pi.measurement].value
        if not math.isfinite(meas):
            return
        err = loop.hold_degC - meas
        unclamped = loop.integral + pi.kp * dt / pi.ti_s * err
        loop.integral = min(max(unclamped, loop.low), loop.high)  # no windup
        self.plant.set_input(loop.name, min(max(loop.integral + pi.kp * err, loop.low), loop.high))

    def apply(self, tag: str, value: float, now_s: float) -> WriteResult:
        """Apply one APC write as a DCS would."""
        if tag == DcsHeartbeats.APC_TAG:
            return self.heartbeats.apc_written(value, now_s)
        name, _, attr = tag.rpartition(".")
        loop = self.loops.get(name)
        if loop is None:
            return WriteResult(tag, False, "BadNodeIdUnknown")
        if attr == "apc_active":
            loop.apc_active = value >= 0.5
            self.scan(now_s)
            return WriteResult(tag, True)
        if attr == "sp":
            loop.last_sp_write_s = now_s
            self.scan(now_s)
            if loop.remote:
                self.plant.set_input(name, min(max(value, loop.low), loop.high))
            return WriteResult(tag, True)
        return WriteResult(tag, False, "BadNotWritable")

    def readbacks(self, now_s: float) -> dict[str, float]:
        """DCS-side tags: setpoints in force, remote and limit status, heartbeat."""
        out = {"dcs.heartbeat": self.heartbeats.dcs_counter(now_s)}
        for name, loop in self.loops.items():
            sp = self.plant.setpoints[name]
            out[f"{name}.sp_readback"] = sp
            out[f"{name}.remote"] = 1.0 if loop.remote else 0.0
            out[f"{name}.at_high_limit"] = 1.0 if sp >= loop.high else 0.0
        return out

    def writable(self) -> frozenset[str]:
        """Tags the APC may write."""
        tags = {"apc.heartbeat"}
        for name in self.loops:
            tags |= {f"{name}.sp", f"{name}.apc_active"}
        return frozenset(tags)


class SimulatedFurnaceIO(SimulatedPlantIO[FurnacePlant, FurnaceDcs]):
    """PlantIO for one simulated furnace with its DCS side (tags ``furnace.<output>``)."""

    def __init__(self, plant: FurnacePlant, now_s: Callable[[], float], utc: Callable[[], float]) -> None:
        super().__init__(plant, FurnaceDcs(plant), {f"furnace.{n}": n for n in plant.model.output_names}, frozenset(),
                         now_s, utc)
