"""Kalman filter of the Nd electrolysis cell (implements :class:`apc.protocols.Estimator`).

Reported state (``Estimate.names``): the model states (dissolved and
undissolved oxide, bath and metal temperature, anode–cathode distance, metal
pool) plus two random-walk biases acting on the recipe's nominal parameters:

* ``heat_loss_bias`` b_R: ``heat_loss_resistance = R_nom·exp(b_R)``;
* ``ce_bias`` b_ce: ``ce_ref = ce_ref_nom + b_ce``.

The filter also carries biases of bath conductivity, oxide solubility, anode
wear and dissolution rate, and the coloured bubble noise of the voltage; they
are reported in ``extras`` (value and ``*_std``), not in ``names``/``P``.

Inputs per cycle: measured line current, feed rate (feed MV readback), anode
move rate (Δ anode position / dt), tap rate (Δ cumulative tapped mass / dt,
optional). Measurements: cell voltage every cycle (not fused during an anode
effect, which is fed to the model as a disturbance instead), thermocouple dips
and oxide lab results at their sample times (delayed, fused by re-filtering
the buffered history), and optional extra measurements (soft sensors).

The filter only knows the recipe's nominal parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import casadi as ca
import numpy as np

from apc.kinds.electrolysis_cell.recipe import CellRecipe, EkfSection
from apc.types import Estimate, ValidatedInput, Verdict
from estimators.ekf import BiasState, FilterEvent, ModelEkf, NoiseState
from sim.models.base import ProcessModel

BIASES = (
    BiasState("heat_loss_bias", "heat_loss_resistance_K_kW", "log", "1"),
    BiasState("ce_bias", "ce_ref", "add", "1"),
)
"""Biases reported in the estimate (names = model states + these)."""

INTERNAL_BIASES = (
    BiasState("conductivity_bias", "conductivity_S_cm", "log", "1"),
    BiasState("saturation_bias", "oxide_saturation_wtpct", "add", "wt%"),
    BiasState("wear_bias", "anode_wear_cm_kAh", "log", "1"),
    BiasState("dissolution_bias", "dissolution_rate_1_s", "log", "1"),
    BiasState("feed_bias", "feed_delivery_factor", "log", "1"),
)
"""Biases carried by the filter but reported only in ``extras`` (value and ``*_std``).

* ``conductivity_bias``: bath conductivity (and conduction area) set most of
  the ≈9 V cell voltage; without it every voltage mismatch they cause would be
  read as a wrong gap, temperature or oxide, with far too small a covariance.
  With it the voltage informs the gap/conductivity combination and the gap
  keeps the uncertainty of its prior and of the anode wear.
* ``saturation_bias``: oxide solubility; near saturation it, not the feed,
  decides how much oxide dissolves, and lab results correct it there.
* ``wear_bias``: anode consumption rate, the drift of the gap between moves.
* ``dissolution_bias``: dissolution rate of fed oxide; sets how much oxide is
  still undissolved and how fast a feed change reaches the dissolved oxide.
* ``feed_bias``: the feeder's delivery against its setting (volumetric shots of a
  powder whose bulk density varies; checked weekly). Without it a feeder that
  under-delivers by 10 % leaves the oxide estimate above the truth between labs:
  each lab pulls the state down and the nominal delivery pushes it back up.
