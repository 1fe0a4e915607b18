"""Open-loop power step tests on the furnace models, FOPDT fits and SIMC PID tunings.

What a commissioning engineer does on the real furnace (docs/furnace_models.md §3), done on
the models with their nominal parameters: bring the furnace to a steady operating point, step
the power, record the temperature the PID controls, fit a first-order-plus-dead-time model

    y(t) = y0 + K·ΔP·(1 − exp(−(t − θ)/τ))   for t > θ, else y0

by least squares (``scipy.optimize.least_squares``; the step response is taken relative to the
unstepped run, so a residual drift of the operating point does not bias it) and compute the PI
tuning by Skogestad's SIMC rules

    Kc = τ / (K·(τc + θ_eff)),   τI = min(τ, 4·(τc + θ_eff)),   θ_eff = θ + period/2

(half the PID's sampling period added to the fitted delay: the zero-order hold of a sampled loop).

Tests and choices:

* VIM, solid charge held at 600 °C (ramp phase) and molten charge held at 1100 °C (soak),
  +10 kW step, immersion thermocouple ``tc_temp_degC``, PID period 5 s. The response has a fast
  charge mode and a slow crucible/wall mode (≈25 min); the fit window is 10 min, the scale the
  loop acts on (over an hour the fit lumps the wall into τ and returns θ = 0). τc = 3·θ_eff
  (smoother than SIMC's tight τc = θ, since the fit ignores the slow mode); the recipe takes
  the lower-gain phase.
* Annealer at 360 °C, full gas flow, +50 kW heater step, PID period 60 s: the gas thermocouple
  ``gas_temp_degC`` (the plant's controlled furnace temperature; 1 h window, the gas mode) and,
  for reference, the load thermocouple (4 h window). The gas thermocouple has no lag, θ ≈ 0, so
  τc = max(θ_eff, 10 min): the curve's time scale is hours and a faster loop would only make the
  800 kW heater chase thermocouple noise.

    python bench/furnace_step_test.py > bench/results_furnace_step_test.txt
"""

from __future__ import annotations

from dataclasses import dataclass

import casadi as ca
import numpy as np
from scipy.optimize import fsolve, least_squares

from sim.models import get_model
from sim.models.base import ProcessModel

VIM_D = (25.0, 1.0e-3)  # cooling water degC, leak Pa·m3/s
ANN_D = (25.0,)  # ambient degC
VIM_PERIOD_S = 5.0
ANN_PERIOD_S = 60.0
VIM_WINDOW_S = 600.0
"""The VIM loop acts within minutes (25 K/min ramps); a 10 min window fits that scale, the slow
wall mode (≈25 min) would otherwise be lumped into a long τ with θ = 0."""
ANN_WINDOWS_S = {"gas_temp_degC": 3600.0, "load_tc_temp_degC": 4 * 3600.0}
ANN_TAU_C_MIN_S = 600.0
"""Annealer: curve time scale hours, gas thermocouple without lag; τc at least 10 min keeps the
800 kW heater from chasing thermocouple noise."""


@dataclass(frozen=True)
class Fopdt:
    """A fitted first-order-plus-dead-time model."""

    gain: float
    """K, output units per MV unit (K/kW)."""
    tau_s: float
    dead_time_s: float
    rms: float
    """RMS residual of the fit, output units."""


@dataclass(frozen=True)
class Simc:
    """SIMC PI tuning for one closed-loop time constant."""

    tau_c_s: float
    kp: float
    ti_s: float


def simulate(model: ProcessModel, x0: np.ndarray, u: np.ndarray, d: tuple[float, ...], dt_s: float,
             n: int) -> np.ndarray:
    """States (n+1 × nx) under constant inputs, RK4 with steps of ``dt_s``."""
    F = model.rk4_step(dt_s)
    x = ca.SX.sym("x", len(model.states))
    step = ca.Function("step", [x], [F(x, ca.DM(u), ca.DM(d), ca.DM(model.parameter_vector()))])
    X = np.asarray(step.mapaccum("run", n)(x0))
    return np.vstack([x0, X.T])


