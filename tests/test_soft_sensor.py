"""Tests of the ONNX soft sensor: load-time checks, the shipped model and the delayed bias update."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from apc.kinds.electrolysis_cell.recipe import SoftSensorSection
from apc.recipe.loader import convert
from apc.types import Quality, Sample, ValidatedInput, Verdict
from estimators.soft_sensor import SoftSensor, SoftSensorError, load_soft_sensor

ROOT = Path(__file__).resolve().parents[1]
RECIPE_DIR = ROOT / "recipes"
UTC0 = 1_767_225_600.0
PERIOD = 5.0
OFFSET_K = 15.0  # truth − model, constant


# ---------------------------------------------------------------- helpers
def write_model(path: Path, *, input_name: str = "features", width: int = 1, output_name: str = "y",
                out_width: int = 1, weight: float = 100.0, intercept: float = 200.0, double: bool = True,
                meta: dict[str, str] | None = None) -> Path:
    """A linear ONNX model y = x·w + c (every weight ``weight``) built with onnx.helper."""
    pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    dt = np.float64 if double else np.float32
    et = TensorProto.DOUBLE if double else TensorProto.FLOAT
    w = numpy_helper.from_array(np.full((width, out_width), weight, dtype=dt), "w")
    c = numpy_helper.from_array(np.full((1, out_width), intercept, dtype=dt), "c")
    graph = helper.make_graph(
        [helper.make_node("MatMul", [input_name, "w"], ["z"]), helper.make_node("Add", ["z", "c"], [output_name])],
        "test_model",
        [helper.make_tensor_value_info(input_name, et, ["N", width])],
        [helper.make_tensor_value_info(output_name, et, ["N", out_width])],
        [w, c],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if meta:
        helper.set_model_props(model, meta)
    path.write_bytes(model.SerializeToString())
    return path


def section(**kw: Any) -> SoftSensorSection:
    base: dict[str, Any] = {"model_file": "model.onnx", "features": ("voltage_V",), "input_name": "features",
                                "output_name": "y", "target": "bath_temp_degC", "unit": "degC", "sample_input": "bath_temp_dip",
                                "bias_gain": 0.3, "max_sample_age_s": 7200.0, "valid_range": (900.0, 1200.0),
                                "first_sample_sets_bias": False}
    base.update(kw)
    return SoftSensorSection(**base)


def voltage(value: float, t: float) -> ValidatedInput:
    return ValidatedInput("cell_voltage", Sample(value, Quality.GOOD, UTC0 + t, UTC0 + t), Verdict.OK)


def dip(value: float, t_sample: float, t_now: float, verdict: Verdict = Verdict.OK) -> ValidatedInput:
    """A dip taken at monotonic t_sample, received now (UTC = UTC0 + monotonic)."""
    return ValidatedInput("bath_temp_dip", Sample(value, Quality.GOOD, UTC0 + t_now, UTC0 + t_now, UTC0 + t_sample),
                          verdict)


def model_f(u: float) -> float:
    return 100.0 * u + 200.0


def run(ss: SoftSensor, t0: float, t1: float, u: Any, dips: dict[float, ValidatedInput] | None = None,
        bad_voltage: tuple[float, float] | None = None) -> Any:
    """Cycle the soft sensor every PERIOD s over [t0, t1]; ``dips`` maps arrival time → dip input."""
    r = None
    k0, k1 = round(t0 / PERIOD), round(t1 / PERIOD)
    for k in range(k0, k1 + 1):
        t = k * PERIOD
        inp = voltage(u(t), t)
        if bad_voltage and bad_voltage[0] <= t <= bad_voltage[1]:
            inp = ValidatedInput("cell_voltage", Sample(u(t), Quality.BAD, UTC0 + t, UTC0 + t), Verdict.BAD_QUALITY)
        inputs = {"cell_voltage": inp}
        if dips and t in dips:
            inputs["bath_temp_dip"] = dips[t]
        r = ss.step(t, inputs, {})
    return r


@pytest.fixture
def sensor(tmp_path: Path) -> SoftSensor:
    write_model(tmp_path / "model.onnx")
    return load_soft_sensor(section(), tmp_path)


# ---------------------------------------------------------------- load-time checks
@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("missing", ["model.onnx", "not found"]),
        ("not_onnx", ["model.onnx", "not a valid ONNX model"]),
        ("input_name", ["expected an input named 'features'", "['x']"]),
        ("width", ["[1 or N, 2]", "found ['N', 3]"]),
        ("output_name", ["expected an output named 'y'", "['bath_temp']"]),
        ("output_width", ["output 'y'", "[1, 1]", "['N', 2]"]),
        ("metadata", ["trained on features ['current_kA', 'voltage_V']", "recipe lists ['voltage_V', 'current_kA']"]),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_wrong_model_is_refused_with_a_clear_error(tmp_path: Path, case: str, expect: list[str]) -> None:
    """Missing, non-ONNX, wrong input name/width, wrong output or wrong feature list: SoftSensorError naming both sides."""
    path = tmp_path / "model.onnx"
    cfg = section(features=("voltage_V", "current_kA"))
    if case == "not_onnx":
        path.write_bytes(b"this is not a protobuf \x00\x01\x02 at all")
    elif case == "input_name":
        write_model(path, input_name="x", width=2)
    elif case == "width":
        write_model(path, width=3)
    elif case == "output_name":
        write_model(path, width=2, output_name="bath_temp")
    elif case == "output_width":
        write_model(path, width=2, out_width=2)
    elif case == "metadata":
        write_model(path, width=2, meta={"apc.features": "current_kA,voltage_V"})
    with pytest.raises(SoftSensorError) as exc:
        load_soft_sensor(cfg, tmp_path)
    msg = str(exc.value)
    assert str(path) in msg
    for part in expect:
        assert part in msg


def test_float32_model_with_fixed_batch_is_accepted(tmp_path: Path) -> None:
    """A float32 model is accepted and fed float32; its prediction matches f(x) to float32 precision."""
    write_model(tmp_path / "model.onnx", double=False)
    ss = load_soft_sensor(section(), tmp_path)
    assert ss.raw({"voltage_V": 8.5}) == pytest.approx(model_f(8.5), rel=1e-6)


def test_unknown_feature_in_config_is_refused(tmp_path: Path) -> None:
    """A feature name the builder does not know raises ValueError listing the known ones."""
    write_model(tmp_path / "model.onnx", width=1)
    with pytest.raises(ValueError, match="known features"):
        load_soft_sensor(section(features=("bath_colour",)), tmp_path)


# ---------------------------------------------------------------- shipped model
def shipped_section() -> SoftSensorSection:
    """The block the training script prints, converted as the recipe loader would."""
    from estimators.training.train_soft_sensor import DEFAULT_FEATURES, yaml_block

    node = yaml.compose(yaml_block(DEFAULT_FEATURES, "models/nd_cell_bath_temp.onnx"))
    soft = next(v for k, v in next(v for k, v in node.value if k.value == "estimator").value
                if k.value == "soft_sensor")
    return convert(SoftSensorSection, soft, "estimator.soft_sensor")


def test_shipped_model_loads_and_predicts_a_plausible_value() -> None:
    """The shipped model loads with the recipe block and predicts 1000–1100 °C for typical features, fast."""
    cfg = shipped_section()
    assert (RECIPE_DIR / cfg.model_file).stat().st_size < 16_000  # kilobytes, not megabytes
    ss = load_soft_sensor(cfg, RECIPE_DIR)
    typical = {"voltage_V": 8.83, "current_kA": 6.0, "dVdt_V_h": 0.0, "feed_mean_1h_kg_h": 10.5,
               "anode_moves_2h_cm": 0.05, "pseudo_resistance_uohm": 1205.0, "anode_moves_8h_cm": 0.2}
    assert set(typical) == set(cfg.features)
    y = ss.predict(typical)
    assert math.isfinite(y) and 1000.0 <= y <= 1100.0
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        ss.predict(typical)
        times.append(time.perf_counter() - t0)
    times.sort()
    assert times[len(times) // 2] < 1e-3  # typically ~0.01 ms; loose bound for slow CI machines


# ---------------------------------------------------------------- bias update
def test_accepted_samples_move_the_bias_by_the_gain_toward_the_error(sensor: SoftSensor) -> None:
    """With a constant offset, each accepted sample moves b by gain·(e − b)."""
    u = lambda t: 8.5  # noqa: E731
    truth = model_f(8.5) + OFFSET_K
    run(sensor, 0.0, 3600.0, u, {3600.0: dip(truth, 3000.0, 3600.0)})
    assert sensor.bias == pytest.approx(0.3 * OFFSET_K)
    run(sensor, 3605.0, 7200.0, u, {7200.0: dip(truth, 6600.0, 7200.0)})
    b1 = 0.3 * OFFSET_K
    assert sensor.bias == pytest.approx(b1 + 0.3 * (OFFSET_K - b1))
    ev = sensor.last_events[-1]
    assert ev.accepted and ev.reason == "accepted"
    assert ev.predicted == pytest.approx(model_f(8.5)) and ev.error == pytest.approx(OFFSET_K)
    assert ev.sample_t_s == pytest.approx(6600.0)
    r = run(sensor, 7205.0, 7205.0, u)
    assert r.value == pytest.approx(model_f(8.5) + sensor.bias) and r.health == "ok"


def test_first_sample_sets_the_bias_when_configured(tmp_path: Path) -> None:
    """With first_sample_sets_bias the first accepted sample sets b = e, later ones use the gain."""
    write_model(tmp_path / "model.onnx")
    ss = load_soft_sensor(section(first_sample_sets_bias=True), tmp_path)
    truth = model_f(8.5) + OFFSET_K
    run(ss, 0.0, 3600.0, lambda t: 8.5, {3600.0: dip(truth, 3000.0, 3600.0)})
    assert ss.bias == pytest.approx(OFFSET_K)
    run(ss, 3605.0, 7200.0, lambda t: 8.5, {7200.0: dip(truth + 10.0, 6600.0, 7200.0)})
    assert ss.bias == pytest.approx(OFFSET_K + 0.3 * 10.0)


def test_bias_uses_the_prediction_at_the_sample_time(sensor: SoftSensor) -> None:
    """The error is taken against f(x) recomputed at the sample time, not against the features of now."""
    u = lambda t: 8.0 if t < 4000.0 else 9.0  # noqa: E731  # voltage stepped after the sample was taken
    y = model_f(8.0) + OFFSET_K  # dip taken at 3000 s, reported at 5400 s
    r = run(sensor, 0.0, 5400.0, u, {5400.0: dip(y, 3000.0, 5400.0)})
    ev = sensor.last_events[-1]
    assert ev.accepted
    assert ev.predicted == pytest.approx(model_f(8.0))  # "now" would give model_f(9.0) = 1100
    assert sensor.bias == pytest.approx(0.3 * OFFSET_K)
    assert r.raw == pytest.approx(model_f(9.0))
    assert r.value == pytest.approx(model_f(9.0) + 0.3 * OFFSET_K)


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        (dip(1500.0, 3000.0, 3600.0), "outside valid range"),
        (dip(1015.0, 3600.0 - 7300.0, 3600.0), "7300 s old"),  # limit 7200 s
        (dip(1015.0, -600.0, 3600.0), "no buffered features"),  # before the sensor started
        (dip(math.nan, 3000.0, 3600.0), "not finite"),
        (dip(1015.0, 3000.0, 3600.0, Verdict.OUT_OF_RANGE), "validation verdict out_of_range"),
        (dip(1015.0, 3600.0 + 300.0, 3600.0), "future"),
    ],
    ids=["out_of_range", "too_old", "no_history", "nan", "validator_refused", "future"],
)
def test_unusable_samples_are_rejected_with_a_reason(sensor: SoftSensor, sample: ValidatedInput,
                                                     reason: str) -> None:
    """Out-of-range, too old, no-history, non-finite, refused or future samples leave b unchanged and say why."""
    run(sensor, 0.0, 3600.0, lambda t: 8.5, {3600.0: sample})
    assert sensor.bias == 0.0 and sensor.samples_accepted == 0
    ev = sensor.last_events[-1]
    assert not ev.accepted and reason in ev.reason
    assert ev.bias_before == ev.bias_after == 0.0


def test_nan_features_give_nan_and_leave_the_bias_alone(sensor: SoftSensor) -> None:
    """NaN features: predict() and step() give NaN with a reason; a sample taken then is rejected."""
    assert math.isnan(sensor.predict({"voltage_V": math.nan}))
    assert math.isnan(sensor.predict({}))
    truth = model_f(8.5) + OFFSET_K
    run(sensor, 0.0, 3600.0, lambda t: 8.5, {3600.0: dip(truth, 3000.0, 3600.0)})
    b = sensor.bias
    r = run(sensor, 3605.0, 4000.0, lambda t: 8.5, bad_voltage=(3700.0, 4000.0))
    assert math.isnan(r.value) and math.isnan(r.raw) and "voltage_V" in r.health
    assert r.bias == b
    r = run(sensor, 4005.0, 4200.0, lambda t: 8.5, {4200.0: dip(truth, 3900.0, 4200.0)})
    ev = sensor.last_events[-1]
    assert not ev.accepted and "not computable" in ev.reason and "voltage_V" in ev.reason
    assert sensor.bias == b
    assert r.healthy and r.value == pytest.approx(model_f(8.5) + b)


def test_each_sample_is_used_once(sensor: SoftSensor) -> None:
    """The same sample seen on later cycles (OK again or NO_NEW_SAMPLE) does not update the bias twice."""
    truth = model_f(8.5) + OFFSET_K
    s = dip(truth, 3000.0, 3600.0)
    again = ValidatedInput("bath_temp_dip", s.sample, Verdict.NO_NEW_SAMPLE)
    run(sensor, 0.0, 3610.0, lambda t: 8.5, {3600.0: s, 3605.0: s, 3610.0: again})
    assert sensor.samples_accepted == 1 and len(sensor.last_events) == 1
    assert sensor.bias == pytest.approx(0.3 * OFFSET_K)


def test_prediction_outside_valid_range_is_nan(tmp_path: Path) -> None:
    """A bias-corrected prediction outside valid_range is reported as NaN with a reason."""
    write_model(tmp_path / "model.onnx")
    ss = load_soft_sensor(section(valid_range=(900.0, 1000.0)), tmp_path)
    r = run(ss, 0.0, 10.0, lambda t: 9.0)  # f = 1100
    assert math.isnan(r.value) and r.raw == pytest.approx(1100.0) and "outside valid range" in r.health
    assert math.isnan(ss.predict({"voltage_V": 9.0}))


def test_event_list_is_bounded(sensor: SoftSensor) -> None:
    """Only the most recent bias events are kept."""
    dips = {t: dip(1500.0, t - 60.0, t) for t in range(600, 600 + 80 * 60, 60)}
    run(sensor, 0.0, 600.0 + 80 * 60, lambda t: 8.5, {float(k): v for k, v in dips.items()})
    assert len(sensor.last_events) == 50
    assert sensor.last_events[-1].sample_ts == pytest.approx(UTC0 + 600.0 + 79 * 60 - 60.0)


def test_composite_interface_returns_filter_measurement_and_extras(tmp_path: Path) -> None:
    """update() returns extras always and a filter measurement only when use_in_filter is set."""
    write_model(tmp_path / "model.onnx")
    ss = load_soft_sensor(section(), tmp_path)
    meas, extras = ss.update(0.0, {"cell_voltage": voltage(8.5, 0.0)}, {})
    assert meas is None
    assert extras == {"bath_temp_degC_soft": pytest.approx(1050.0), "bath_temp_degC_soft_raw": pytest.approx(1050.0),
                      "bath_temp_degC_soft_bias": 0.0}
    ss = load_soft_sensor(section(use_in_filter=True, measurement_std=4.0), tmp_path)
    meas, _ = ss.update(0.0, {"cell_voltage": voltage(8.5, 0.0)}, {})
    assert meas == {"bath_temp_degC": (pytest.approx(1050.0), 4.0, None)}


def test_filter_measurement_at_most_once_per_interval(tmp_path: Path) -> None:
    """With use_in_filter the prediction reaches the filter once per filter_interval_s, not every cycle."""
    write_model(tmp_path / "model.onnx")
    ss = load_soft_sensor(section(use_in_filter=True, measurement_std=4.0, filter_interval_s=600.0), tmp_path)
    fused = [t for t in range(0, 1800, 60)
             if ss.update(float(t), {"cell_voltage": voltage(8.5, float(t))}, {})[0] is not None]
    assert fused == [0, 600, 1200]


def test_bad_filter_settings_are_refused() -> None:
    """A non-positive measurement_std or a negative filter_interval_s is refused with the field named."""
    with pytest.raises(ValueError, match="measurement_std"):
        section(measurement_std=0.0)
    with pytest.raises(ValueError, match="filter_interval_s"):
        section(filter_interval_s=-1.0)
