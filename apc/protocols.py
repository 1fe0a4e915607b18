"""Protocols that the runtime's pluggable parts implement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from apc.curve_preview import CurvePreview
from apc.cycle_record import CycleRecord
from apc.types import Estimate, MvConstraint, Plan, Sample, ValidatedInput, Write, WriteResult


class Clock(Protocol):
    """Time source: monotonic seconds for scheduling, UTC seconds for records."""

    def monotonic(self) -> float:
        """Seconds on a monotonic scale (scheduling only)."""
        ...

    def utc(self) -> float:
        """POSIX seconds, UTC (records only)."""
        ...

    async def sleep_until(self, monotonic_s: float) -> None:
        """Return once ``monotonic()`` has reached ``monotonic_s``."""
        ...


class PlantIO(Protocol):
    """Access to one unit's plant tags (simulator, OPC UA or Modbus)."""

    async def connect(self) -> None:
        """Open the connection and verify the tag bindings."""
        ...

    async def read(self, tags: Sequence[str]) -> Mapping[str, Sample]:
        """Read all ``tags`` in one batch, keeping quality and timestamps."""
        ...

    async def write(self, writes: Sequence[Write]) -> Sequence[WriteResult]:
        """Write typed values without timestamps; one result per write."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


@runtime_checkable
class Reconnecting(Protocol):
    """A network plant I/O that reconnects by itself between cycles (OPC UA, Modbus)."""

    async def reconnect_if_due(self, now_s: float | None = None) -> bool:
        """Reconnect when disconnected and the back-off has elapsed; True when connected."""
        ...


@runtime_checkable
class CounterTags(Protocol):
    """A plant I/O that knows its tags' data types (OPC UA, Modbus): how far a counter may count."""

    def counter_max(self, tag: str) -> int:
        """Largest value a counter written to ``tag`` may take before it wraps to 0; ``ValueError``
        (naming the tag) when the tag cannot carry a counter (read-only, unbound, scaled)."""
        ...


class Estimator(Protocol):
    """Turns validated inputs into an estimate of the unit's state."""

    def update(
        self,
        t_s: float,
        inputs: Mapping[str, ValidatedInput],
        applied: Mapping[str, float],
    ) -> Estimate:
        """Advance to time ``t_s`` (monotonic seconds) with this cycle's inputs.

        ``applied`` holds the MV values in force during the last period
        (DCS readback), so the estimator can predict with them.
        """
        ...

    def reset(self) -> None:
        """Forget all history (e.g. after a recipe reload)."""
        ...


class Controller(Protocol):
    """Computes moves from an estimate."""

    def step(
        self,
        t_s: float,
        estimate: Estimate,
        applied: Mapping[str, float],
        enabled: Mapping[str, bool],
        disturbances: Mapping[str, float],
        constraints: Mapping[str, MvConstraint],
    ) -> Plan:
        """Propose moves for this cycle.

        ``applied`` is the DCS readback of each MV, ``enabled`` the per-MV
        enable flags (a disabled MV must be held at ``applied``),
        ``disturbances`` the measured disturbances fed forward and
        ``constraints`` each MV's limits in force (the HMI may move operator
        limits) and the DCS's at-limit status (do not push into it).
        """
        ...

    def track(self, applied: Mapping[str, float]) -> None:
        """Re-initialise the memory of the MVs in ``applied`` from their DCS readback.

        Called every cycle for each MV that the APC does not drive (STANDBY,
        disabled MV), so that the first ON move starts from the DCS value.
        """
        ...


class BatchRunner(Protocol):
    """A batch following a curve, e.g. a furnace's heating curve (see :mod:`apc.batch`)."""

    def update(self, t_s: float, values: Mapping[str, float]) -> CurvePreview:
        """Advance the batch to ``t_s`` with this cycle's signal values; the reference in force."""
        ...

    def status(self) -> Mapping[str, Any]:
        """State, segment and soak progress, for the HMI and the record."""
        ...

    def preview(self) -> CurvePreview:
        """The reference from now on (what a controller in this process reads)."""
        ...

    @property
    def curve(self) -> Any:
        """The curve the batch runs (its ``controlled`` signal names what a start is judged on)."""
        ...

    def start(self, t_s: float, who: str, temp_degC: float | None) -> Any:
        """Start a batch from the controlled temperature; truthy when accepted, ``.reason`` if not."""
        ...

    def hold(self, t_s: float, who: str, why: str) -> Any:
        """Hold the running batch at the current temperature."""
        ...

    def resume(self, t_s: float, who: str) -> Any:
        """Resume a held batch where it was."""
        ...

    def abort(self, t_s: float, who: str, why: str) -> Any:
        """Abort the batch for good."""
        ...


class KpiSink(Protocol):
    """Accumulates KPIs from the simulator's truth, cycle by cycle (cells and furnace batches)."""

    def add(self, record: CycleRecord) -> None:
        """One cycle's record (it carries the simulator's truth; ``KeyError`` when it does not)."""
        ...

    def result(self) -> Mapping[str, float | int]:
        """The KPIs so far."""
        ...
