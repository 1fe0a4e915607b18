"""Process model definition shared by simulator, estimators and controllers.

A :class:`ProcessModel` is one CasADi definition with named, unit-carrying
signals. Everything uses the signature ``f(x, u, d, p)``: states, manipulated
inputs, disturbances, parameters (time-invariant models; time in seconds).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import casadi as ca
import numpy as np


@dataclass(frozen=True)
class Signal:
    """A named signal with its unit."""

    name: str
    unit: str
    description: str


@dataclass(frozen=True)
class Parameter:
    """A model parameter with its nominal value and where it comes from."""

    name: str
    unit: str
    nominal: float
    description: str
    source: str


@dataclass(frozen=True)
class ProcessModel:
    """Symbolic process model.

    ``f(x, u, d, p) -> dx/dt`` (per second), ``h(x, u, d, p) -> y`` (measured
    outputs) and ``aux(x, u, d, p) -> a`` (named algebraic quantities such as
    current efficiency or critical current density).
    """

    name: str
    states: tuple[Signal, ...]
    inputs: tuple[Signal, ...]
    disturbances: tuple[Signal, ...]
    parameters: tuple[Parameter, ...]
    outputs: tuple[Signal, ...]
    aux_signals: tuple[Signal, ...]
    f: ca.Function
    h: ca.Function
    aux: ca.Function

    @staticmethod
    def _names(signals: Sequence[Signal | Parameter]) -> tuple[str, ...]:
        return tuple(s.name for s in signals)

    @property
    def state_names(self) -> tuple[str, ...]:
        """State names in vector order."""
        return self._names(self.states)

    @property
    def input_names(self) -> tuple[str, ...]:
        """Manipulated-input names in vector order."""
        return self._names(self.inputs)

    @property
    def disturbance_names(self) -> tuple[str, ...]:
        """Disturbance names in vector order."""
        return self._names(self.disturbances)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Parameter names in vector order."""
        return self._names(self.parameters)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Measured-output names in vector order."""
        return self._names(self.outputs)

    @property
    def aux_names(self) -> tuple[str, ...]:
        """Auxiliary-signal names in vector order."""
        return self._names(self.aux_signals)

    def unit_of(self, name: str) -> str:
        """Unit of any named signal or parameter."""
        for group in (self.states, self.inputs, self.disturbances, self.parameters, self.outputs, self.aux_signals):
            for s in group:
                if s.name == name:
                    return s.unit
        raise KeyError(name)

    def parameter_vector(self, overrides: Mapping[str, float] | None = None) -> np.ndarray:
        """Nominal parameters with ``overrides`` applied; unknown names raise KeyError."""
        p = {q.name: q.nominal for q in self.parameters}
        for key, value in (overrides or {}).items():
            if key not in p:
                raise KeyError(f"unknown parameter {key!r} of model {self.name!r}")
            p[key] = float(value)
        return np.array([p[n] for n in self.parameter_names], dtype=float)

    def vector(self, names: Sequence[str], values: Mapping[str, float]) -> np.ndarray:
        """Pack a name→value mapping into a vector ordered like ``names``."""
        return np.array([float(values[n]) for n in names], dtype=float)

    def rk4_step(self, dt_s: float, substeps: int = 1) -> ca.Function:
        """Discrete map ``F(x, u, d, p) -> x+`` over ``dt_s`` by classical RK4."""
        x = ca.SX.sym("x", len(self.states))
        u = ca.SX.sym("u", len(self.inputs))
        d = ca.SX.sym("d", len(self.disturbances))
        p = ca.SX.sym("p", len(self.parameters))
        xk = rk4(lambda z: self.f(z, u, d, p), x, dt_s / substeps, substeps)[-1]
        return ca.Function(f"{self.name}_rk4", [x, u, d, p], [xk], ["x", "u", "d", "p"], ["x_next"])


SymT = TypeVar("SymT", ca.SX, ca.MX)


def rk4(rhs: Callable[[SymT], SymT], x: SymT, h: SymT | float, substeps: int = 1) -> list[SymT]:
    """Classical RK4 of ``dx/dt = rhs(x)`` in ``substeps`` steps of length ``h``; the state at the
    end of every substep (the last one is the end of the interval). The one integrator of the
    project: models, plants, filters and controllers all step through it."""
    out = []
    xk = x
    for _ in range(substeps):
        k1 = rhs(xk)
        k2 = rhs(xk + h / 2 * k1)
        k3 = rhs(xk + h / 2 * k2)
        k4 = rhs(xk + h * k3)
        xk = xk + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(xk)
    return out


def smooth_pos(x: ca.SX, width: float | ca.SX) -> ca.SX:
    """Smooth max(0, x); exact to within ``width``/2, differentiable everywhere."""
    return 0.5 * (x + ca.sqrt(x * x + width * width))