"""


NOMINAL_OPERATING_POINT = {
    "current_kA": 6.0,
    "dissolved_oxide_wtpct": 2.0,
    "undissolved_oxide_kg": 2.0,
    "bath_temp_degC": 1050.0,
    "metal_temp_degC": 1035.0,
    "acd_cm": 8.0,
    "metal_pool_kg": 40.0,
}
"""Initial state used for names missing from ``EkfSection.initial``."""

DEFAULT_INITIAL_STD = {
    "dissolved_oxide_kg": 1.5,  # 0.3 wt% in 500 kg
    "undissolved_oxide_kg": 1.0,
    "bath_temp_degC": 5.0,
    "metal_temp_degC": 8.0,
    "acd_cm": 0.15,  # gap set and measured at start-up
    "metal_pool_kg": 5.0,  # heel after the last tap
    "heat_loss_bias": 0.03,
    "ce_bias": 0.02,
    "conductivity_bias": 0.05,
    "saturation_bias": 0.2,
    "wear_bias": 0.15,
    "dissolution_bias": 0.2,
    "feed_bias": 0.1,  # ±10 % calibration error (weekly check)
}
"""Initial standard deviation for names missing from ``EkfSection.initial_std``."""

DEFAULT_PROCESS_STD_PER_SQRT_H = {
    "dissolved_oxide_kg": 0.02,
    "undissolved_oxide_kg": 0.2,
    "bath_temp_degC": 0.1,
    "metal_temp_degC": 8.0,
    "acd_cm": 0.01,
    "metal_pool_kg": 0.3,
    "heat_loss_bias": 0.001,
    "ce_bias": 0.0005,
    "conductivity_bias": 0.0005,
    "saturation_bias": 0.001,
    "wear_bias": 0.0,
    "dissolution_bias": 0.0,
    "feed_bias": 0.01,
}
"""Process noise for names missing from ``EkfSection.process_std_per_sqrt_h``.

