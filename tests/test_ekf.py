"""Generic model EKF (estimators.ekf): exactness on a linear model, delayed samples, robustness."""

from __future__ import annotations

import math

import casadi as ca
import numpy as np
import pytest
from filterpy.kalman import KalmanFilter

from estimators.ekf import ModelEkf
from sim.models.base import Parameter, ProcessModel, Signal

Q_STD = {"x1": 0.3, "x2": 0.2}
R_Y = 0.05**2


@pytest.fixture(scope="module")
def linear_model() -> ProcessModel:
    """dx1/dt = -a x1 + b x2 + c u,  dx2/dt = -k x2 + w;  y = x1 (also aux ``y_sum`` = x1 + x2)."""
    x, u, d, p = ca.SX.sym("x", 2), ca.SX.sym("u", 1), ca.SX.sym("d", 1), ca.SX.sym("p", 4)
    a, b, c, k = p[0], p[1], p[2], p[3]
    xdot = ca.vertcat(-a * x[0] + b * x[1] + c * u[0], -k * x[1] + d[0])
    args, names = [x, u, d, p], ["x", "u", "d", "p"]
    return ProcessModel(
        name="linear2",
        states=(Signal("x1", "1", ""), Signal("x2", "1", "")),
        inputs=(Signal("u", "1", ""),),
        disturbances=(Signal("w", "1", ""),),
        parameters=tuple(Parameter(n, "1/s", v, "", "test") for n, v in
                         (("a", 0.01), ("b", 0.004), ("c", 0.02), ("k", 0.002))),
        outputs=(Signal("y", "1", ""),),
        aux_signals=(Signal("y_sum", "1", ""),),
        f=ca.Function("f", args, [xdot], names, ["xdot"]),
        h=ca.Function("h", args, [x[0]], names, ["y"]),
        aux=ca.Function("aux", args, [x[0] + x[1]], names, ["aux"]),
    )


def make_ekf(model: ProcessModel, **kw: object) -> ModelEkf:
    """ModelEkf on the linear model, x0 = (1, -1), P0 = diag(0.5², 0.4²)."""
    args: dict[str, object] = {"gate_sigma": math.inf}
    args.update(kw)
    return ModelEkf(model, model.parameter_vector(), {"x1": 1.0, "x2": -1.0}, {"x1": 0.5, "x2": 0.4},
                    Q_STD, **args)  # type: ignore[arg-type]


