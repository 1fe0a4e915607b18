"""BufferedFunction: CasADi evaluation through preallocated buffers."""

from __future__ import annotations

import casadi as ca
import numpy as np
import pytest

from sim.models import get_model
from sim.models.buffered import BufferedFunction


def _cell_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    m = get_model("nd_electrolysis_cell")
    x = np.array([10.0, 2.0, 1050.0, 1035.0, 8.0, 40.0])
    return x, np.array([6.0, 9.2, 0.1]), np.array([30.0, 0.0, 0.0]), m.parameter_vector()


def test_matches_a_plain_call_bit_for_bit() -> None:
    """The cell model's rhs and aux through the buffer equal a plain CasADi call exactly."""
    m = get_model("nd_electrolysis_cell")
    args = _cell_inputs()
    for fn in (m.f, m.aux, m.h):
        (got,) = BufferedFunction(fn)(*args)
        want = np.asarray(fn(*args))
        assert got.shape == want.shape
        assert np.array_equal(got, want)


def test_sparse_jacobian_comes_back_dense_in_matrix_order() -> None:
    """A sparse, non-square Jacobian output is returned dense, row i column j as CasADi's."""
    x = ca.SX.sym("x", 3)
    y = ca.vertcat(x[0] * x[2], ca.sin(x[1]))
    fn = ca.Function("g", [x], [y, ca.jacobian(y, x)])
    assert not fn.sparsity_out(1).is_dense()
    v = np.array([0.5, -1.25, 3.0])
    y_got, jac_got = BufferedFunction(fn)(v)
    assert np.array_equal(y_got, np.asarray(fn(v)[0]))
    assert np.array_equal(jac_got, np.array([[3.0, 0.0, 0.5], [0.0, np.cos(-1.25), 0.0]]))


def test_results_are_fresh_arrays() -> None:
    """A kept result is not overwritten by the next call."""
    x = ca.SX.sym("x", 2)
    call = BufferedFunction(ca.Function("sq", [x], [x * x]))
    (first,) = call(np.array([2.0, 3.0]))
    call(np.array([5.0, 7.0]))
    assert np.array_equal(first, [[4.0], [9.0]])


def test_scalar_list_and_column_arguments() -> None:
    """Scalars, lists and (n, 1) columns are accepted like numpy vectors."""
    x = ca.SX.sym("x", 2)
    k = ca.SX.sym("k")
    call = BufferedFunction(ca.Function("scale", [x, k], [k * x]))
    (a,) = call([1.0, 2.0], 3.0)
    (b,) = call(np.array([[1.0], [2.0]]), np.array([3.0]))
    assert np.array_equal(a, b) and np.array_equal(a, [[3.0], [6.0]])


def test_wrong_argument_count_is_refused() -> None:
    """Too few arguments raise TypeError naming the function."""
    x = ca.SX.sym("x")
    call = BufferedFunction(ca.Function("ident", [x], [x]))
    with pytest.raises(TypeError, match="ident"):
        call()