def vim_steady(temp_degC: float) -> tuple[np.ndarray, float]:
    """VIM state and power holding the charge at ``temp_degC`` (evaporated mass 0)."""
    m = get_model("vim_furnace")
    p = m.parameter_vector()
    i_t = m.aux_names.index("charge_temp_degC")

    def eqs(z: np.ndarray) -> np.ndarray:
        x = np.concatenate([z[:4], [0.0]])
        u = [z[4]]
        dx = np.asarray(m.f(x, u, VIM_D, p)).ravel()[:4]
        temp = float(np.asarray(m.aux(x, u, VIM_D, p)).ravel()[i_t])
        return np.array([dx[0] * 100.0, dx[1] * 100.0, dx[2], dx[3] * 10.0, temp - temp_degC])

    P = dict(zip(m.parameter_names, p))
    m_kg, t_m = P["charge_mass_kg"], P["melting_point_degC"]
    if temp_degC < t_m:
        h0 = m_kg * P["solid_cp_kJ_kgK"] * (temp_degC - 25.0) / 1000.0
    else:
        h0 = m_kg * (P["solid_cp_kJ_kgK"] * (t_m - 25.0) + P["latent_heat_kJ_kg"]
                     + P["liquid_cp_kJ_kgK"] * (temp_degC - t_m)) / 1000.0
    z = fsolve(eqs, [h0, temp_degC - 200.0, temp_degC, 0.3, 40.0], xtol=1e-12)
    return np.concatenate([z[:4], [0.0]]), float(z[4])


def ann_steady(temp_degC: float) -> tuple[np.ndarray, float]:
    """Annealer state (all nodes at ``temp_degC``) and the heater power holding it, full flow."""
    m = get_model("annealing_furnace")
    p = m.parameter_vector()
    x = np.full(len(m.states), temp_degC)
    loss = float(np.asarray(m.aux(x, [0.0, 1.0], ANN_D, p)).ravel()[m.aux_names.index("heat_loss_kW")])
    return x, loss


def fit_fopdt(t_s: np.ndarray, y: np.ndarray, du: float) -> Fopdt:
    """Least-squares FOPDT fit of a step response (``y`` relative to its start)."""
    dy = y - y[0]

    def model(z: np.ndarray) -> np.ndarray:
        k, tau, theta = z
        return np.where(t_s > theta, k * du * (1.0 - np.exp(-(t_s - theta) / tau)), 0.0)

    k0 = dy[-1] / du
    tau0 = float(t_s[np.argmax(dy >= 0.63 * dy[-1])])
    res = least_squares(lambda z: model(z) - dy, [k0, max(tau0, 1.0), 0.05 * tau0],
                        bounds=([0.0, 1.0, 0.0], [np.inf, np.inf, t_s[-1]]), x_scale="jac")
    k, tau, theta = (float(v) for v in res.x)
    return Fopdt(k, tau, theta, float(np.sqrt(np.mean(res.fun**2))))


def simc(f: Fopdt, tau_c_s: float) -> Simc:
    """SIMC PI: Kc = τ/(K(τc + θ)), τI = min(τ, 4(τc + θ))."""
    return Simc(tau_c_s, f.tau_s / (f.gain * (tau_c_s + f.dead_time_s)),
                min(f.tau_s, 4.0 * (tau_c_s + f.dead_time_s)))


