"""Plant KPIs: what a flight record shows of a unit's performance without the simulator's truth.

Computed from what every record holds (modes, guard decisions, the DCS's at-limit status, sheds,
validated inputs, the estimate with its covariance), so they work on every record ``apc run`` writes,
on a plant as in a simulation. Definitions (formula, units, what counts as available, at a limit and
in band): ``docs/performance_kpis.md``.

Each cycle stands for one control period (the header's ``period_s``): a cycle's state is taken to
hold for one period; skipped slots and gaps between runs count for nothing.

* :class:`ServiceKpis`: service factor, MV utilisation, sheds by reason (every kind).
* :class:`CvBandKpis`: time the controlled variables are in band, from measured signals and from the
  estimate with its σ (bands: the kind's :class:`CvBand` list in the header's ``plant_kpi`` object).
* :class:`RecordInterventions`: operator interventions as far as the record shows them (changes of
  the requested mode and of MV enables); the audit log gives all of them (:mod:`apc.interventions`).
* :class:`PlantKpis`: these and the kind's own accumulator (:meth:`apc.kinds.UnitKind.plant_kpis`)
  as one; :func:`current_figures` gives its figures at any time (the HMI's live view).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from apc.cycle_record import CycleRecord, InputRecord

__all__ = [
    "LIMIT_CLAMP_PREFIXES",
    "PLANT_KPI_HEADER_KEY",
    "CvBand",
    "CvBandKpis",
    "PlantFigures",
    "PlantKpiSink",
    "PlantKpis",
    "RecordInterventions",
    "ServiceKpis",
    "at_limit",
    "current_figures",
    "header_cv_bands",
    "header_period_s",
    "in_band_probability",
    "input_value",
]

PLANT_KPI_HEADER_KEY = "plant_kpi"
"""Key of the kind's plant-KPI configuration in a flight record's header."""

LIMIT_CLAMP_PREFIXES = ("operator_", "engineering_", "position_")
"""Guard clamps that put an MV at a limit (rate and step clamps only slow it: not at a limit)."""

ON, OFF = "ON", "OFF"


class PlantKpiSink(Protocol):
    """Accumulates plant KPIs cycle by cycle (no truth needed)."""

    def add(self, record: CycleRecord) -> None:
        """One cycle's record, in time order."""
        ...

    def result(self) -> dict[str, float | int]:
        """The KPIs it could compute so far."""
        ...

    def not_computable(self) -> dict[str, str]:
        """KPI key → why it cannot be computed from what was seen so far."""
        ...


@dataclass(frozen=True)
class PlantFigures:
    """The plant KPIs at one time: the values, and why the others are missing."""

    values: Mapping[str, float | int]
    not_computable: Mapping[str, str]


def current_figures(sink: PlantKpiSink) -> PlantFigures:
    """The figures of ``sink`` now (an accumulator fed live: the HMI's view of the same numbers)."""
    return PlantFigures(dict(sink.result()), dict(sink.not_computable()))


