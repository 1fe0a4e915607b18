"""An in-process simulated unit behind :class:`apc.protocols.PlantIO`: its plant and its DCS side.

Every simulated unit kind serves its tags the same way: each read or write first advances the
plant to the clock's time and lets the DCS side scan; field measurements come with their
quality, source time (which stops while the instrument is stale) and, for lab and dip results,
the time the sample was taken; DCS tags (readbacks, remote and limit status, heartbeat) are
always good. What a kind adds is its plant, its DCS side (:class:`DcsSide`) and which tags are
measurements.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from apc.types import Quality, Sample, Write, WriteResult
from sim.plant_events import Reading


class SimulatedPlant(Protocol):
    """The true plant of a simulated unit."""

    def advance_to(self, t_s: float) -> None:
        """Integrate to plant time ``t_s``."""

    def measurements(self) -> Mapping[str, Reading]:
        """What the instruments show now, by measurement name."""

    def truth(self) -> dict[str, float]:
        """Simulator truth (KPIs only; never used for control)."""


class DcsSide(Protocol):
    """The DCS functions the APC talks to, around one simulated plant."""

    def scan(self, now_s: float) -> None:
        """One DCS scan (remote status, fallbacks)."""

    def readbacks(self, now_s: float) -> Mapping[str, float]:
        """DCS-side tags: readbacks, remote and limit status, heartbeat."""

    def apply(self, tag: str, value: float, now_s: float) -> WriteResult:
        """Apply one APC write as a DCS would."""

    def writable(self) -> frozenset[str]:
        """Tags the APC may write."""


class _EventTimeline(Protocol):
    def active_events(self, kind: str) -> Sequence[Any]: ...


class DcsHeartbeats:
    """The two heartbeats of a simulated DCS: its own counter (frozen by a scenario's
    ``dcs_heartbeat_freeze``) and the last change of the APC's, which keeps its loops remote."""

    APC_TAG = "apc.heartbeat"

    def __init__(self, plant: _EventTimeline, period_s: float) -> None:
        self._plant = plant
        self.period_s = period_s
        self.apc_value = 0.0
        self.apc_changed_s = -1e18

    def dcs_counter(self, now_s: float) -> float:
        """The DCS heartbeat counter at ``now_s``."""
        frozen = self._plant.active_events("dcs_heartbeat_freeze")
        if frozen:
            now_s = min(ev.at_h * 3600.0 for ev in frozen)
        return float(int(now_s / self.period_s))

    def apc_written(self, value: float, now_s: float) -> WriteResult:
        """The APC wrote its heartbeat."""
        if value != self.apc_value:
            self.apc_value, self.apc_changed_s = value, now_s
        return WriteResult(self.APC_TAG, True)

    def apc_fresh(self, now_s: float, timeout_s: float) -> bool:
        """The APC's heartbeat changed within ``timeout_s``."""
        return now_s - self.apc_changed_s <= timeout_s


PlantT = TypeVar("PlantT", bound=SimulatedPlant)
DcsT = TypeVar("DcsT", bound=DcsSide)


class SimulatedPlantIO(Generic[PlantT, DcsT]):
    """PlantIO for one simulated unit, advanced to the clock's time on every read and write.

    ``measured``: tag → measurement name of every field measurement; ``sampled``: the tags among
    them that are lab or dip results (their readings carry the sample time)."""

    def __init__(self, plant: PlantT, dcs: DcsT, measured: Mapping[str, str], sampled: frozenset[str],
                 now_s: Callable[[], float], utc: Callable[[], float]) -> None:
        self.plant = plant
        self.dcs = dcs
        self._measured = dict(measured)
        self._sampled = sampled
        self._now_s = now_s
        self._utc = utc
        self._utc0: float | None = None
        self._connected = False

    def tags(self) -> frozenset[str]:
        """Every tag this adapter serves (readable or writable)."""
        return frozenset(self._measured) | frozenset(self.dcs.readbacks(0.0)) | self.dcs.writable()

    def writable_tags(self) -> frozenset[str]:
        """Tags the APC may write (the DCS side's writable set)."""
        return self.dcs.writable()

    def measured_tags(self) -> frozenset[str]:
        """Field measurements (the tags that can carry a quality other than Good)."""
        return frozenset(self._measured)

    def sampled_tags(self) -> frozenset[str]:
        """Measurements that are lab or dip samples (their readings carry the sample time)."""
        return self._sampled

    async def connect(self) -> None:
        """Nothing to open; marks the adapter usable."""
        self._connected = True

    async def close(self) -> None:
        """Marks the adapter closed."""
        self._connected = False

    def _sync(self) -> float:
        now = self._now_s()
        self.plant.advance_to(now)
        self.dcs.scan(now)
        return now

    async def read(self, tags: Sequence[str]) -> Mapping[str, Sample]:
        """Read ``tags``: measurements with quality, source and sample times, DCS tags good."""
        now = self._sync()
        utc = self._utc()
        if self._utc0 is None:
            # Fixed once: recomputed per read on a real clock it would jitter, and a lab or dip
            # sample would come back with a new sample time (a "new" sample) every cycle.
            self._utc0 = utc - now
        utc0 = self._utc0
        meas = self.plant.measurements()
        dcs = self.dcs.readbacks(now)
        out: dict[str, Sample] = {}
        for tag in tags:
            name = self._measured.get(tag)
            if name is not None:
                r = meas.get(name)
                if r is None:
                    continue  # no dip or lab result yet
                sample_ts = None if r.sample_ts is None else utc0 + r.sample_ts
                source_ts = utc if r.source_t_s is None else utc0 + r.source_t_s  # a stale source stops its clock
                out[tag] = Sample(float(r.value), Quality(r.quality), source_ts, utc, sample_ts)
            elif tag in dcs:
                out[tag] = Sample(float(dcs[tag]), Quality.GOOD, utc, utc)
        return out

    async def write(self, writes: Sequence[Write]) -> Sequence[WriteResult]:
        """Apply writes in order, as the DCS would accept or ignore them."""
        now = self._sync()
        return [self.dcs.apply(w.tag, w.value, now) for w in writes]

    def truth(self) -> dict[str, float]:
        """Simulator truth (KPIs only; never used for control)."""
        return self.plant.truth()
