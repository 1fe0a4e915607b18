"""Named soft-sensor features computed per cycle, with a bounded, timestamped history.

A :class:`FeatureBuilder` turns each cycle's validated inputs and MV readbacks
into a small vector of named features (the input of an ONNX soft sensor) and
keeps the features of past cycles, so that the features *as they were* when a
lab or dip sample was taken can be recomputed later (bias update, reference
§4: e = y − f(x(t_s))).

Features (``FEATURES`` holds name → unit, meaning and window):

======================== ======= ===============================================
name                     unit    meaning
======================== ======= ===============================================
``voltage_V``            V       cell voltage, first-order filtered (tau from the recipe)
``current_kA``           kA      line current, filtered with the same tau
``dVdt_V_h``             V/h     least-squares slope of the raw voltage over the last 10 min
``feed_mean_1h_kg_h``    kg/h    time-weighted mean of the feed readback over the last hour
``feed_mean_4h_kg_h``    kg/h    the same over the last 4 h
``anode_moves_2h_cm``    cm      sum of anode position changes over the last 2 h (signed: net move)
``anode_moves_8h_cm``    cm      the same over the last 8 h
``pseudo_resistance_uohm`` µΩ    (U − E0)/I from the filtered voltage and current
``power_kW``             kW      U·I from the filtered voltage and current
``power_mean_2h_kW``     kW      time-weighted mean of U·I (raw) over the last 2 h
======================== ======= ===============================================

A feature is NaN when it cannot be computed: its signal is invalid, its
window is not yet covered by history, or the window contains a gap longer
than ``max_gap_s`` (readbacks and measurements are held between cycles,
zero-order, up to that gap).

Times are monotonic seconds (the runtime's ``t_s``). Memory is bounded: the
signal buffers keep the longest window, the feature history ``history_s``
(and never more than ``max_entries`` rows).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from apc.types import ValidatedInput

__all__ = [
    "FEATURES",
    "FeatureBindings",
    "FeatureBuilder",
    "FeatureInfo",
    "check_feature_names",
]

NAN = math.nan


@dataclass(frozen=True, slots=True)
class FeatureInfo:
    """Unit, meaning, window and the bound signals one feature needs."""

    unit: str
    description: str
    needs: tuple[str, ...]
    """Roles of :class:`FeatureBindings` it reads: ``voltage``, ``current``, ``feed``, ``anode``."""
    series: str = ""
    """Signal buffer a windowed feature reads (``voltage``, ``feed``, ``anode``, ``power``)."""
    window_s: float = 0.0
    """Trailing window; the feature is NaN until this much history exists (0: instantaneous)."""


SLOPE_WINDOW_S = 600.0
FEED_WINDOW_S = 3600.0
FEED_LONG_WINDOW_S = 4 * 3600.0
ANODE_WINDOW_S = 7200.0
ANODE_LONG_WINDOW_S = 8 * 3600.0
POWER_WINDOW_S = 7200.0

FEATURES: dict[str, FeatureInfo] = {
    "voltage_V": FeatureInfo("V", "filtered cell voltage", ("voltage",)),
    "current_kA": FeatureInfo("kA", "filtered line current", ("current",)),
    "dVdt_V_h": FeatureInfo("V/h", "least-squares slope of the raw voltage over the last 10 min",
                            ("voltage",), "voltage", SLOPE_WINDOW_S),
    "feed_mean_1h_kg_h": FeatureInfo("kg/h", "time-weighted mean feed readback over the last hour",
                                     ("feed",), "feed", FEED_WINDOW_S),
    "feed_mean_4h_kg_h": FeatureInfo("kg/h", "time-weighted mean feed readback over the last 4 h",
                                     ("feed",), "feed", FEED_LONG_WINDOW_S),
    "anode_moves_2h_cm": FeatureInfo("cm", "net anode position change over the last 2 h",
                                     ("anode",), "anode", ANODE_WINDOW_S),
    "anode_moves_8h_cm": FeatureInfo("cm", "net anode position change over the last 8 h",
                                     ("anode",), "anode", ANODE_LONG_WINDOW_S),
    "pseudo_resistance_uohm": FeatureInfo("uOhm", "(U - E0)/I from filtered U and I", ("voltage", "current")),
    "power_kW": FeatureInfo("kW", "U*I from filtered U and I", ("voltage", "current")),
    "power_mean_2h_kW": FeatureInfo("kW", "time-weighted mean of U*I over the last 2 h",
                                    ("voltage", "current"), "power", POWER_WINDOW_S),
}
"""Every feature a soft sensor may use, by name."""


def check_feature_names(names: tuple[str, ...] | list[str]) -> None:
    """Raise ``ValueError`` naming unknown or repeated feature names and listing the known ones."""
    names = tuple(names)
    if not names:
        raise ValueError(f"no features given; known features: {sorted(FEATURES)}")
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; known features: {sorted(FEATURES)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"feature(s) {repeated} listed more than once")


@dataclass(frozen=True)
class FeatureBindings:
    """Which recipe inputs and MVs the features read, and the constants they use."""

    voltage: str = "cell_voltage"
    """Recipe input name of the cell voltage (V)."""
    current: str = "line_current"
    """Recipe input name of the line current (kA)."""
    feed: str = "oxide_feed"
    """MV name whose readback is the oxide feed rate in force (kg/h)."""
    anode: str = "anode_move"
    """MV name whose readback is the anode position (cm)."""
    back_emf_V: float = 1.6
    """E0 in R = (U − E0)/I."""
    voltage_filter_tau_s: float = 30.0
    """Time constant of the voltage and current filters."""

    def __post_init__(self) -> None:
        if not self.voltage_filter_tau_s > 0:
            raise ValueError("voltage_filter_tau_s must be > 0")

    @classmethod
    def from_recipe(cls, recipe: Any) -> FeatureBindings:
        """Bindings of an electrolysis-cell recipe: inputs by unit, MVs by model input.

        The voltage is the first non-sample input in V, the current the first
        non-sample input in kA; the feed and anode MVs are those driving the
        model inputs ``feed_kg_h`` and ``anode_move_cm_h``. E0 and the filter
        constant come from ``estimator.filtered``. A missing signal binds to
        ``""`` (features needing it are then refused by :class:`FeatureBuilder`).
        """

        io_ = recipe.io
        continuous = ("measurement", "disturbance")
        filt = recipe.estimator.filtered
        return cls(
            voltage=io_.input_with_unit("V", continuous) or "",
            current=io_.input_with_unit("kA", continuous) or "",
            feed=io_.mv_driving("feed_kg_h") or "",
            anode=io_.mv_driving("anode_move_cm_h") or "",
            back_emf_V=float(filt.back_emf_V),
            voltage_filter_tau_s=float(filt.voltage_filter_tau_s),
        )


class _Series:
    """Valid samples of one signal over a trailing window, held zero-order between samples.

    Keeps a running integral for O(log n) window means, the end of the latest
    gap longer than ``max_gap_s`` (a window reaching back past it is not
    computable) and at least one sample at or before ``now − keep_s``.
    """

    __slots__ = ("cum", "gap_until", "keep_s", "max_gap_s", "max_samples", "start", "t", "v")

    def __init__(self, keep_s: float, max_gap_s: float, max_samples: int) -> None:
        self.keep_s = keep_s
        self.max_gap_s = max_gap_s
        self.max_samples = max_samples
        self.t: list[float] = []
        self.v: list[float] = []
        self.cum: list[float] = []
        self.start = 0
        self.gap_until = -math.inf

    def __len__(self) -> int:
        return len(self.t) - self.start

    def append(self, t: float, v: float) -> None:
        if len(self.t) > self.start:
            t_last = self.t[-1]
            if t - t_last > self.max_gap_s:
                self.gap_until = t
            self.cum.append(self.cum[-1] + self.v[-1] * (t - t_last))
        else:
            self.cum.append(0.0)
        self.t.append(t)
        self.v.append(v)
        self._trim(t)

    def _trim(self, now: float) -> None:
        t, start = self.t, self.start
        horizon = now - self.keep_s
        n = len(t)
        while start + 1 < n and t[start + 1] <= horizon:
            start += 1
        if n - start > self.max_samples:
            start = n - self.max_samples
        self.start = start
        if start > 256 and start > n // 2:
            del self.t[:start], self.v[:start], self.cum[:start]
            self.start = 0

    def last(self, now: float) -> float:
        """Latest value if it is not older than ``max_gap_s``, else NaN."""
        if len(self.t) > self.start and now - self.t[-1] <= self.max_gap_s:
            return self.v[-1]
        return NAN

    def _index(self, t: float) -> int:
        """Index of the last sample at or before ``t`` (−1 if none is buffered)."""
        i = bisect_right(self.t, t, lo=self.start) - 1
        return i if i >= self.start else -1

    def _window_ok(self, t0: float, t1: float) -> int:
        """Index of the sample in force at ``t0`` when [t0, t1] is covered without gaps, else −1."""
        if self.gap_until > t0 or not self.t or t1 - self.t[-1] > self.max_gap_s:
            return -1
        return self._index(t0)

    def mean(self, t0: float, t1: float) -> float:
        """Time-weighted (zero-order hold) mean over [t0, t1]."""
        i0 = self._window_ok(t0, t1)
        if i0 < 0 or t1 <= t0:
            return NAN
        i1 = len(self.t) - 1
        integral_1 = self.cum[i1] + self.v[i1] * (t1 - self.t[i1])
        integral_0 = self.cum[i0] + self.v[i0] * (t0 - self.t[i0])
        return (integral_1 - integral_0) / (t1 - t0)

    def delta(self, t0: float, t1: float) -> float:
        """Value in force at ``t1`` minus value in force at ``t0``."""
        i0 = self._window_ok(t0, t1)
        if i0 < 0:
            return NAN
        return self.v[-1] - self.v[i0]

    def slope_per_h(self, t0: float, t1: float) -> float:
        """Least-squares slope (per hour) of the samples in [t0, t1]; needs half the window covered."""
        i0 = self._window_ok(t0, t1)
        if i0 < 0:
            return NAN
        lo = i0 if self.t[i0] >= t0 else i0 + 1
        n = len(self.t) - lo
        if n < 3 or self.t[-1] - self.t[lo] < 0.5 * (t1 - t0):
            return NAN
        tt = np.asarray(self.t[lo:])
        vv = np.asarray(self.v[lo:])
        tt = tt - tt.mean()
        den = float(np.dot(tt, tt))
        if den <= 0.0:
            return NAN
        return float(np.dot(tt, vv - vv.mean()) / den) * 3600.0


class FeatureBuilder:
    """Computes the named features every cycle and remembers them for ``history_s``.

    ``names`` are feature names in the order a model expects (see
    :data:`FEATURES`); unknown names raise ``ValueError`` listing the known
    ones, as does a feature whose signal is not bound. ``max_gap_s`` is the
    longest a signal may go without a valid sample before features over it
    become NaN (and the longest :meth:`at` reaches back to the cycle before a
    requested time). If ``t_s`` ever fails to increase, the history restarts.
    """

    def __init__(
        self,
        names: tuple[str, ...] | list[str],
        bindings: FeatureBindings | None = None,
        *,
        history_s: float = 3 * 3600.0,
        max_gap_s: float = 60.0,
        max_entries: int = 20_000,
    ) -> None:
        self.names: tuple[str, ...] = tuple(names)
        check_feature_names(self.names)
        self.bindings = bindings or FeatureBindings()
        if history_s <= 0 or max_gap_s <= 0 or max_entries < 2:
            raise ValueError("history_s and max_gap_s must be > 0, max_entries >= 2")
        self.history_s = float(history_s)
        self.max_gap_s = float(max_gap_s)
        self.max_entries = int(max_entries)
        needs = {role for n in self.names for role in FEATURES[n].needs}
        unbound = sorted(role for role in needs if not getattr(self.bindings, role))
        if unbound:
            raise ValueError(f"feature(s) {[n for n in self.names if set(FEATURES[n].needs) & set(unbound)]} "
                             f"need signal(s) {unbound}, which the bindings leave empty")
        self._needs = needs
        self._keep = dict.fromkeys(("voltage", "feed", "anode", "power"), 0.0)
        for n in self.names:  # each buffer keeps the longest window asked of it
            info = FEATURES[n]
            if info.series:
                self._keep[info.series] = max(self._keep[info.series], info.window_s)
        self._compute: list[Callable[[float], float]] = [self._computer(n) for n in self.names]
        self.reset()

    # ----------------------------------------------------------- state
    def reset(self) -> None:
        """Forget all history."""
        cap = self.max_entries
        self._last_t: float | None = None
        self._u_f = NAN
        self._i_f = NAN
        self._u_t = -math.inf
        self._i_t = -math.inf
        keep = self._keep
        self._voltage = _Series(keep["voltage"], self.max_gap_s, cap)
        self._power = _Series(keep["power"], self.max_gap_s, cap)
        self._feed = _Series(keep["feed"], self.max_gap_s, cap)
        self._anode = _Series(keep["anode"], self.max_gap_s, cap)
        self._hist_t: list[float] = []
        self._hist_x: list[tuple[float, ...]] = []
        self._hist_start = 0

    def __len__(self) -> int:
        """Number of buffered cycles."""
        return len(self._hist_t) - self._hist_start

    def buffer_lengths(self) -> dict[str, int]:
        """Entries held in memory per buffer (feature history and signal buffers, including
        trimmed entries not yet compacted), to check that memory stays bounded."""
        return {"history": len(self._hist_t), "voltage": len(self._voltage.t), "power": len(self._power.t),
                "feed": len(self._feed.t), "anode": len(self._anode.t)}

    @property
    def warmup_s(self) -> float:
        """History needed before every feature can be computed (longest window)."""
        return max(FEATURES[n].window_s for n in self.names)

    @property
    def span_s(self) -> tuple[float, float] | None:
        """(oldest, newest) buffered time, or ``None`` when empty."""
        if len(self) == 0:
            return None
        return self._hist_t[self._hist_start], self._hist_t[-1]

    # ----------------------------------------------------------- features
    def _computer(self, name: str) -> Callable[[float], float]:
        e0 = self.bindings.back_emf_V

        def resistance(t: float) -> float:
            u, i = self._filtered(t)
            return (u - e0) / i * 1e3 if i > 0.1 else NAN

        def power(t: float) -> float:
            u, i = self._filtered(t)
            return u * i

        table: dict[str, Callable[[float], float]] = {
            "voltage_V": lambda t: self._filtered(t)[0],
            "current_kA": lambda t: self._filtered(t)[1],
            "dVdt_V_h": lambda t: self._voltage.slope_per_h(t - SLOPE_WINDOW_S, t),
            "feed_mean_1h_kg_h": lambda t: self._feed.mean(t - FEED_WINDOW_S, t),
            "feed_mean_4h_kg_h": lambda t: self._feed.mean(t - FEED_LONG_WINDOW_S, t),
            "anode_moves_2h_cm": lambda t: self._anode.delta(t - ANODE_WINDOW_S, t),
            "anode_moves_8h_cm": lambda t: self._anode.delta(t - ANODE_LONG_WINDOW_S, t),
            "pseudo_resistance_uohm": resistance,
            "power_kW": power,
            "power_mean_2h_kW": lambda t: self._power.mean(t - POWER_WINDOW_S, t),
        }
        return table[name]

    def _filtered(self, t: float) -> tuple[float, float]:
        u = self._u_f if t - self._u_t <= self.max_gap_s else NAN
        i = self._i_f if t - self._i_t <= self.max_gap_s else NAN
        return u, i

    @staticmethod
    def _value(inp: ValidatedInput | None) -> float:
        if inp is None or not inp.ok or inp.sample is None:
            return NAN
        v = float(inp.sample.value)
        return v if math.isfinite(v) else NAN

    def _filter(self, t: float, x: float, x_f: float, t_prev: float) -> float:
        dt = t - t_prev
        if math.isnan(x_f) or dt > self.max_gap_s:
            return x
        a = 1.0 - math.exp(-dt / self.bindings.voltage_filter_tau_s)
        return x_f + a * (x - x_f)

    def update(self, t_s: float, inputs: Mapping[str, ValidatedInput],
               applied: Mapping[str, float]) -> dict[str, float]:
        """Take this cycle's inputs and readbacks; return the features (NaN where not computable)."""
        t = float(t_s)
        if self._last_t is not None and not t > self._last_t:
            self.reset()
        self._last_t = t
        b = self.bindings
        u = self._value(inputs.get(b.voltage)) if "voltage" in self._needs else NAN
        i = self._value(inputs.get(b.current)) if "current" in self._needs else NAN
        if not math.isnan(u):
            self._u_f = self._filter(t, u, self._u_f, self._u_t)
            self._u_t = t
            self._voltage.append(t, u)
        if not math.isnan(i):
            self._i_f = self._filter(t, i, self._i_f, self._i_t)
            self._i_t = t
        if not (math.isnan(u) or math.isnan(i)):
            self._power.append(t, u * i)
        for role, series in (("feed", self._feed), ("anode", self._anode)):
            if role in self._needs:
                v = applied.get(getattr(b, role))
                if v is not None and math.isfinite(v):
                    series.append(t, float(v))
        row = tuple(f(t) for f in self._compute)
        self._remember(t, row)
        return dict(zip(self.names, row))

    def _remember(self, t: float, row: tuple[float, ...]) -> None:
        ts, xs = self._hist_t, self._hist_x
        ts.append(t)
        xs.append(row)
        start, n = self._hist_start, len(ts)
        horizon = t - self.history_s
        while start + 1 < n and ts[start + 1] <= horizon:
            start += 1
        start = max(start, n - self.max_entries)
        if start > 256 and start > n // 2:
            del ts[:start], xs[:start]
            start = 0
        self._hist_start = start

    def at(self, t_s: float) -> dict[str, float] | None:
        """Features of the last buffered cycle at or before ``t_s``.

        ``None`` when ``t_s`` lies before the buffered history, more than
        ``max_gap_s`` after the newest cycle, or more than ``max_gap_s`` after
        the cycle before it (a gap in the history).
        """
        ts = self._hist_t
        if len(self) == 0:
            return None
        idx = bisect_right(ts, t_s, lo=self._hist_start) - 1
        if idx < self._hist_start or t_s - ts[idx] > self.max_gap_s:
            return None
        return dict(zip(self.names, self._hist_x[idx]))