def header_period_s(header: Mapping[str, Any]) -> float:
    """The header's control period, s (``ValueError`` naming the field when it is missing or not > 0)."""
    try:
        period = float(header["period_s"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("header field 'period_s' is missing or not a number") from None
    if not (math.isfinite(period) and period > 0.0):
        raise ValueError(f"header field 'period_s' must be > 0, got {period!r}")
    return period


def input_value(record: CycleRecord, name: str | None) -> float:
    """The value of input ``name`` when the validator passed it (verdict ``ok``) this cycle, else NaN."""
    if name is None:
        return math.nan
    inp: InputRecord | None = record.inputs.get(name)
    if inp is None or inp.verdict != "ok" or inp.value is None:
        return math.nan
    return float(inp.value)


def at_limit(record: CycleRecord, mv: str) -> bool:
    """True when ``mv`` is at a limit this cycle: a limit clamp of the guard
    (:data:`LIMIT_CLAMP_PREFIXES`) or the DCS reports the loop's output at a limit."""
    if record.dcs_at_limit.get(mv):
        return True
    d = record.decisions.get(mv)
    return d is not None and any(c.startswith(LIMIT_CLAMP_PREFIXES) for c in d.clamps)


def _pct(part_s: float, whole_s: float) -> float:
    return 100.0 * part_s / whole_s


class ServiceKpis:
    """Service factor, MV utilisation and sheds (see the module docstring and the docs page).

    * available: requested mode STANDBY or ON (an operator offered the unit to the APC);
      ``service_factor`` = time actual ON / available time (a fraction, 0–1).
    * ``mv_utilisation_pct.<mv>`` = 100 · time ON, MV enabled and not :func:`at_limit` / time ON.
    * ``sheds`` = cycles with a shed latched; ``sheds_by_reason.<reason>`` the same per recorded reason.
    """

    def __init__(self, period_s: float, mvs: Sequence[str]) -> None:
        self.period_s = float(period_s)
        self.mvs = tuple(mvs)
        self._cycles = 0
        self._available_s = self._on_s = 0.0
        self._mv_free_s = dict.fromkeys(self.mvs, 0.0)
        self._sheds: Counter[str] = Counter()

    def add(self, record: CycleRecord) -> None:
        dt = self.period_s
        self._cycles += 1
        mode = record.mode
        if mode.requested and mode.requested != OFF:
            self._available_s += dt
        if mode.actual == ON:
            self._on_s += dt
            for mv in self.mvs:
                if mode.mvs.get(mv, False) and not at_limit(record, mv):
                    self._mv_free_s[mv] += dt
        if record.shed:
            self._sheds[record.shed_reason or "(no reason recorded)"] += 1

    def result(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "cycles": self._cycles,
            "record_h": self._cycles * self.period_s / 3600.0,
            "available_h": self._available_s / 3600.0,
            "on_h": self._on_s / 3600.0,
        }
        if self._available_s > 0.0:
            out["service_factor"] = self._on_s / self._available_s
        if self._on_s > 0.0:
            for mv in self.mvs:
                out[f"mv_utilisation_pct.{mv}"] = _pct(self._mv_free_s[mv], self._on_s)
        out["sheds"] = sum(self._sheds.values())
        for reason in sorted(self._sheds):
            out[f"sheds_by_reason.{reason}"] = self._sheds[reason]
        return out

    def not_computable(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self._available_s <= 0.0:
            out["service_factor"] = "the unit was never requested STANDBY or ON (no available time)"
        if self._on_s <= 0.0:
            for mv in self.mvs:
                out[f"mv_utilisation_pct.{mv}"] = "the unit was never ON"
        return out


@dataclass(frozen=True)
class CvBand:
    """A controlled variable's band and where the record shows it."""

    name: str
    """Short name, the prefix of its KPI keys (e.g. ``bath_temp``)."""
    low: float
    high: float
    unit: str
    measured: str | None = None
    """Recipe input that measures it (a lab or dip sample, or a continuous measurement)."""
    estimate: str | None = None
    """Estimate signal of it (a state or an extra)."""
    estimate_std: str | None = None
    """Estimate signal of its standard deviation (else the covariance diagonal of ``estimate``)."""
    source: str = ""
    """Where the band comes from (e.g. the recipe field), for the report."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise ValueError(f"CV band {self.name!r} must be finite with low <= high, got [{self.low}, {self.high}]")

    def to_mapping(self) -> dict[str, Any]:
        """Plain form for the header's ``plant_kpi.cv_bands``."""
        return {"name": self.name, "band": [self.low, self.high], "unit": self.unit, "measured": self.measured,
                "estimate": self.estimate, "estimate_std": self.estimate_std, "source": self.source}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> CvBand:
        """Inverse of :meth:`to_mapping` (``ValueError`` naming the problem)."""
        try:
            lo, hi = data["band"]
            return cls(str(data["name"]), float(lo), float(hi), str(data.get("unit") or ""), data.get("measured"),
                       data.get("estimate"), data.get("estimate_std"), str(data.get("source") or ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid CV band {dict(data)!r}: {exc}") from None


def in_band_probability(x: float, sigma: float, low: float, high: float) -> float:
    """P(low ≤ X ≤ high) for X ~ N(x, σ²); σ = 0: 1 inside the band, else 0."""
    if sigma <= 0.0:
        return 1.0 if low <= x <= high else 0.0
    s = sigma * math.sqrt(2.0)
    return 0.5 * (math.erf((high - x) / s) - math.erf((low - x) / s))


def _estimate_with_std(record: CycleRecord, band: CvBand) -> tuple[float, float]:
    """(estimate, σ) of ``band`` this cycle, NaN for what the record does not have."""
    est = record.estimate
    values = est.values()
    x = float(values.get(band.estimate, math.nan)) if band.estimate else math.nan
    sigma = math.nan
    if band.estimate_std and band.estimate_std in values:
        sigma = float(values[band.estimate_std])
    elif band.estimate and est.P_diag is not None and band.estimate in est.names:
        p = est.P_diag[est.names.index(band.estimate)]
        sigma = math.sqrt(p) if p >= 0.0 else math.nan
    return x, sigma


class CvBandKpis:
    """Time in band of each CV, three ways (``<cv>`` is the band's name):

    * ``<cv>_in_band_meas_pct``: 100 · measured cycles inside the band / measured cycles, a measured cycle
      being one whose input passed validation (verdict ``ok``): for a lab or dip sample, the cycle it
      arrived in, so each sample counts once; ``<cv>_samples`` counts them.
    * ``<cv>_in_band_est_pct``: 100 · time the estimate was inside / time with a healthy estimate.
    * ``<cv>_in_band_prob_pct``: 100 · mean over the same cycles of P(inside) for N(estimate, σ²): the
      expected share of time inside, given the estimate's uncertainty.
    """

    def __init__(self, period_s: float, bands: Sequence[CvBand]) -> None:
        self.period_s = float(period_s)
        self.bands = tuple(bands)
        n = len(self.bands)
        self._meas_n, self._meas_in = [0] * n, [0] * n
        self._est_s, self._est_in_s = [0.0] * n, [0.0] * n
        self._prob_s, self._prob_in_s = [0.0] * n, [0.0] * n

    def add(self, record: CycleRecord) -> None:
        dt = self.period_s
        healthy = record.estimate.health == "ok"
        for i, band in enumerate(self.bands):
            y = input_value(record, band.measured)
            if math.isfinite(y):
                self._meas_n[i] += 1
                self._meas_in[i] += int(band.low <= y <= band.high)
            if not healthy:
                continue
            x, sigma = _estimate_with_std(record, band)
            if not math.isfinite(x):
                continue
            self._est_s[i] += dt
            self._est_in_s[i] += dt if band.low <= x <= band.high else 0.0
            if math.isfinite(sigma):
                self._prob_s[i] += dt
                self._prob_in_s[i] += dt * in_band_probability(x, sigma, band.low, band.high)

    def result(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {}
        for i, band in enumerate(self.bands):
            p = band.name
            if band.measured:
                out[f"{p}_samples"] = self._meas_n[i]
            if self._meas_n[i]:
                out[f"{p}_in_band_meas_pct"] = 100.0 * self._meas_in[i] / self._meas_n[i]
            if self._est_s[i] > 0.0:
                out[f"{p}_in_band_est_pct"] = _pct(self._est_in_s[i], self._est_s[i])
            if self._prob_s[i] > 0.0:
                out[f"{p}_in_band_prob_pct"] = _pct(self._prob_in_s[i], self._prob_s[i])
        return out

    def not_computable(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for i, band in enumerate(self.bands):
            p = band.name
            if not band.measured:
                out[f"{p}_in_band_meas_pct"] = "the recipe has no input measuring it"
            elif not self._meas_n[i]:
                out[f"{p}_in_band_meas_pct"] = f"no valid {band.measured} value in the record"
            if not band.estimate:
                out[f"{p}_in_band_est_pct"] = "the recipe's estimator gives no estimate of it"
            elif self._est_s[i] <= 0.0:
                out[f"{p}_in_band_est_pct"] = f"no healthy estimate of {band.estimate} in the record"
            if self._prob_s[i] <= 0.0:
                out[f"{p}_in_band_prob_pct"] = (f"no healthy estimate of {band.estimate} with a standard deviation "
                                                "in the record" if band.estimate else
                                                "the recipe's estimator gives no estimate of it")
        return out


class RecordInterventions:
    """Operator interventions the record itself shows: changes of the requested mode from one cycle to
    the next (``mode_requests``) and of an MV's enable (``mv_disables``, ``mv_enables``). A request that
    repeats the mode in force (e.g. ON again to clear a shed) and operator-limit changes leave no
    trace in the record: the audit log has them (:mod:`apc.interventions`)."""

    def __init__(self) -> None:
        self._prev_requested: str | None = None
        self._prev_mvs: Mapping[str, bool] = {}
        self.mode_requests = self.mv_disables = self.mv_enables = 0

    def add(self, record: CycleRecord) -> None:
        mode = record.mode
        if self._prev_requested is not None and mode.requested != self._prev_requested:
            self.mode_requests += 1
        for mv, enabled in mode.mvs.items():
            before = self._prev_mvs.get(mv)
            if before is True and not enabled:
                self.mv_disables += 1
            elif before is False and enabled:
                self.mv_enables += 1
        self._prev_requested, self._prev_mvs = mode.requested, dict(mode.mvs)

    def result(self) -> dict[str, float | int]:
        return {"mode_requests": self.mode_requests, "mv_disables": self.mv_disables, "mv_enables": self.mv_enables}

    def not_computable(self) -> dict[str, str]:
        return {"limit_changes": "no audit log: operator-limit changes are not in the flight record"}


def header_cv_bands(header: Mapping[str, Any]) -> tuple[CvBand, ...] | None:
    """The CV bands the header's ``plant_kpi`` object lists (None when it has no such object)."""
    cfg = header.get(PLANT_KPI_HEADER_KEY)
    if not isinstance(cfg, Mapping):
        return None
    return tuple(CvBand.from_mapping(b) for b in cfg.get("cv_bands") or ())


class PlantKpis:
    """Every plant KPI of one unit from its record header: the generic ones of this module and the
    kind's own (``kind_sink``); ``record_interventions`` adds :class:`RecordInterventions` (when no
    audit log is read)."""

    def __init__(self, header: Mapping[str, Any], kind_sink: PlantKpiSink | None = None, *,
                 record_interventions: bool = True) -> None:
        period = header_period_s(header)
        mvs = tuple((header.get("io") or {}).get("mvs") or ())
        bands = header_cv_bands(header)
        cfg = header.get(PLANT_KPI_HEADER_KEY)
        self._bands_reason = ("the record's header has no 'plant_kpi' object (no CV bands: an older record)"
                              if bands is None or not isinstance(cfg, Mapping) else
                              "" if bands else str(cfg.get("no_bands_reason") or ""))
        self._parts: list[PlantKpiSink] = [ServiceKpis(period, mvs), CvBandKpis(period, bands or ())]
        if record_interventions:
            self._parts.append(RecordInterventions())
        if kind_sink is not None:
            self._parts.append(kind_sink)

    def add(self, record: CycleRecord) -> None:
        """One cycle's record, in time order."""
        for part in self._parts:
            part.add(record)

    def result(self) -> dict[str, float | int]:
        """Every KPI computed so far."""
        out: dict[str, float | int] = {}
        for part in self._parts:
            out.update(part.result())
        return out

    def not_computable(self) -> dict[str, str]:
        """KPI key → why not (only keys that are not in :meth:`result`)."""
        out: dict[str, str] = {}
        if self._bands_reason:
            out["cv_in_band"] = self._bands_reason
        for part in self._parts:
            out.update(part.not_computable())
        done = self.result()
        return {k: v for k, v in out.items() if k not in done}
