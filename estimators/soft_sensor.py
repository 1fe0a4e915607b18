"""ONNX soft sensor with a lab/thermocouple bias update (reference §4).

ŷ = f(x) + b, where f is an ONNX model of the features of
:mod:`estimators.features` and b a bias learnt from lab or dip samples. When a
sample y taken at time t_s arrives (late), f(x(t_s)) is recomputed from the
features buffered at t_s, e = y − f(x(t_s)), and b ← b + λ·(e − b). Samples
out of range, too old, taken before the buffered history or otherwise
unusable are rejected with a reason; every decision is kept as a
:class:`BiasEvent` in a bounded list.

The model is checked when it is loaded (:func:`load_soft_sensor`): file
present, valid ONNX, one input of the configured name with shape
[1 or dynamic, len(features)] and float32/float64 elements, an output of the
configured name with one value per row. Each mismatch raises
:class:`SoftSensorError` naming the file, what was expected and what was
found. The session runs on the CPU with one thread.

A soft sensor trained on the simulator demonstrates the pipeline; it says
nothing about accuracy on a real cell until it is retrained on plant data.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apc.kinds.electrolysis_cell.recipe import SoftSensorSection
from apc.types import ValidatedInput, Verdict
from estimators.features import FeatureBindings, FeatureBuilder

__all__ = [
    "BiasEvent",
    "SoftSensor",
    "SoftSensorError",
    "SoftSensorResult",
    "load_soft_sensor",
]

NAN = math.nan
_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}
_IGNORED_VERDICTS = frozenset({Verdict.MISSING, Verdict.NO_NEW_SAMPLE})
METADATA_FEATURES = "apc.features"
"""ONNX metadata key: comma-separated feature names the model was trained on (checked when present)."""
METADATA_TARGET = "apc.target"
"""ONNX metadata key: the predicted signal (checked when present)."""


class SoftSensorError(ValueError):
    """A soft-sensor model file was refused; the message names the file and the mismatch."""


@dataclass(frozen=True, slots=True)
class SoftSensorResult:
    """One cycle's soft-sensor output.

    ``value`` = ``raw`` + ``bias`` (NaN when not computable or outside the
    valid range), ``health`` is ``"ok"`` or a short reason.
    """

    value: float
    bias: float
    raw: float
    health: str

    @property
    def healthy(self) -> bool:
        """True when ``value`` may be used."""
        return self.health == "ok"


@dataclass(frozen=True, slots=True)
class BiasEvent:
    """A lab/dip sample the bias update accepted or rejected.

    ``t_s`` is the monotonic time it was processed, ``sample_t_s`` its sample
    time on the same scale; ``predicted`` is f(x(t_s)) (NaN if not
    computable), ``error`` y − predicted.
    """

    t_s: float
    sample_ts: float | None
    sample_t_s: float
    value: float
    accepted: bool
    reason: str
    predicted: float = NAN
    error: float = NAN
    bias_before: float = NAN
    bias_after: float = NAN


def _dims(shape: Any) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in (shape or [])]


class SoftSensor:
    """A loaded ONNX model, its feature builder and its bias.

    Use :meth:`step` once per cycle (features, bias update, prediction), or
    the parts: :meth:`raw` / :meth:`predict` on a feature mapping and
    :meth:`update_bias` for one sample.

    Attributes: ``bias`` (b, target units), ``samples_accepted``,
    ``features`` (the :class:`FeatureBuilder`, history ``max_sample_age_s`` +
    10 min), ``model_path`` and ``model_sha256`` (provenance).
    """

    def __init__(self, cfg: SoftSensorSection, session: Any, model_path: Path, *,
                 bindings: FeatureBindings | None = None, max_events: int = 50) -> None:
        self.cfg = cfg
        self.model_path = model_path
        self.model_sha256 = hashlib.sha256(model_path.read_bytes()).hexdigest()
        self._session = session
        inp = session.get_inputs()[0]
        self._dtype = _FLOAT_TYPES[inp.type]
        self._x = np.zeros((1, len(cfg.features)), dtype=self._dtype)
        self._feeds = {cfg.input_name: self._x}
        self._outputs = [cfg.output_name]
        self.features = FeatureBuilder(cfg.features, bindings,
                                       history_s=cfg.max_sample_age_s + 600.0)
        self._lo, self._hi = cfg.valid_range
        self._events: deque[BiasEvent] = deque(maxlen=max_events)
        self.reset()

    # ----------------------------------------------------------- state
    def reset(self) -> None:
        """Forget feature history, bias and events."""
        self.features.reset()
        self.bias = 0.0
        self.samples_accepted = 0
        self._events.clear()
        self._seen_sample_ts: float | None = None
        self._refused_key: tuple[float, Verdict] | None = None
        self._t_fused: float | None = None

    @property
    def last_events(self) -> tuple[BiasEvent, ...]:
        """The most recent bias-update decisions, oldest first (bounded)."""
        return tuple(self._events)

    # ----------------------------------------------------------- model
    def raw(self, features: Mapping[str, float]) -> float:
        """f(x): the model alone; NaN if any feature is missing or NaN."""
        x = self._x[0]
        for j, name in enumerate(self.cfg.features):
            v = features.get(name, NAN)
            if not math.isfinite(v):
                return NAN
            x[j] = v
        out = self._session.run(self._outputs, self._feeds)[0]
        y = float(np.asarray(out).reshape(-1)[0])
        return y if math.isfinite(y) else NAN

    def predict(self, features: Mapping[str, float]) -> float:
        """f(x) + b; NaN if any feature is NaN or the result lies outside ``valid_range``."""
        y = self.raw(features) + self.bias
        return y if self._lo <= y <= self._hi else NAN

    # ----------------------------------------------------------- bias
    def update_bias(self, t_s: float, sample: ValidatedInput) -> BiasEvent | None:
        """Use one lab/dip sample (if new) to update the bias; return the decision.

        ``t_s`` is now (monotonic). The sample's UTC ``sample_ts`` is put on the
        monotonic scale with the offset receive_ts − t_s. Returns ``None`` when
        there is nothing new (missing, repeated, continuous signal).
        """
        s = sample.sample
        if s is None or s.sample_ts is None or sample.verdict in _IGNORED_VERDICTS:
            return None
        # Each sample is judged once: an accepted one by its sample time, a refused one
        # until it shows up with another verdict (e.g. bad quality that turns good).
        key = (s.sample_ts, sample.verdict)
        if s.sample_ts == self._seen_sample_ts or key == self._refused_key:
            return None
        if sample.verdict is Verdict.OK:
            self._seen_sample_ts = s.sample_ts
        else:
            self._refused_key = key
        t_sample = s.sample_ts - (s.receive_ts - t_s)
        y = float(s.value)
        age = s.receive_ts - s.sample_ts
        b0 = self.bias

        def reject(reason: str, predicted: float = NAN) -> BiasEvent:
            ev = BiasEvent(t_s, s.sample_ts, t_sample, y, False, reason, predicted,
                           y - predicted, b0, b0)
            self._events.append(ev)
            return ev

        if sample.verdict is not Verdict.OK:
            return reject(f"validation verdict {sample.verdict.value}")
        if not math.isfinite(y):
            return reject("value is not finite")
        if not self._lo <= y <= self._hi:
            return reject(f"value {y:g} outside valid range [{self._lo:g}, {self._hi:g}]")
        if age > self.cfg.max_sample_age_s:
            return reject(f"sample is {age:.0f} s old (max_sample_age_s {self.cfg.max_sample_age_s:g})")
        if age < -self.features.max_gap_s:
            return reject(f"sample time lies {-age:.0f} s in the future")
        x = self.features.at(t_sample)
        if x is None:
            return reject("no buffered features at the sample time")
        f = self.raw(x)
        if math.isnan(f):
            bad = [n for n, v in x.items() if not math.isfinite(v)]
            return reject(f"features not computable at the sample time: {bad}" if bad
                          else "model output not finite at the sample time")
        e = y - f
        gain = 1.0 if self.samples_accepted == 0 and self.cfg.first_sample_sets_bias else self.cfg.bias_gain
        self.bias = b0 + gain * (e - b0)
        self.samples_accepted += 1
        ev = BiasEvent(t_s, s.sample_ts, t_sample, y, True, "accepted", f, e, b0, self.bias)
        self._events.append(ev)
        return ev

    # ----------------------------------------------------------- cycle
    def step(self, t_s: float, inputs: Mapping[str, ValidatedInput], applied: Mapping[str, float]) -> SoftSensorResult:
        """One cycle: update features, take a new sample into the bias, predict."""
        x = self.features.update(t_s, inputs, applied)
        sample = inputs.get(self.cfg.sample_input)
        if sample is not None:
            self.update_bias(t_s, sample)
        raw = self.raw(x)
        if math.isnan(raw):
            bad = [n for n, v in x.items() if not math.isfinite(v)]
            health = f"features not computable: {', '.join(bad)}" if bad else "model output not finite"
            return SoftSensorResult(NAN, self.bias, NAN, health)
        value = raw + self.bias
        if not self._lo <= value <= self._hi:
            return SoftSensorResult(NAN, self.bias, raw,
                                    f"prediction {value:.4g} outside valid range [{self._lo:g}, {self._hi:g}]")
        return SoftSensorResult(value, self.bias, raw, "ok")

    def update(self, t_s: float, inputs: Mapping[str, ValidatedInput], applied: Mapping[str, float]
               ) -> tuple[dict[str, tuple[float, float, float | None]] | None, dict[str, float]]:
        """:meth:`step` in the shape :class:`estimators.composite.CompositeEstimator` takes.

        Returns (filter measurements, extras). The measurements are
        ``{target: (value, measurement_std, None)}`` when ``use_in_filter`` is
        set, the value is healthy and ``filter_interval_s`` has passed since
        the last one, else ``None``; extras are
        ``<target>_soft`` (value), ``<target>_soft_raw`` and ``<target>_soft_bias``.
        """
        r = self.step(t_s, inputs, applied)
        tgt = self.cfg.target
        extras = {f"{tgt}_soft": r.value, f"{tgt}_soft_raw": r.raw, f"{tgt}_soft_bias": r.bias}
        meas: dict[str, tuple[float, float, float | None]] | None = None
        due = self._t_fused is None or t_s - self._t_fused >= self.cfg.filter_interval_s
        if self.cfg.use_in_filter and r.healthy and due:
            meas = {tgt: (r.value, self.cfg.measurement_std, None)}
            self._t_fused = t_s
        return meas, extras


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several types for unreadable models
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SoftSensorError(f"{path}: not a valid ONNX model ({first})") from None


def load_soft_sensor(cfg: SoftSensorSection, recipe_dir: Path, *,
                     bindings: FeatureBindings | None = None) -> SoftSensor:
    """Load ``cfg.model_file`` (relative to ``recipe_dir``) and check it against ``cfg``.

    Raises :class:`SoftSensorError` for a missing file, a file that is not
    ONNX, a wrong input name, type or width, a wrong output name or shape, or
    (when the model carries ``apc.features`` / ``apc.target`` metadata) a
    feature list or target other than the recipe's. Unknown feature names
    raise ``ValueError`` from :mod:`estimators.features`.
    """
    path = Path(recipe_dir) / cfg.model_file
    n = len(cfg.features)
    if not path.is_file():
        raise SoftSensorError(f"{path}: soft sensor model file not found")
    sess = _session(path)
    inputs = sess.get_inputs()
    names = [i.name for i in inputs]
    if cfg.input_name not in names:
        raise SoftSensorError(f"{path}: expected an input named {cfg.input_name!r}; the model has {names}")
    if len(inputs) != 1:
        raise SoftSensorError(f"{path}: expected exactly one input {cfg.input_name!r}; the model has {names}")
    inp = inputs[0]
    if inp.type not in _FLOAT_TYPES:
        raise SoftSensorError(f"{path}: input {inp.name!r} must be float32 or float64, found {inp.type}")
    dims = _dims(inp.shape)
    if len(dims) != 2 or dims[0] not in (1, None) or dims[1] not in (n, None):
        raise SoftSensorError(
            f"{path}: input {inp.name!r} must have shape [1 or N, {n}] for the {n} features "
            f"{list(cfg.features)}; found {list(inp.shape)}")
    outputs = sess.get_outputs()
    out_names = [o.name for o in outputs]
    if cfg.output_name not in out_names:
        raise SoftSensorError(f"{path}: expected an output named {cfg.output_name!r}; the model has {out_names}")
    out = outputs[out_names.index(cfg.output_name)]
    odims = _dims(out.shape)
    if out.type not in _FLOAT_TYPES or len(odims) > 2 or any(d not in (1, None) for d in odims[1:]) \
            or (odims and odims[0] not in (1, None)):
        raise SoftSensorError(f"{path}: output {out.name!r} must be a float tensor of shape [1, 1] "
                              f"(or [N, 1]); found {out.type} {list(out.shape or [])}")
    meta = sess.get_modelmeta().custom_metadata_map
    if METADATA_FEATURES in meta:
        trained = tuple(s.strip() for s in meta[METADATA_FEATURES].split(",") if s.strip())
        if trained != tuple(cfg.features):
            raise SoftSensorError(f"{path}: the model was trained on features {list(trained)}; "
                                  f"the recipe lists {list(cfg.features)}")
    if METADATA_TARGET in meta and meta[METADATA_TARGET] != cfg.target:
        raise SoftSensorError(f"{path}: the model predicts {meta[METADATA_TARGET]!r}; the recipe says {cfg.target!r}")
    # A trial run catches what the declared shapes cannot (dynamic widths, inner shape errors).
    try:
        y = sess.run([cfg.output_name], {cfg.input_name: np.zeros((1, n), dtype=_FLOAT_TYPES[inp.type])})[0]
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SoftSensorError(f"{path}: trial inference with {n} features failed ({first})") from None
    if np.asarray(y).size != 1:
        raise SoftSensorError(f"{path}: output {cfg.output_name!r} must hold one value per row; "
                              f"found shape {list(np.asarray(y).shape)}")
    return SoftSensor(cfg, sess, path, bindings=bindings)
