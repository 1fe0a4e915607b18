"""Kalman filter of a furnace (implements :class:`apc.protocols.Estimator`).

One class for either furnace model (``vim_furnace``, ``annealing_furnace``), built on
:class:`estimators.ekf.ModelEkf` with the recipe's nominal parameters. It estimates every model
state, including what is never measured: the VIM charge enthalpy (hence charge temperature and
liquid fraction) behind the lagged immersion thermocouple, the annealer's load core behind the gas
and outer-wrap thermocouples, plus random-walk parameter biases (the kind's tuning) that absorb the
model's largest uncertainties (coupling efficiency, outgassing, heat losses, gas-to-load transfer,
the annealer's load mass, which differs from batch to batch). A controller applies the same biases
to its nominal parameters (:func:`biased_parameters`), which makes its predictions offset-free.

Per cycle: predict from the last update with the MVs in force (``applied``, mapped to model
inputs by ``mv_inputs``) and the disturbances (measured inputs mapped by
``disturbance_inputs``, else the tuning's values), then fuse each valid measurement (recipe
input name → model output, ``measurements``). The filter is seeded at the first update from the
first valid measurements (VIM: charge enthalpy from the thermocouple by inverting T(H); annealer:
surface and core at the load thermocouple), so a batch starts from what the thermocouples say.

``Estimate``: ``names`` = model states + the biases, ``P`` their covariance; ``extras`` = every
aux signal at the estimate (``charge_temp_degC``, ``liquid_fraction``, ``core_surface_dT_K``, …),
the standard deviation of each state and of the controlled aux signals (``*_std``), and the last
valid raw value of each measured input under its recipe input name (what a PID may read; NaN
when the input is not valid this cycle), and again under ``<model output>_measured``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import structlog

from apc.types import Estimate, ValidatedInput, Verdict
from estimators.ekf import BiasState, ModelEkf
from sim.models.base import ProcessModel

Seeder = Callable[[ProcessModel, np.ndarray, dict[str, float], Mapping[str, float]], None]
"""``seed(model, p, x0, measured)``: fill ``x0`` (state name → value) from the first measurements."""


@dataclass(frozen=True)
class FurnaceFilterTuning:
    """Default tuning of the filter for one furnace model (all overridable per name)."""

    biases: tuple[BiasState, ...]
    initial: Mapping[str, float]
    """Initial state where the measurements do not seed it."""
    initial_std: Mapping[str, float]
    process_std_per_sqrt_h: Mapping[str, float]
    measurement_std: Mapping[str, float]
    """Noise std per model output name (absolute part)."""
    measurement_rel_std: Mapping[str, float]
    """Relative part of the noise std per model output name: std = abs + rel·|z|."""
    bounds: Mapping[str, tuple[float, float]]
    disturbance_values: Mapping[str, float]
    input_values: Mapping[str, float] = field(default_factory=dict)
    """Model inputs no MV drives: value held in the prediction."""
    std_signals: tuple[str, ...] = ()
    """Aux signals whose std is reported in extras."""
    seed: Seeder | None = None
    """Sets the initial state from the first valid measurements (by model output name), e.g. a
    charge enthalpy from the thermocouple; None: the tuning's ``initial`` as it is."""


def biased_parameters(model: ProcessModel, p_nominal: np.ndarray, values: Mapping[str, float],
                      biases: Sequence[BiasState]) -> np.ndarray:
    """Nominal parameters with the filter's ``biases`` found in ``values`` applied (log: p·e^b, add: p + b);
    biases absent from ``values`` (or not finite) count as 0."""
    p = np.asarray(p_nominal, dtype=float).copy()
    for b in biases:
        v = values.get(b.name)
        if v is None or not math.isfinite(float(v)) or b.parameter not in model.parameter_names:
            continue
        i = model.parameter_names.index(b.parameter)
        p[i] = p[i] * math.exp(float(v)) if b.kind == "log" else p[i] + float(v)
    return p


def _value(v: ValidatedInput | None) -> float:
    """The value of an OK input, else NaN."""
    if v is None or v.verdict is not Verdict.OK or v.sample is None:
        return math.nan
    return float(v.sample.value)