def discrete_matrices(model: ProcessModel, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """F = ∂x⁺/∂x and B = ∂x⁺/∂[u; w] of the model's RK4 map over ``dt`` (exact for a linear model)."""
    step = model.rk4_step(dt)
    x, v = ca.SX.sym("x", 2), ca.SX.sym("v", 2)
    xn = step(x, v[0], v[1], model.parameter_vector())
    jac = ca.Function("rk4_jacobians", [x, v], [ca.jacobian(xn, x), ca.jacobian(xn, v)])
    F, B = jac(np.zeros(2), np.zeros(2))
    return np.asarray(F), np.asarray(B)


def test_matches_linear_kalman_filter(linear_model: ProcessModel) -> None:
    """On a linear model ModelEkf equals filterpy's KalmanFilter with the RK4 map's F over 500 varying steps."""
    rng = np.random.default_rng(1)
    ekf = make_ekf(linear_model)
    kf = KalmanFilter(dim_x=2, dim_z=1, dim_u=2)
    kf.x = np.array([[1.0], [-1.0]])
    kf.P = np.diag([0.5**2, 0.4**2])
    kf.H = np.array([[1.0, 0.0]])
    mats = {dt: discrete_matrices(linear_model, dt) for dt in (5.0, 7.5)}
    for k in range(500):
        dt = 7.5 if k % 7 == 3 else 5.0
        u, w = math.sin(k / 40.0), 0.01 * rng.standard_normal()
        F, B = mats[dt]
        Q = np.diag([Q_STD["x1"] ** 2, Q_STD["x2"] ** 2]) * dt / 3600.0
        kf.predict(u=np.array([[u], [w]]), B=B, F=F, Q=Q)
        ekf.predict(dt, np.array([u]), np.array([w]))
        if k % 5 != 4:  # some cycles without a measurement
            z = float(kf.x[0, 0]) + 0.05 * rng.standard_normal()
            kf.update(z, R=R_Y)
            assert ekf.update("y", z, R_Y).accepted
        np.testing.assert_allclose(ekf.x, kf.x.ravel(), rtol=0, atol=1e-9)
        np.testing.assert_allclose(ekf.P, kf.P, rtol=0, atol=1e-9)


def test_delayed_sample_equals_fusion_at_sample_time(linear_model: ProcessModel) -> None:
    """A sample fused late by re-filtering gives the same x and P as fusing it at its sample time."""
    rng = np.random.default_rng(2)
    on_time, late = make_ekf(linear_model), make_ekf(linear_model)
    zs = [0.9 + 0.05 * rng.standard_normal() for _ in range(300)]
    t_sample, z_lab = None, 0.123
    for k in range(300):
        for f in (on_time, late):
            f.predict(5.0, np.array([0.5]), np.array([0.0]))
            f.update("y", zs[k], R_Y)
        if k == 100:
            t_sample = on_time.t_s
            on_time.update("x2", z_lab, 0.01)
        if k == 250:
            res = late.update("x2", z_lab, 0.01, t_sample_s=t_sample)
            assert res.accepted and res.delayed
    np.testing.assert_allclose(late.x, on_time.x, rtol=0, atol=1e-9)
    np.testing.assert_allclose(late.P, on_time.P, rtol=0, atol=1e-9)
    x_at, _ = late.state_at(t_sample)  # type: ignore[misc]
    x_ref, _ = on_time.state_at(t_sample)  # type: ignore[misc]
    np.testing.assert_allclose(x_at, x_ref, rtol=0, atol=1e-9)


def test_sample_older_than_history_is_rejected(linear_model: ProcessModel) -> None:
    """A sample taken before the buffered history is rejected with a reason and changes nothing."""
    ekf = make_ekf(linear_model, history_h=0.05)  # 180 s
    for _ in range(100):
        ekf.predict(5.0, np.array([0.0]), np.array([0.0]))
    x = ekf.x
    res = ekf.update("x2", 0.0, 0.01, t_sample_s=ekf.t_s - 400.0)
    assert not res.accepted and "history" in res.reason
    assert [e.kind for e in ekf.events] == ["rejected_too_old"]
    np.testing.assert_array_equal(ekf.x, x)


def test_outlier_is_gated_and_recorded(linear_model: ProcessModel) -> None:
    """An innovation beyond gate_sigma is rejected, logged with value and sigma, and leaves x unchanged."""
    ekf = make_ekf(linear_model, gate_sigma=4.0)
    ekf.predict(5.0, np.array([0.0]), np.array([0.0]))
    x = ekf.x
    res = ekf.update("y", 50.0, R_Y)
    assert not res.accepted and res.sigma > 4.0
    ev = ekf.events[-1]
    assert ev.kind == "rejected_outlier" and ev.value == 50.0 and ev.sigma == pytest.approx(res.sigma)
    np.testing.assert_array_equal(ekf.x, x)
    assert ekf.update("y", float(ekf.x[0]) + 0.01, R_Y).accepted


def test_non_finite_inputs_are_held_and_measurements_skipped(linear_model: ProcessModel) -> None:
    """NaN inputs are replaced by the last valid ones (reported); NaN measurements are not fused."""
    ekf = make_ekf(linear_model)
    ekf.predict(5.0, np.array([0.7]), np.array([0.01]))
    ekf.predict(5.0, np.array([math.nan]), np.array([math.inf]))
    assert np.all(np.isfinite(ekf.x))
    np.testing.assert_array_equal(ekf.u_last, [0.7])
    np.testing.assert_array_equal(ekf.d_last, [0.01])
    assert [e.kind for e in ekf.events] == ["input_held", "input_held"]
    x = ekf.x
    assert not ekf.update("y", math.nan, R_Y).accepted
    assert not ekf.update("y", 1.0, math.nan).accepted
    np.testing.assert_array_equal(ekf.x, x)


def test_bad_dt_does_not_predict(linear_model: ProcessModel) -> None:
    """A non-positive or NaN dt leaves time and state unchanged and is reported."""
    ekf = make_ekf(linear_model)
    for dt in (0.0, -5.0, math.nan):
        ekf.predict(dt, np.array([1.0]), np.array([0.0]))
    assert ekf.t_s == 0.0 and [e.kind for e in ekf.events] == ["bad_dt"] * 3


def test_long_dt_is_split_into_steps(linear_model: ProcessModel) -> None:
    """One predict over 60 s equals six predicts over 10 s (RK4 steps are capped at max_step_s)."""
    one, six = make_ekf(linear_model), make_ekf(linear_model)
    one.predict(60.0, np.array([1.0]), np.array([0.0]))
    for _ in range(6):
        six.predict(10.0, np.array([1.0]), np.array([0.0]))
    np.testing.assert_allclose(one.x, six.x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(one.P, six.P, rtol=0, atol=1e-12)


def test_covariance_that_is_not_positive_definite_is_repaired(linear_model: ProcessModel) -> None:
    """A singular P (zero initial std and zero process noise) is inflated until Cholesky succeeds, and logged."""
    ekf = ModelEkf(linear_model, linear_model.parameter_vector(), {"x1": 1.0, "x2": 0.0}, {}, {})
    ekf.predict(5.0, np.array([0.0]), np.array([0.0]))
    assert ekf.repaired and ekf.events[-1].kind == "covariance_repaired"
    np.linalg.cholesky(ekf.P)
    np.testing.assert_array_equal(ekf.P, ekf.P.T)


def test_outputs_give_value_and_std_of_aux_signals(linear_model: ProcessModel) -> None:
    """outputs() returns h(x) and sqrt(H P H') for outputs, aux signals and states."""
    ekf = make_ekf(linear_model)
    y, sd = ekf.outputs(("y", "y_sum", "x2"))
    np.testing.assert_allclose(y, [1.0, 0.0, -1.0])
    np.testing.assert_allclose(sd, [0.5, math.hypot(0.5, 0.4), 0.4])
    with pytest.raises(KeyError):
        ekf.outputs(("nope",))


@pytest.fixture(scope="module")
def nonlinear_model() -> ProcessModel:
    """dx1/dt = -a x1 + b x2² + c u,  dx2/dt = -k x2 + w;  y = x1 + 0.5 sin(x2) (a curved map and measurement)."""
    x, u, d, p = ca.SX.sym("x", 2), ca.SX.sym("u", 1), ca.SX.sym("d", 1), ca.SX.sym("p", 4)
    a, b, c, k = p[0], p[1], p[2], p[3]
    xdot = ca.vertcat(-a * x[0] + b * x[1] ** 2 + c * u[0], -k * x[1] + d[0])
    args, names = [x, u, d, p], ["x", "u", "d", "p"]
    return ProcessModel(
        name="curved2",
        states=(Signal("x1", "1", ""), Signal("x2", "1", "")),
        inputs=(Signal("u", "1", ""),),
        disturbances=(Signal("w", "1", ""),),
        parameters=tuple(Parameter(n, "1/s", v, "", "test") for n, v in
                         (("a", 0.01), ("b", 0.004), ("c", 0.02), ("k", 0.002))),
        outputs=(Signal("y", "1", ""),),
        aux_signals=(Signal("y_sum", "1", ""),),
        f=ca.Function("f", args, [xdot], names, ["xdot"]),
        h=ca.Function("h", args, [x[0] + 0.5 * ca.sin(x[1])], names, ["y"]),
        aux=ca.Function("aux", args, [x[0] + x[1]], names, ["aux"]),
    )


def test_delayed_sample_on_a_nonlinear_model_matches_fusion_at_sample_time_to_first_order(
        nonlinear_model: ProcessModel) -> None:
    """On a curved model the linearised re-filter of an hour of cycles lands within 2 % of a standard deviation of fusing the sample on time, and the sample's correction itself is kept."""
    rng = np.random.default_rng(3)

    def slow() -> ModelEkf:  # x2 drifts slowly and y sees it only through the curve: a lab-like state
        return ModelEkf(nonlinear_model, nonlinear_model.parameter_vector({"k": 1e-5}), {"x1": 1.0, "x2": -1.0},
                        {"x1": 0.5, "x2": 0.4}, {"x1": 0.3, "x2": 0.01}, gate_sigma=math.inf)

    on_time, late, never = slow(), slow(), slow()
    zs = [1.2 + 0.05 * rng.standard_normal() for _ in range(921)]
    t_sample, z_lab = None, -0.4
    for k in range(921):
        for f in (on_time, late, never):
            f.predict(5.0, np.array([0.5]), np.array([0.0]))
            f.update("y", zs[k], R_Y)
        if k == 200:
            t_sample = on_time.t_s
            on_time.update("x2", z_lab, 0.01)
    # an hour of 5 s cycles later the lab result comes back
    assert late.update("x2", z_lab, 0.01, t_sample_s=t_sample).accepted
    sigma = np.sqrt(np.diag(on_time.P))
    assert np.all(np.abs(late.x - on_time.x) <= 0.02 * sigma), (late.x, on_time.x, sigma)
    assert np.all(np.abs(np.sqrt(np.diag(late.P)) - sigma) <= 0.02 * sigma)
    assert np.max(np.abs(never.x - on_time.x) / sigma) > 0.5  # the sample mattered: not a vacuous comparison
