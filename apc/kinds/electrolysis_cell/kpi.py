"""Key performance indicators of an electrolysis cell, computed from the simulator's truth.

One :class:`KpiAccumulator` serves both ``apc sim`` (fed live, cycle by cycle)
and ``apc report FILE`` (:func:`apc.kpi.report` replays the flight record). Both feed
the same values in the same order through the same arithmetic, and JSON
round-trips Python floats exactly, so the two give bit-identical results.

Truth keys read from each cycle (module constants below; all floats,
cumulative ones monotone non-decreasing over a run):

================================  =============================================
``bath_temp_degC``                bath temperature, degC
``dissolved_oxide_wtpct``         dissolved Nd2O3 in the bath, wt%
``anode_effect``                  1.0 while in anode effect, else 0.0
``metal_kg``                      cumulative metal produced, kg
``charge_kAh``                    cumulative charge passed, kA*h
``energy_kWh``                    cumulative electrical energy, kWh
``pfc_kg_co2e``                   cumulative PFC emissions, kg CO2-equivalent
``sludge_kg``                     current sludge inventory, kg
================================  =============================================

Window: a cycle is *post-warm-up* when ``t_s >= warmup_s``. Windowed deltas
(metal, energy, PFC, charge) run from the first post-warm-up cycle (the
origin) to the last cycle, so they cover the interval ``(t_origin, t_last]``.
Sample statistics (temperature, oxide band) use every post-warm-up cycle,
including the origin. ``guard_clamps``, ``sheds`` and ``cycles`` count the
whole run; ``sludge_final_kg`` is the last value seen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from apc.cycle_record import CycleRecord
from sim.models.nd_cell import F_C_PER_MOL, M_ND_KG_PER_MOL

__all__ = [
    "KPI_KEYS",
    "KPI_LABELS",
    "ND_KG_PER_KAH",
    "ND_VALENCE",
    "TRUTH_ANODE_EFFECT",
    "TRUTH_BATH_TEMP",
    "TRUTH_CHARGE",
    "TRUTH_ENERGY",
    "TRUTH_KEYS",
    "TRUTH_METAL",
    "TRUTH_OXIDE",
    "TRUTH_PFC",
    "TRUTH_SLUDGE",
    "KpiAccumulator",
    "KpiConfig",
]

# -- truth keys -----------------------------------------------------------------

TRUTH_BATH_TEMP = "bath_temp_degC"
"""Bath temperature, degC."""
TRUTH_OXIDE = "dissolved_oxide_wtpct"
"""Dissolved oxide concentration, wt%."""
TRUTH_ANODE_EFFECT = "anode_effect"
"""Anode-effect flag: 1.0 in anode effect, 0.0 otherwise (>= 0.5 counts as AE)."""
TRUTH_METAL = "metal_kg"
"""Cumulative metal produced, kg."""
TRUTH_CHARGE = "charge_kAh"
"""Cumulative charge passed through the cell, kA*h."""
TRUTH_ENERGY = "energy_kWh"
"""Cumulative electrical energy, kWh."""
TRUTH_PFC = "pfc_kg_co2e"
"""Cumulative perfluorocarbon emissions, kg CO2e."""
TRUTH_SLUDGE = "sludge_kg"
"""Current sludge inventory at the cell bottom, kg."""

TRUTH_KEYS = (
    TRUTH_BATH_TEMP,
    TRUTH_OXIDE,
    TRUTH_ANODE_EFFECT,
    TRUTH_METAL,
    TRUTH_CHARGE,
    TRUTH_ENERGY,
    TRUTH_PFC,
    TRUTH_SLUDGE,
)
"""Every truth key the accumulator reads."""

# -- Faraday's law for Nd(III), with the model's constants ---------------------------

ND_VALENCE = 3
"""Electrons per Nd atom reduced (Nd3+ + 3e- -> Nd)."""
_C_PER_KAH = 1000.0 * 3600.0
ND_KG_PER_KAH = _C_PER_KAH / (ND_VALENCE * F_C_PER_MOL) * M_ND_KG_PER_MOL
"""Nd produced per kA*h at 100 % current efficiency, kg (about 1.7939)."""

# -- result contract ------------------------------------------------------------

KPI_KEYS = (
    "anode_effects",
    "anode_effect_min",
    "bath_temp_mean_degC",
    "bath_temp_std_degC",
    "oxide_in_band_pct",
    "current_efficiency_pct",
    "energy_kWh_per_kg",
    "metal_kg",
    "pfc_kg_co2e",
    "sludge_final_kg",
    "guard_clamps",
    "sheds",
    "cycles",
)
"""The exact keys of :meth:`KpiAccumulator.result` (a contract)."""

# One shared NaN object: dict equality compares values by identity first, so
# two results with NaN in the same places compare equal with ``==``.
_NAN = float("nan")


@dataclass(frozen=True)
class KpiConfig:
    """How KPIs are windowed and judged.

    ``warmup_s``: cycles with ``t_s < warmup_s`` are excluded from windowed
    KPIs. ``oxide_band_wtpct``: inclusive (low, high) target band for the
    dissolved oxide. ``ae_merge_s``: an anode effect starting less than this
    after the previous one ended is the same event.
    """

    warmup_s: float
    oxide_band_wtpct: tuple[float, float]
    ae_merge_s: float = 60.0

    def __post_init__(self) -> None:
        lo, hi = self.oxide_band_wtpct
        if not (math.isfinite(self.warmup_s) and self.warmup_s >= 0.0):
            raise ValueError(f"warmup_s must be finite and >= 0, got {self.warmup_s!r}")
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"oxide_band_wtpct must be finite with low <= high, got {self.oxide_band_wtpct!r}")
        if not (math.isfinite(self.ae_merge_s) and self.ae_merge_s >= 0.0):
            raise ValueError(f"ae_merge_s must be finite and >= 0, got {self.ae_merge_s!r}")
        object.__setattr__(self, "warmup_s", float(self.warmup_s))
        object.__setattr__(self, "oxide_band_wtpct", (float(lo), float(hi)))
        object.__setattr__(self, "ae_merge_s", float(self.ae_merge_s))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> KpiConfig:
        """Build from the flight-record header's ``"kpi"`` object."""
        try:
            lo, hi = data["oxide_band_wtpct"]
            return cls(
                warmup_s=float(data["warmup_s"]),
                oxide_band_wtpct=(float(lo), float(hi)),
                ae_merge_s=float(data.get("ae_merge_s", 60.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid KPI config {dict(data)!r}: {exc}") from None

    def to_mapping(self) -> dict[str, Any]:
        """The header's ``"kpi"`` object (inverse of :meth:`from_mapping`)."""
        return {
            "warmup_s": self.warmup_s,
            "oxide_band_wtpct": [self.oxide_band_wtpct[0], self.oxide_band_wtpct[1]],
            "ae_merge_s": self.ae_merge_s,
        }


class KpiAccumulator:
    """Streaming KPI computation; call :meth:`add` once per cycle, in order.

    Definitions (see also the module docstring):

    * ``anode_effects``: runs of consecutive post-warm-up cycles in AE. A run
      whose first AE cycle is less than ``ae_merge_s`` after the last AE cycle
      of the previous run continues that event. An AE already in progress at
      the end of warm-up counts as an event.
    * ``anode_effect_min``: sum over post-warm-up cycles in AE of the spacing
      ``t_s - t_s(previous cycle)`` (0 for the very first cycle of a run),
      in minutes.
    * ``bath_temp_mean_degC`` / ``bath_temp_std_degC``: mean and population
      standard deviation (Welford) over post-warm-up cycles.
    * ``oxide_in_band_pct``: % of post-warm-up cycles with oxide in the band
      (inclusive).
    * ``current_efficiency_pct``: ``100 * dmetal / (ND_KG_PER_KAH * dcharge)``
      (NaN if no charge passed in the window).
    * ``energy_kWh_per_kg``: ``denergy / dmetal`` (NaN if no metal).
    * ``metal_kg``, ``pfc_kg_co2e``: window deltas.

    With no post-warm-up cycle, the windowed float KPIs are NaN and
    ``anode_effects`` / ``anode_effect_min`` are 0. Inputs are converted with
    ``float()`` / ``int()`` / ``bool()`` first, so numpy scalars fed live give
    the same result as their JSON replay.
    """

    def __init__(self, config: KpiConfig) -> None:
        self._cfg = config
        self._cycles = 0
        self._guard_clamps = 0
        self._sheds = 0
        self._prev_t: float | None = None
        self._sludge_last = _NAN
        # window
        self._n = 0
        self._temp_mean = 0.0
        self._temp_m2 = 0.0
        self._in_band = 0
        self._origin: tuple[float, float, float, float] | None = None  # metal, charge, energy, pfc
        self._last: tuple[float, float, float, float] | None = None
        self._ae_events = 0
        self._ae_s = 0.0
        self._ae_last_t: float | None = None  # t_s of the latest AE cycle
        self._ae_prev_in = False

    @property
    def config(self) -> KpiConfig:
        """The configuration in use."""
        return self._cfg

    def add(self, record: CycleRecord) -> None:
        """Account for one cycle's record (simulated: it carries the truth; in time order)."""
        if record.truth is None:
            raise KeyError("truth")
        self.account(record.t_s, record.truth, record.guard_clamps, record.shed)

    def account(self, t_s: float, truth: Mapping[str, float], guard_clamps: int, shed: bool) -> None:
        """Account for one cycle (must be called in time order)."""
        t = float(t_s)
        prev_t = self._prev_t
        if prev_t is not None and t < prev_t:
            raise ValueError(f"cycles out of order: t_s={t} after t_s={prev_t}")
        self._cycles += 1
        self._guard_clamps += int(guard_clamps)
        if bool(shed):
            self._sheds += 1
        self._sludge_last = float(truth[TRUTH_SLUDGE])
        self._prev_t = t
        if t < self._cfg.warmup_s:
            return

        cum = (
            float(truth[TRUTH_METAL]),
            float(truth[TRUTH_CHARGE]),
            float(truth[TRUTH_ENERGY]),
            float(truth[TRUTH_PFC]),
        )
        if self._origin is None:
            self._origin = cum
        self._last = cum

        # Welford for the bath temperature.
        temp = float(truth[TRUTH_BATH_TEMP])
        self._n += 1
        delta = temp - self._temp_mean
        self._temp_mean += delta / self._n
        self._temp_m2 += delta * (temp - self._temp_mean)

        oxide = float(truth[TRUTH_OXIDE])
        lo, hi = self._cfg.oxide_band_wtpct
        if lo <= oxide <= hi:
            self._in_band += 1

        in_ae = float(truth[TRUTH_ANODE_EFFECT]) >= 0.5
        if in_ae:
            if not self._ae_prev_in and (self._ae_last_t is None or t - self._ae_last_t >= self._cfg.ae_merge_s):
                self._ae_events += 1
            if prev_t is not None:
                self._ae_s += t - prev_t
            self._ae_last_t = t
        self._ae_prev_in = in_ae

    def result(self) -> dict[str, float | int]:
        """The KPIs so far, keyed exactly by :data:`KPI_KEYS`."""
        n = self._n
        if n == 0 or self._origin is None or self._last is None:
            temp_mean = temp_std = in_band = ce = e_per_kg = metal = pfc = _NAN
        else:
            temp_mean = self._temp_mean
            temp_std = math.sqrt(self._temp_m2 / n)
            in_band = 100.0 * self._in_band / n
            metal = self._last[0] - self._origin[0]
            charge = self._last[1] - self._origin[1]
            energy = self._last[2] - self._origin[2]
            pfc = self._last[3] - self._origin[3]
            ce = 100.0 * metal / (ND_KG_PER_KAH * charge) if charge > 0.0 else _NAN
            e_per_kg = energy / metal if metal > 0.0 else _NAN
        return {
            "anode_effects": self._ae_events,
            "anode_effect_min": self._ae_s / 60.0,
            "bath_temp_mean_degC": temp_mean,
            "bath_temp_std_degC": temp_std,
            "oxide_in_band_pct": in_band,
            "current_efficiency_pct": ce,
            "energy_kWh_per_kg": e_per_kg,
            "metal_kg": metal,
            "pfc_kg_co2e": pfc,
            "sludge_final_kg": self._sludge_last,
            "guard_clamps": self._guard_clamps,
            "sheds": self._sheds,
            "cycles": self._cycles,
        }


# -- presentation ---------------------------------------------------------------

KPI_LABELS: Mapping[str, tuple[str, str, str]] = MappingProxyType({
    # key: (label, unit, format)
    "anode_effects": ("Anode effects", "", "d"),
    "anode_effect_min": ("Time in anode effect", "min", ".2f"),
    "bath_temp_mean_degC": ("Bath temperature, mean", "degC", ".2f"),
    "bath_temp_std_degC": ("Bath temperature, std", "degC", ".3f"),
    "oxide_in_band_pct": ("Oxide in band", "%", ".2f"),
    "current_efficiency_pct": ("Current efficiency", "%", ".2f"),
    "energy_kWh_per_kg": ("Specific energy", "kWh/kg", ".3f"),
    "metal_kg": ("Metal produced", "kg", ".2f"),
    "pfc_kg_co2e": ("PFC emissions", "kg CO2e", ".2f"),
    "sludge_final_kg": ("Sludge at end", "kg", ".2f"),
    "guard_clamps": ("Guard clamps", "", "d"),
    "sheds": ("Sheds", "", "d"),
    "cycles": ("Cycles", "", "d"),
})
"""Label, unit and format of each KPI (``apc.kpi.format_kpis``)."""