def report(title: str, f: Fopdt, window_s: float, unit: str, period_s: float, tau_c_s: float,
           why: str) -> Simc:
    """Print one fit, its tight SIMC tuning (τc = θ_eff) and the chosen one; return the chosen."""
    theta = f.dead_time_s + 0.5 * period_s
    eff = Fopdt(f.gain, f.tau_s, theta, f.rms)
    print(title)
    print(f"  fit window {window_s / 60:.0f} min: K = {f.gain:.3f} K/{unit}, tau = {f.tau_s:.0f} s, "
          f"theta = {f.dead_time_s:.1f} s, RMS residual {f.rms:.2f} K")
    print(f"  theta_eff = theta + period/2 = {theta:.1f} s (PID period {period_s:g} s)")
    tight = simc(eff, theta)
    print(f"  SIMC tight (tau_c = theta_eff = {theta:.0f} s): kp = {tight.kp:.2f} {unit}/K, ti_s = {tight.ti_s:.0f}")
    chosen = simc(eff, tau_c_s)
    print(f"  SIMC chosen (tau_c = {tau_c_s:.0f} s, {why}): kp = {chosen.kp:.2f} {unit}/K, ti_s = {chosen.ti_s:.0f}")
    return chosen


def step_test(model: ProcessModel, x0: np.ndarray, u0: np.ndarray, du: np.ndarray, d: tuple[float, ...],
              dt_s: float, window_s: float, output: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Response of ``output`` (a state) to the step ``du`` at t = 0 from the steady ``x0``."""
    n = round(window_s / dt_s)
    X = simulate(model, x0, u0 + du, d, dt_s, n)
    t = np.arange(n + 1) * dt_s
    y = X[:, model.state_names.index(output)]
    drift = simulate(model, x0, u0, d, dt_s, n)[:, model.state_names.index(output)]
    return t, y - (drift - drift[0]), float(du[np.flatnonzero(du)[0]])


def main() -> None:
    """Run the step tests and print fits and tunings to paste into the recipes."""
    vim, ann = get_model("vim_furnace"), get_model("annealing_furnace")
    print("Furnace step tests on the nominal models (python bench/furnace_step_test.py)")
    print("FOPDT least-squares fit y = y0 + K dP (1 - exp(-(t - theta)/tau)); "
          "sampled loop: theta_eff = theta + period/2")
    print("SIMC PI: kp = tau / (K (tau_c + theta_eff)), ti = min(tau, 4 (tau_c + theta_eff))")
    print()
    chosen = {}
    for temp in (600.0, 1100.0):
        x0, p0 = vim_steady(temp)
        t, y, du = step_test(vim, x0, np.array([p0]), np.array([10.0]), VIM_D, 1.0, VIM_WINDOW_S, "tc_temp_degC")
        f = fit_fopdt(t, y, du)
        phase = "solid" if temp < 1000 else "molten"
        chosen[phase] = report(f"VIM, {phase} charge at {temp:.0f} degC (holding {p0:.1f} kW), +{du:.0f} kW step, "
                               f"thermocouple tc_temp_degC", f, VIM_WINDOW_S, "kW", VIM_PERIOD_S,
                               3.0 * (f.dead_time_s + 0.5 * VIM_PERIOD_S), "3 theta_eff: lumped slow modes")
        print()
    x0, p0 = ann_steady(360.0)
    for output, window in ANN_WINDOWS_S.items():
        t, y, du = step_test(ann, x0, np.array([p0, 1.0]), np.array([50.0, 0.0]), ANN_D, 10.0, window, output)
        f = fit_fopdt(t, y, du)
        theta = f.dead_time_s + 0.5 * ANN_PERIOD_S
        chosen[output] = report(f"Annealer at 360 degC (holding {p0:.1f} kW, full gas flow), +{du:.0f} kW heater "
                                f"step, {output}", f, window, "kW", ANN_PERIOD_S,
                                max(theta, ANN_TAU_C_MIN_S), "max(theta_eff, 10 min)")
        print()
    v = min((chosen["solid"], chosen["molten"]), key=lambda s: s.kp)
    g = chosen["gas_temp_degC"]
    print("Paste into the recipes (controller.pid):")
    print(f"  VIM (thermocouple, the lower-gain of the two phases): kp: {v.kp:.2f}, ti_s: {v.ti_s:.0f}, td_s: 0.0")
    print(f"  annealer (gas thermocouple): kp: {g.kp:.2f}, ti_s: {g.ti_s:.0f}, td_s: 0.0")


if __name__ == "__main__":
    main()