Tuned on closed-loop runs of seeds 1–6 (nominal scenario, baseline
controller, 3–7 days, with the tapped-metal counter bound; seeds 11+ are
for evaluation). The metal node settles within minutes on the bath
temperature; its large white noise stands for the uncertain bath-to-metal and
metal-to-ambient heat transfer (a steady offset of a few K), not for real
wandering. The voltage sees only the product of gap and conductivity, so
their split is weakly observable: a larger random walk on the conductivity
bias (0.002/sqrt(h)) widened the gap σ but let the gap drift further (RMSE
0.26 cm vs 0.17 cm on seeds 11–13), so the conductivity walk stays small."""

BOUNDS = {
    "dissolved_oxide_kg": (0.05, 50.0),
    "undissolved_oxide_kg": (0.0, 200.0),
    "bath_temp_degC": (800.0, 1300.0),
    "metal_temp_degC": (800.0, 1300.0),
    "acd_cm": (0.5, 30.0),
    "metal_pool_kg": (0.0, 1000.0),
    "heat_loss_bias": (-1.0, 1.0),
    "ce_bias": (-0.5, 0.5),
    "conductivity_bias": (-1.0, 1.0),
    "saturation_bias": (-2.0, 2.0),
    "wear_bias": (-2.0, 2.0),
    "dissolution_bias": (-2.0, 2.0),
    "feed_bias": (-0.3, 0.3),
}

_CRITICAL_NEWTON_STEPS = 4
"""Newton steps for the critical oxide (exact after one for a margin linear in √c)."""

_HEALTH_GAP_PERIODS = 12
"""Cycles without a usable voltage (or current) before health reports it."""
_AE_CONFIRM_CYCLES = 2
"""Voltages in a row above the anode-effect threshold that make an onset (fused as margin 0)."""


@dataclass(frozen=True)
class EkfBindings:
    """Recipe names the cell filter reads.

    ``voltage``/``current``: inputs (V, kA); ``dip``/``lab_oxide``: sample
    inputs (degC, wt%); ``feed_mv``: MV whose readback is the feed rate
    (kg/h); ``anode_mv``: MV whose readback is the anode position (cm, move
    rate = Δposition/dt); ``tapped``: input of the cumulative tapped metal (kg,
    tap rate = Δ/dt).
    """

    voltage: str
    current: str
    dip: str | None
    lab_oxide: str | None
    feed_mv: str
    anode_mv: str | None = None
    tapped: str | None = None


def bindings_for(recipe: CellRecipe) -> EkfBindings:
    """Bindings found in a recipe by unit, role and model input.

    Voltage: the input in V; current: in kA; dip: the sample input in degC;
    lab oxide: the sample input in wt%; tapped: an input in kg; feed/anode:
    the MVs driving ``feed_kg_h``/``anode_move_cm_h``. Raises ``KeyError``
    when voltage, current or the feed MV are missing.
    """

    io_ = recipe.io
    voltage, current, feed = io_.input_with_unit("V"), io_.input_with_unit("kA"), io_.mv_driving("feed_kg_h")
    if voltage is None or current is None or feed is None:
        raise KeyError("the cell filter needs a voltage input (V), a current input (kA) and a feed MV")
    return EkfBindings(voltage=voltage, current=current, dip=io_.input_with_unit("degC", ("sample",)),
                       lab_oxide=io_.input_with_unit("wt%", ("sample",)), feed_mv=feed,
                       anode_mv=io_.mv_driving("anode_move_cm_h"), tapped=io_.input_with_unit("kg"))


def _usable(v: ValidatedInput | None) -> float:
    """The value of an OK input, else NaN."""
    if v is None or v.verdict is not Verdict.OK or v.sample is None:
        return math.nan
    return float(v.sample.value)


class CellEkf:
    """EKF of the electrolysis cell on the recipe's nominal model.

    Parameters
    ----------
    model : ProcessModel
        The registered cell model.
    p_nominal : np.ndarray
        Recipe parameters (``model.parameter_vector(recipe.model.parameters)``).
    cfg : EkfSection
        Tuning.
    bindings : EkfBindings
    period_s : float
        Nominal cycle time (health timeouts).
    ambient_degC : float
        Heat-sink temperature (not measured).
    """

    def __init__(self, model: ProcessModel, p_nominal: np.ndarray, cfg: EkfSection, bindings: EkfBindings,
                 period_s: float, ambient_degC: float = 30.0) -> None:
        self.model = model
        self.cfg = cfg
        self.bindings = bindings
        self.period_s = float(period_s)
        self.ambient_degC = float(ambient_degC)
        p = np.asarray(p_nominal, dtype=float)
        self._bath_kg = float(p[model.parameter_names.index("bath_mass_kg")])
        op = NOMINAL_OPERATING_POINT
        x0 = {
            "dissolved_oxide_kg": op["dissolved_oxide_wtpct"] * self._bath_kg / 100.0,
            "undissolved_oxide_kg": op["undissolved_oxide_kg"],
            "bath_temp_degC": op["bath_temp_degC"],
            "metal_temp_degC": op["metal_temp_degC"],
            "acd_cm": op["acd_cm"],
            "metal_pool_kg": op["metal_pool_kg"],
            "heat_loss_bias": 0.0,
            "ce_bias": 0.0,
            "conductivity_bias": 0.0,
            "saturation_bias": 0.0,
            "wear_bias": 0.0,
            "dissolution_bias": 0.0,
            "feed_bias": 0.0,
        }
        x0.update(cfg.initial)
        self._u0 = np.array([op["current_kA"], 0.0, 0.0])
        self._d0 = np.array([self.ambient_degC, 0.0, 0.0])
        noise: tuple[NoiseState, ...] = ()
        self._voltage_R = cfg.voltage_std_V**2
        if cfg.voltage_noise_tau_s > 0.0:
            noise = (NoiseState("voltage_noise_V", "cell_voltage_V", cfg.voltage_noise_tau_s, cfg.voltage_std_V, "V"),)
            self._voltage_R = cfg.voltage_white_std_V**2
        self.filter = ModelEkf(
            model, p, x0, {**DEFAULT_INITIAL_STD, **cfg.initial_std},
            {**DEFAULT_PROCESS_STD_PER_SQRT_H, **cfg.process_std_per_sqrt_h},
            biases=BIASES + INTERNAL_BIASES, gate_sigma=cfg.gate_sigma, history_h=cfg.history_h,
            bounds=BOUNDS, u0=self._u0, d0=self._d0, noise_states=noise,
        )
        self._n_pub = len(model.states) + len(BIASES)
        self.names = self.filter.names[: self._n_pub]
        self.units = self.filter.units[: self._n_pub]
        self._internal = {n: self.filter.index(n) for n in self.filter.names[self._n_pub:]}
        self._i_tb = self.names.index("bath_temp_degC")
        self._i_tm = self.names.index("metal_temp_degC")
        self._readout = ("dissolved_oxide_wtpct", "ae_margin_A_cm2", "current_efficiency",
                         "oxide_saturation_wtpct", "cell_voltage_V")
        self._forecast_fn = self._build_forecast_fn()
        self.reset()

    def _build_forecast_fn(self) -> ca.Function:
        """(xa, u, d, p) -> (critical oxide wt%, dissolved-oxide rate wt%/h, ∂rate/∂xa, ∂c/∂xa).

        The critical oxide is the concentration at which the model's anode-effect margin (critical
        minus actual anode current density) is zero, the other states at the estimate: a fixed
        number of Newton steps on √m_d (the critical current density grows about linearly in √c),
        unrolled into this one function, clamped to the filter's bounds. The rate is the model's
        own dm_d/dt (feed and dissolution minus the Faraday consumption) at the estimate.
        """
        m = self.model
        xa, u, d, _p, pe = self.filter.symbols()
        nx = len(m.states)
        i_md = m.state_names.index("dissolved_oxide_kg")
        i_margin = m.aux_names.index("ae_margin_A_cm2")
        s = ca.SX.sym("s")
        x_s = ca.vertcat(*[s * s if i == i_md else xa[i] for i in range(nx)])
        g = m.aux(x_s, u, d, pe)[i_margin]
        g_fn = ca.Function("ae_margin_of_sqrt_oxide", [s, xa, u, d, _p], [g, ca.jacobian(g, s)])
        lo, hi = (math.sqrt(v) for v in BOUNDS["dissolved_oxide_kg"])
        s_k = ca.fmin(ca.fmax(ca.sqrt(ca.fmax(xa[i_md], lo * lo)), lo), hi)
        for _ in range(_CRITICAL_NEWTON_STEPS):
            g_k, dg_k = g_fn(s_k, xa, u, d, _p)
            step = ca.if_else(dg_k > 1e-9, g_k / dg_k, 0.0)
            s_k = ca.fmin(ca.fmax(s_k - step, lo), hi)
        c_crit = 100.0 * s_k * s_k / self._bath_kg
        rate = m.f(xa[:nx], u, d, pe)[i_md] * 3600.0 * 100.0 / self._bath_kg  # wt%/h
        c = 100.0 * xa[i_md] / self._bath_kg
        return ca.Function("ae_forecast_inputs", [xa, u, d, _p],
                           [c_crit, rate, ca.jacobian(rate, xa), ca.jacobian(c, xa)], {"cse": True})

    def reset(self) -> None:
        """Forget all history: back to the initial state and covariance."""
        self.filter.reset()
        self._t_origin: float | None = None
        self._t_last: float | None = None
        self._anode_pos: float | None = None
        self._tapped: float | None = None
        self._seen: dict[str, float] = {}
        self._t_voltage: float | None = None
        self._t_current: float | None = None
        self.events: list[FilterEvent] = []
        """Every filter event (held inputs, rejected samples, repairs), newest last, bounded."""
        self.rejected: list[FilterEvent] = []
        """Rejected outliers and too-old samples, newest last, bounded (for the runtime to log)."""
        self.counts = {"rejected_outliers": 0, "rejected_too_old": 0, "inputs_held": 0,
                       "covariance_repairs": 0, "samples_fused": 0}
        self._last_innov_V = math.nan
        self._voltage_gated = 0
        self._ae_since: float | None = None
        self._ae_cycles = 0
        self._after_ae = False

    # ----------------------------------------------------------------- inputs
    def _rate(self, value: float, prev: float | None, dt: float) -> tuple[float, float | None]:
        """(Δvalue/dt per hour, new memory); a missing value gives rate 0 and keeps the memory."""
        if not math.isfinite(value):
            return 0.0, prev
        if prev is None or dt <= 0.0:
            return 0.0, value
        return (value - prev) * 3600.0 / dt, value

    def _sample_time(self, v: ValidatedInput, t_s: float) -> float | None:
        """Monotonic sample time (filter scale) of a lab/dip sample; ``None`` = now."""
        s = v.sample
        if s is None or s.sample_ts is None or self._t_origin is None:
            return None
        offset = s.receive_ts - t_s  # UTC − monotonic
        return s.sample_ts - offset - self._t_origin

    def _fuse_sample(self, name: str | None, signal: str, std: float, t_s: float,
                     inputs: Mapping[str, ValidatedInput], offset: float = 0.0) -> None:
        if name is None:
            return
        v = inputs.get(name)
        if v is None or v.verdict is not Verdict.OK or v.sample is None:
            return
        s = v.sample
        key = s.sample_ts if s.sample_ts is not None else (s.source_ts if s.source_ts is not None else s.receive_ts)
        if self._seen.get(name) == key:
            return  # same sample again (validation should already say NO_NEW_SAMPLE)
        self._seen[name] = key
        res = self.filter.update(signal, v.sample.value - offset, std * std, self._sample_time(v, t_s))
        if res.accepted:
            self.counts["samples_fused"] += 1

    # ----------------------------------------------------------------- update
    def update(
        self,
        t_s: float,
        inputs: Mapping[str, ValidatedInput],
        applied: Mapping[str, float],
        extra_measurements: Mapping[str, tuple[float, float, float | None]] | None = None,
    ) -> Estimate:
        """Predict to ``t_s`` with the last period's inputs, then fuse this cycle's measurements.

        ``extra_measurements`` maps a model output/aux/state name to
        ``(value, std, sample_time_monotonic_s or None)``.
        """
        b, cfg, f = self.bindings, self.cfg, self.filter
        if self._t_origin is None:
            self._t_origin = t_s
        dt = 0.0 if self._t_last is None else t_s - self._t_last
        self._t_last = t_s
        voltage = _usable(inputs.get(b.voltage))
        current = _usable(inputs.get(b.current))
        feed = float(applied.get(b.feed_mv, math.nan))
        move_cm_h, self._anode_pos = self._rate(
            float(applied.get(b.anode_mv, math.nan)) if b.anode_mv else math.nan, self._anode_pos, dt)
        tap_kg_h, self._tapped = self._rate(
            _usable(inputs.get(b.tapped)) if b.tapped else math.nan, self._tapped, dt)
        in_ae = math.isfinite(voltage) and voltage > cfg.anode_effect_voltage_V
        u = np.array([current, feed, move_cm_h])
        d = np.array([self.ambient_degC, max(tap_kg_h, 0.0), 1.0 if in_ae else 0.0])
        if math.isfinite(current):
            self._t_current = t_s
        if dt > 0.0:
            f.predict(dt, u, d)
        # Voltage: every cycle unless in anode effect (then its noise is several times larger).
        self._last_innov_V = math.nan
        if in_ae:
            self._ae_cycles += 1
            if self._ae_since is None:
                self._ae_since = t_s
            # Fused once, on the second voltage in a row above the threshold (one spike is no onset).
            if self._ae_cycles == _AE_CONFIRM_CYCLES and cfg.anode_effect_margin_std_A_cm2 > 0.0:
                res = f.update("ae_margin_A_cm2", 0.0, cfg.anode_effect_margin_std_A_cm2**2, gate=False)
                self.counts["samples_fused"] += res.accepted
        elif math.isfinite(voltage):
            if self._ae_since is not None:
                # The anode effect is over: the states moved unobserved, so the next voltage is fused
                # ungated, and the health gap counts from here.
                self._voltage_gated, self._after_ae = _HEALTH_GAP_PERIODS, True
                self._t_voltage = t_s
            self._ae_since, self._ae_cycles = None, 0
        if math.isfinite(voltage) and not in_ae:
            # After a run of gated voltages the next one is fused ungated: a real step
            # (anode change, sudden gap change) is then learnt instead of locked out.
            relearn = self._voltage_gated >= _HEALTH_GAP_PERIODS
            if relearn and not self._after_ae and cfg.voltage_step_gap_std_cm > 0.0:
                f.inflate("acd_cm", cfg.voltage_step_gap_std_cm)
            self._after_ae = False
            res = f.update("cell_voltage_V", voltage, self._voltage_R, gate=not relearn)
            self._last_innov_V = res.innovation
            if res.accepted:
                self._t_voltage = t_s
                self._voltage_gated = 0
            else:
                self._voltage_gated += 1
        self._fuse_sample(b.dip, "bath_temp_degC", cfg.dip_std_degC, t_s, inputs, cfg.dip_offset_degC)
        self._fuse_sample(b.lab_oxide, "dissolved_oxide_wtpct", cfg.lab_oxide_std_wtpct, t_s, inputs)
        for name, (value, std, t_sample) in (extra_measurements or {}).items():
            t_f = None if t_sample is None or self._t_origin is None else t_sample - self._t_origin
            f.update(name, value, std * std, t_f)
        return self._estimate(t_s)

    # --------------------------------------------------------------- estimate
    def _forecast_inputs(self) -> dict[str, float]:
        """Critical oxide and the dissolved oxide's rate with its std and correlation with the oxide
        (inputs of the anode-effect forecast)."""
        f = self.filter
        c_crit, rate, J, h = self._forecast_fn(f.x, f.u_last, f.d_last, f.p)
        J, h, P = np.asarray(J).reshape(-1), np.asarray(h).reshape(-1), f.P
        var_r, var_c, cov = float(J @ P @ J), float(h @ P @ h), float(h @ P @ J)
        corr = cov / math.sqrt(var_r * var_c) if var_r > 0.0 and var_c > 0.0 else 0.0
        return {
            "critical_oxide_wtpct": float(c_crit),
            "dissolved_oxide_rate_wtpct_h": float(rate),
            "dissolved_oxide_rate_std_wtpct_h": math.sqrt(max(var_r, 0.0)),
            "dissolved_oxide_rate_corr": corr,
        }

    def _collect_events(self) -> bool:
        repaired = False
        for ev in self.filter.drain_events():
            self.events.append(ev)
            if ev.kind == "rejected_outlier":
                self.counts["rejected_outliers"] += 1
                self.rejected.append(ev)
            elif ev.kind == "rejected_too_old":
                self.counts["rejected_too_old"] += 1
                self.rejected.append(ev)
            elif ev.kind == "input_held":
                self.counts["inputs_held"] += 1
            elif ev.kind == "covariance_repaired":
                self.counts["covariance_repairs"] += 1
                repaired = True
        del self.events[:-1000]
        del self.rejected[:-1000]
        return repaired

    def _health(self, t_s: float, repaired: bool) -> str:
        gap = _HEALTH_GAP_PERIODS * self.period_s
        if repaired:
            return "covariance repaired"
        if self._t_current is None or t_s - self._t_current > gap:
            return "no valid line current"
        if self._t_voltage is None or t_s - self._t_voltage > gap:
            if self._ae_since is not None and t_s - self._ae_since <= self.cfg.anode_effect_max_s:
                return "ok"  # in anode effect: the voltage is not fused, by design
            return ("no voltage fused" if self._ae_since is None
                    else f"anode effect for more than {self.cfg.anode_effect_max_s:g} s")
        return "ok"

    def _estimate(self, t_s: float) -> Estimate:
        f = self.filter
        repaired = self._collect_events()
        x, P = f.x, f.P
        y, std = f.outputs(self._readout)
        c, margin, ce, c_sat, v_model = y
        extras = {
            "dissolved_oxide_wtpct": c,
            "dissolved_oxide_std_wtpct": std[0],
            "oxide_saturation_wtpct": c_sat,
            "bath_temp_std_degC": math.sqrt(P[self._i_tb, self._i_tb]),
            "metal_temp_std_degC": math.sqrt(P[self._i_tm, self._i_tm]),
            "ae_margin_A_cm2": margin,
            "ae_margin_std_A_cm2": std[1],
            "current_efficiency": ce,
            "current_efficiency_std": std[2],
            "cell_voltage_model_V": v_model,
            "voltage_innovation_V": self._last_innov_V,
            **{k: float(v) for k, v in self.counts.items()},
        }
        extras.update(self._forecast_inputs())
        for name, i in self._internal.items():
            extras[name] = float(x[i])
            extras[f"{name}_std"] = math.sqrt(P[i, i])
        n = self._n_pub
        return Estimate(
            names=self.names,
            units=self.units,
            x=tuple(x[:n].tolist()),
            P=tuple(map(tuple, P[:n, :n].tolist())),
            health=self._health(t_s, repaired),
            extras=extras,
        )
