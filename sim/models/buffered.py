"""CasADi functions evaluated on preallocated numpy arrays (no DM conversion per call).

Calling a :class:`casadi.Function` on numpy arrays converts every argument
to a ``DM`` and every result back, which costs tens of microseconds per call
for functions that evaluate in under one. :class:`BufferedFunction` binds
fixed numpy arrays to the function's memory buffer (``Function.buffer``) once;
a call copies the arguments in, runs the function and reads the dense
results. The numerics are CasADi's own SX evaluation, so results are
bit-identical to a plain call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import casadi as ca
import numpy as np

__all__ = ["BufferedFunction"]


def _densified(fn: ca.Function) -> ca.Function:
    """``fn`` with every output dense (structural zeros stored), same inputs; MX functions expanded to SX."""
    if all(fn.sparsity_out(i).is_dense() for i in range(fn.n_out())):
        return fn
    sx = fn if fn.is_a("SXFunction") else fn.expand()
    args = sx.sx_in()
    outs: list[ca.SX] = [ca.densify(o) for o in sx.call(args)]
    return ca.Function(fn.name(), args, outs, fn.name_in(), fn.name_out(), {"cse": True})


class BufferedFunction:
    """A CasADi function called on numpy values through its memory buffer.

    Parameters
    ----------
    fn : casadi.Function
        Dense inputs; outputs are densified when sparse.

    Each call returns fresh 2-D arrays shaped like the outputs (a column
    vector is ``(n, 1)``), so results may be kept. One
    instance is one evaluation memory: do not share it between threads.
    """

    def __init__(self, fn: ca.Function) -> None:
        for i in range(fn.n_in()):
            if not fn.sparsity_in(i).is_dense():
                raise ValueError(f"input {fn.name_in(i)!r} of {fn.name()!r} must be dense")
        self.function = _densified(fn)
        f = self.function
        self._args = [np.zeros(f.nnz_in(i)) for i in range(f.n_in())]
        self._res = [np.zeros(f.nnz_out(i)) for i in range(f.n_out())]
        self._shapes: list[tuple[int, int]] = [f.size_out(i) for i in range(f.n_out())]
        buf, self._trigger = f.buffer()
        # CasADi's stubs list a size argument; its Python binding takes the size from the buffer.
        self._buf: Any = cast(Any, buf)
        for i, a in enumerate(self._args):
            self._buf.set_arg(i, a.data)
        for i, r in enumerate(self._res):
            self._buf.set_res(i, r.data)

    def __call__(self, *args: Sequence[float] | np.ndarray | float) -> tuple[np.ndarray, ...]:
        """Evaluate at ``args`` (one value per input, any shape holding its entries column-major)."""
        if len(args) != len(self._args):
            raise TypeError(f"{self.function.name()} takes {len(self._args)} arguments, got {len(args)}")
        for a, v in zip(self._args, args):
            a[:] = np.ravel(v, order="F") if getattr(v, "ndim", 1) > 1 else v
        self._trigger()
        # CasADi stores matrices column-major.
        return tuple(r.reshape(s, order="F").copy() for r, s in zip(self._res, self._shapes))