class FurnaceEkf:
    """EKF of a furnace on the recipe's nominal model; see the module docstring.

    Parameters
    ----------
    model : ProcessModel
        ``vim_furnace`` or ``annealing_furnace`` (or another model with a tuning passed in).
    p_nominal : np.ndarray
        Recipe parameters (``model.parameter_vector(recipe.model.parameters)``).
    measurements : Mapping[str, str]
        Recipe input name → model output name it measures (VIM: thermocouple → ``tc_temp_degC``,
        gauge → ``chamber_pressure_Pa``; annealer: ``gas_temp_degC``, ``load_tc_temp_degC``).
    mv_inputs : Mapping[str, str]
        Recipe MV name → model input it drives (its readback is the input in force).
    period_s : float
        Nominal cycle time (health timeouts).
    disturbance_inputs : Mapping[str, str]
        Recipe input name → model disturbance, fed when valid (else the tuning's value).
    tuning : FurnaceFilterTuning
        The unit kind's tuning for this model (biases, noise, bounds, seeding).
    initial, initial_std, process_std_per_sqrt_h, measurement_std, disturbance_values : Mapping
        Per-name overrides of the tuning.
    gate_sigma : float
        Innovation gate (normalised).
    relearn_after : int
        Consecutive gated values of one input after which the next is fused ungated.
    health_gap_periods : int
        Cycles without a fused measurement of an input before health reports it.
    """

    def __init__(self, model: ProcessModel, p_nominal: np.ndarray, measurements: Mapping[str, str],
                 mv_inputs: Mapping[str, str], period_s: float, *,
                 disturbance_inputs: Mapping[str, str] | None = None,
                 tuning: FurnaceFilterTuning,
                 initial: Mapping[str, float] | None = None,
                 initial_std: Mapping[str, float] | None = None,
                 process_std_per_sqrt_h: Mapping[str, float] | None = None,
                 measurement_std: Mapping[str, float] | None = None,
                 disturbance_values: Mapping[str, float] | None = None,
                 gate_sigma: float = 5.0, relearn_after: int = 3, health_gap_periods: int = 12) -> None:
        self.model = model
        self.tuning = tuning
        self.p = np.asarray(p_nominal, dtype=float).copy()
        self.period_s = float(period_s)
        self.measurements = dict(measurements)
        self.mv_inputs = dict(mv_inputs)
        self.disturbance_inputs = dict(disturbance_inputs or {})
        for inp, out in self.measurements.items():
            if out not in model.output_names:
                raise ValueError(f"measurements: {out!r} (input {inp!r}) is not an output of {model.name!r}")
        for mv, inp in self.mv_inputs.items():
            if inp not in model.input_names:
                raise ValueError(f"mv_inputs: {inp!r} (MV {mv!r}) is not an input of {model.name!r}")
        for inp, dist in self.disturbance_inputs.items():
            if dist not in model.disturbance_names:
                raise ValueError(f"disturbance_inputs: {dist!r} (input {inp!r}) is not a disturbance of "
                                 f"{model.name!r}")
        self._initial = {**tuning.initial, **(initial or {})}
        self._initial_std = {**tuning.initial_std, **(initial_std or {})}
        self._process = {**tuning.process_std_per_sqrt_h, **(process_std_per_sqrt_h or {})}
        self._meas_std = {**tuning.measurement_std, **(measurement_std or {})}
        for out in self.measurements.values():
            if not (self._meas_std.get(out, math.nan) > 0):
                raise ValueError(f"measurement_std: {out!r} needs a std > 0")
        self._dist_values = {**tuning.disturbance_values, **(disturbance_values or {})}
        missing = [n for n in model.disturbance_names
                   if n not in self._dist_values and n not in self.disturbance_inputs.values()]
        if missing:
            raise ValueError(f"disturbance_values: no value for disturbance(s) {missing}")
        self.names: tuple[str, ...] = model.state_names + tuple(b.name for b in tuning.biases)
        self.units: tuple[str, ...] = tuple(s.unit for s in model.states) + tuple(b.unit for b in tuning.biases)
        clash = sorted(set(self.measurements) & (set(self.names) | set(model.aux_names)))
        if clash:
            raise ValueError(f"measurements: recipe input name(s) {clash} clash with estimate signal names")
        if not gate_sigma > 0 or relearn_after < 1:
            raise ValueError("gate_sigma must be > 0 and relearn_after >= 1")
        self.gate_sigma = float(gate_sigma)
        self.relearn_after = int(relearn_after)
        self.health_gap_s = float(health_gap_periods) * self.period_s
        self._log = structlog.get_logger(__name__).bind(model=model.name)
        self._prior: dict[str, tuple[float, float]] = {}
        self.reset()

    # ----------------------------------------------------------------- protocol
    def reset(self) -> None:
        """Forget all history; the next update seeds the filter again."""
        self.filter: ModelEkf | None = None
        self._t_last: float | None = None
        self._t_fused: dict[str, float] = {}
        self._gated: dict[str, int] = dict.fromkeys(self.measurements, 0)
        self._raw: dict[str, float] = dict.fromkeys(self.measurements, math.nan)
        self._repaired = False
        self.counts = {"rejected_outliers": 0, "inputs_held": 0, "covariance_repairs": 0}

    def prime(self, prior: Mapping[str, tuple[float, float]]) -> None:
        """Start the parameter biases from ``prior`` (bias name → (value, std), e.g. carried from the
        last batch): applied now to a running filter, else when the first update seeds it. Names that
        are not biases of this filter are refused (ValueError)."""
        biases = {b.name for b in self.tuning.biases}
        unknown = sorted(set(prior) - biases)
        if unknown:
            raise ValueError(f"prior: {unknown} are not parameter biases of this filter ({sorted(biases)})")
        self._prior = dict(prior)
        if self.filter is not None:
            self.filter.set_states(self._prior)
            self._log.info("furnace_ekf_primed", **{k: round(v, 4) for k, (v, _) in self._prior.items()})

    def update(self, t_s: float, inputs: Mapping[str, ValidatedInput], applied: Mapping[str, float]) -> Estimate:
        """Predict to ``t_s`` with the MVs in force, then fuse this cycle's valid measurements."""
        self._raw = {n: _value(inputs.get(n)) for n in self.measurements}
        u, d = self._inputs(inputs, applied)
        if self.filter is None:
            self.filter = self._seeded_filter(t_s, u, d)
            self._t_last = t_s
            if self._prior:
                self.filter.set_states(self._prior)
        else:
            dt = t_s - (self._t_last if self._t_last is not None else t_s)
            self._t_last = t_s
            if dt > 0.0:
                self.filter.predict(dt, u, d)
        f = self.filter
        for inp, out in self.measurements.items():
            z = self._raw[inp]
            if not math.isfinite(z):
                continue
            std = self._meas_std[out] + self.tuning.measurement_rel_std.get(out, 0.0) * abs(z)
            # After a run of gated values the next one is fused ungated: a real change the model
            # missed (end of melting, a leak) is then learnt instead of locked out.
            relearn = self._gated[inp] >= self.relearn_after
            res = f.update(out, z, std * std, gate=not relearn)
            if res.accepted:
                self._t_fused[inp] = t_s
                self._gated[inp] = 0
            else:
                self._gated[inp] += 1
                if self._gated[inp] == 1:
                    self._log.warning("furnace_ekf_gated", signal=inp, value=z, sigma=res.sigma)
        self._collect_events()
        return self._estimate(t_s)

    # ------------------------------------------------------------------ helpers
    def _inputs(self, inputs: Mapping[str, ValidatedInput], applied: Mapping[str, float]) -> tuple[np.ndarray,
                                                                                                    np.ndarray]:
        m, tn = self.model, self.tuning
        u = np.array([float(tn.input_values.get(n, math.nan)) for n in m.input_names])
        for mv, inp in self.mv_inputs.items():
            u[m.input_names.index(inp)] = float(applied.get(mv, math.nan))
        d = np.array([float(self._dist_values.get(n, math.nan)) for n in m.disturbance_names])
        for inp, dist in self.disturbance_inputs.items():
            v = _value(inputs.get(inp))
            if math.isfinite(v):
                d[m.disturbance_names.index(dist)] = v
        return u, d

    def _seeded_filter(self, t_s: float, u: np.ndarray, d: np.ndarray) -> ModelEkf:
        """A filter started from the first valid measurements."""
        m = self.model
        x0 = dict(self._initial)
        meas = {self.measurements[n]: v for n, v in self._raw.items() if math.isfinite(v)}
        for name, v in meas.items():
            if name in m.state_names:
                x0[name] = v
        seeder = self.tuning.seed
        if seeder is not None:
            seeder(m, self.p, x0, meas)
        u0 = np.where(np.isfinite(u), u, 0.0)
        d0 = np.where(np.isfinite(d), d, 0.0)
        self._log.info("furnace_ekf_seeded", **{k: round(float(v), 4) for k, v in x0.items()})
        return ModelEkf(m, self.p, x0, self._initial_std, self._process, biases=self.tuning.biases,
                        gate_sigma=self.gate_sigma,
                        history_h=0.25, max_step_s=5.0, bounds=self.tuning.bounds, u0=u0, d0=d0, t0_s=t_s)

    def _collect_events(self) -> None:
        assert self.filter is not None
        for ev in self.filter.drain_events():
            if ev.kind == "rejected_outlier":
                self.counts["rejected_outliers"] += 1
            elif ev.kind == "input_held":
                self.counts["inputs_held"] += 1
            elif ev.kind == "covariance_repaired":
                self.counts["covariance_repairs"] += 1
                self._repaired = True
                self._log.warning("furnace_ekf_covariance_repaired", detail=ev.detail)

    def _health(self, t_s: float) -> str:
        if self._repaired:
            self._repaired = False
            return "covariance repaired"
        for inp in self.measurements:
            last = self._t_fused.get(inp)
            if last is None or t_s - last > self.health_gap_s:
                return f"no {inp} fused"
        return "ok"

    def _estimate(self, t_s: float) -> Estimate:
        f = self.filter
        assert f is not None
        x, P = f.x, f.P
        extras: dict[str, float] = dict(f.aux())
        for i, name in enumerate(self.names):
            extras[f"{name}_std"] = math.sqrt(max(P[i, i], 0.0))
        if self.tuning.std_signals:
            _, std = f.outputs(self.tuning.std_signals)
            for name, s in zip(self.tuning.std_signals, std):
                extras[f"{name}_std"] = float(s)
        extras.update(self._raw)
        extras.update({f"{out}_measured": self._raw[inp] for inp, out in self.measurements.items()})
        extras.update({k: float(v) for k, v in self.counts.items()})
        return Estimate(
            names=self.names,
            units=self.units,
            x=tuple(float(v) for v in x),
            P=tuple(tuple(float(v) for v in row) for row in P),
            health=self._health(t_s),
            extras=extras,
        )

