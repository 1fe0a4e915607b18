"""Prometheus metrics of ``apc run``: per-unit modes, cycles, solve and estimator times, sheds,
writes, plant link and alarms, served over HTTP (``docs/metrics.md``).

:class:`RuntimeMetrics` owns its own registry (nothing global). :meth:`RuntimeMetrics.observe` is
called once per unit cycle on the event loop and only sets gauges and increments counters and
histograms (no I/O, no clock). What other parts already count (the schedule's cycles, overruns and
missed slots, compute worker restarts) and the active alarms are read when Prometheus scrapes, in
the HTTP server's thread. :class:`MetricsServer` serves the registry and stops with the runtime.
"""

from __future__ import annotations

import asyncio
import errno
import math
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from apc.cycle_record import CycleRecord
from apc.recipe.schema import MetricsSection
from apc.scheduler import ScheduleStats
from apc.types import Mode

__all__ = ["AlarmCount", "Linked", "MetricsServer", "MetricsServerError", "RuntimeMetrics", "link_probe",
           "metrics_endpoint", "shed_category"]

AlarmCount = Callable[[str], int]
"""``alarms_active(unit)``: how many alarms of the unit are active now. Called in the HTTP server's
thread at each scrape: it must only read (e.g. the length of a dict), never block."""

TIME_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Histogram buckets of the solve and estimator times, seconds."""

_MODES = tuple(m.value for m in Mode)
_UNIT = ("unit", "kind")
_CATEGORY_MAX = 48
_DIGITS = re.compile(r"\d+(?:\.\d+)?")


class MetricsServerError(OSError):
    """The metrics endpoint cannot listen (port in use, address not on this machine). An ``OSError``,
    as the failure to bind it is: ``apc run`` prints it as one line."""


@runtime_checkable
class Linked(Protocol):
    """A plant I/O that knows whether its connection is up (the OPC UA and Modbus clients)."""

    @property
    def connected(self) -> bool:
        """True while the connection to the plant is open."""
        ...


def link_probe(io: object) -> Callable[[], bool]:
    """What tells whether ``io``'s plant link is up: its connection state, or always up for a plant I/O
    without a connection (the in-process simulator)."""
    if isinstance(io, Linked):
        return lambda: io.connected
    return lambda: True


def shed_category(reason: str) -> str:
    """A shed reason reduced to a label value of bounded cardinality: the text before the first ``:``
    (``estimate failed: ZeroDivisionError: …`` → ``estimate failed``; an input failure gives the
    input's name), numbers replaced by ``#``, at most 48 characters; ``unknown`` when empty."""
    head = _DIGITS.sub("#", reason.split(":", 1)[0])
    return " ".join(head.split())[:_CATEGORY_MAX].rstrip() or "unknown"


def metrics_endpoint(section: MetricsSection | None, port: int | None) -> MetricsSection | None:
    """The endpoint to serve: the site's ``metrics`` section with ``port`` (``apc run --metrics-port``)
    in place of its own, or a loopback endpoint on ``port`` when the site has none; ``None``: none.
    :class:`MetricsServerError` for a port out of range."""
    if port is None:
        return section
    try:
        if section is None:
            return MetricsSection(port=port)
        return MetricsSection(port=port, host=section.host, allow_remote=section.allow_remote)
    except ValueError as exc:
        raise MetricsServerError(f"metrics port: {exc}") from None


@dataclass
class _UnitSeries:
    """One unit's metric children, bound to its labels once (``observe`` only updates them)."""

    name: str
    kind: str
    schedule: ScheduleStats
    link: Callable[[], bool]
    actual: dict[str, Gauge]
    requested: dict[str, Gauge]
    solve_s: Histogram
    estimate_s: Histogram
    estimator_ok: Gauge
    writes: Counter
    refused: Counter
    link_up: Gauge
    last_modes: tuple[str, str] = ("", "")


class _ScrapeTimeCollector(Collector):
    """Counters other parts keep, and the active alarms, read at each scrape."""

    def __init__(self, metrics: RuntimeMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        units = list(self._m.units.values())  # a copy: units may be added while a scrape runs
        for name, doc, attr in (("apc_unit_cycles", "Cycles run.", "cycles"),
                                ("apc_unit_overruns", "Cycles that ended after the next slot.", "overruns"),
                                ("apc_unit_missed_slots", "Slots skipped after overruns (never caught up).",
                                 "skipped_slots"),
                                ("apc_unit_cycle_errors", "Cycles that raised (caught; the unit went on).",
                                 "errors")):
            family = CounterMetricFamily(name, doc, labels=_UNIT)
            for u in units:
                family.add_metric([u.name, u.kind], getattr(u.schedule, attr))
            yield family
        alarms = self._m.alarms_active
        gauge = GaugeMetricFamily("apc_active_alarms", "Alarms of the unit active now (NaN: unknown).",
                                  labels=_UNIT)
        if alarms is not None:
            for u in units:
                try:
                    gauge.add_metric([u.name, u.kind], float(alarms(u.name)))
                except Exception:  # the alarm system's failure must not break the scrape
                    gauge.add_metric([u.name, u.kind], math.nan)
        yield gauge
        restarts = CounterMetricFamily("apc_compute_worker_restarts", "Compute worker processes respawned "
                                       "(crashed, killed when hung).", labels=("worker",))
        if self._m.worker_restarts is not None:
            for i, n in enumerate(self._m.worker_restarts()):
                restarts.add_metric([str(i)], n)
        yield restarts


class RuntimeMetrics:
    """Metrics of one runtime process in their own registry (see the module docstring).

    ``alarms_active``: feeds ``apc_active_alarms`` (none: the gauge has no samples); may also be set
    later. ``worker_restarts``: each compute worker's restart count (none: in-process compute)."""

    def __init__(self, *, alarms_active: AlarmCount | None = None,
                 worker_restarts: Callable[[], Sequence[int]] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.alarms_active = alarms_active
        self.worker_restarts = worker_restarts
        self.units: dict[str, _UnitSeries] = {}
        r = self.registry
        self._actual = Gauge("apc_unit_mode", "1 for the unit's actual mode, 0 for the others.",
                             (*_UNIT, "mode"), registry=r)
        self._requested = Gauge("apc_unit_requested_mode", "1 for the mode requested of the unit, 0 for the others.",
                                (*_UNIT, "mode"), registry=r)
        self._solve = Histogram("apc_unit_solve_time_seconds", "Controller solve time per cycle (plans not run "
                                "are not counted).", _UNIT, buckets=TIME_BUCKETS_S, registry=r)
        self._estimate = Histogram("apc_unit_estimate_time_seconds", "Wall time from the end of the read to the "
                                   "estimate (the estimator's update, in its worker).", _UNIT,
                                   buckets=TIME_BUCKETS_S, registry=r)
        self._healthy = Gauge("apc_unit_estimator_healthy", "1 while the estimate's health is ok, else 0.",
                              _UNIT, registry=r)
        self._sheds = Counter("apc_unit_sheds", "Sheds to STANDBY, by reason category.", (*_UNIT, "reason"),
                              registry=r)
        self._writes = Counter("apc_unit_writes", "Setpoint writes attempted.", _UNIT, registry=r)
        self._refused = Counter("apc_unit_refused_writes", "Writes the plant refused or that were not sent "
                                "(link down).", _UNIT, registry=r)
        self._link = Gauge("apc_plant_link_up", "1 while the unit's plant connection is up, else 0.", _UNIT,
                           registry=r)
        r.register(_ScrapeTimeCollector(self))

    def add_unit(self, name: str, kind: str, schedule: ScheduleStats,
                 link: Callable[[], bool] | None = None) -> None:
        """Register a unit: its series appear at once (zero, modes all 0); ``schedule`` is read at
        each scrape; ``link`` (see :func:`link_probe`) after each cycle."""
        labels = (name, kind)
        self.units[name] = _UnitSeries(
            name, kind, schedule, link or (lambda: True),
            {m: self._actual.labels(*labels, m) for m in _MODES},
            {m: self._requested.labels(*labels, m) for m in _MODES},
            self._solve.labels(*labels), self._estimate.labels(*labels), self._healthy.labels(*labels),
            self._writes.labels(*labels), self._refused.labels(*labels), self._link.labels(*labels))

    def observe(self, unit_name: str, record: CycleRecord) -> None:
        """Account for one cycle of a registered unit (``KeyError`` for another)."""
        u = self.units[unit_name]
        modes = (record.mode.requested, record.mode.actual)
        if modes != u.last_modes:
            u.last_modes = modes
            for m in _MODES:
                u.requested[m].set(1.0 if m == modes[0] else 0.0)
                u.actual[m].set(1.0 if m == modes[1] else 0.0)
        plan = record.plan
        if plan is not None and plan.status != "not_run":
            u.solve_s.observe(plan.solve_time_s)
        t = record.timing
        if t is not None and t.estimate_s >= t.read_s:  # not estimated: no time
            u.estimate_s.observe(t.estimate_s - t.read_s)
        u.estimator_ok.set(1.0 if record.estimate.health == "ok" else 0.0)
        if record.shed:
            self._sheds.labels(u.name, u.kind, shed_category(record.shed_reason)).inc()
        if record.writes:
            u.writes.inc(len(record.writes))
            refused = sum(1 for w in record.writes if not w.ok)
            if refused:
                u.refused.inc(refused)
        u.link_up.set(1.0 if u.link() else 0.0)


class MetricsServer:
    """``http://HOST:PORT/metrics`` for a :class:`RuntimeMetrics`, in a thread of its own."""

    def __init__(self, metrics: RuntimeMetrics, endpoint: MetricsSection) -> None:
        self._metrics = metrics
        self.host = endpoint.host
        self.port = endpoint.port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The scrape URL (with the port actually bound once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> None:
        """Listen; :class:`MetricsServerError` when it cannot (one line, naming the endpoint)."""
        try:
            self._server, self._thread = start_http_server(self.port, self.host, self._metrics.registry)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise MetricsServerError(f"metrics endpoint {self.url}: port {self.port} already in use") from None
            raise MetricsServerError(f"metrics endpoint {self.url}: cannot listen: "
                                     f"{exc.strerror or exc}") from None
        self.port = int(self._server.server_port)

    async def stop(self) -> None:
        """Stop serving and close the socket (waits, off the event loop, for the serving thread)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return

        def shut() -> None:
            server.shutdown()
            server.server_close()
            if thread is not None:
                thread.join()

        await asyncio.to_thread(shut)
