"""Hypothesis properties of the solver: marginals, permutation invariance, cost shifts."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bigsink

TOL = 1e-9


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    n = draw(st.integers(2, 12))
    m = draw(st.integers(2, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    C = rng.random((n, m)) * draw(st.sampled_from([0.1, 1.0, 10.0]))
    a = rng.random(n) + 0.01
    b = rng.random(m) + 0.01
    eps = draw(st.sampled_from([1.0, 0.1, 0.01])) * max(float(C.max()), 1e-3)
    return C, a / a.sum(), b / b.sum(), eps


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(problems())
def test_marginals_within_tol(p: tuple[np.ndarray, np.ndarray, np.ndarray, float]) -> None:
    C, a, b, eps = p
    r = bigsink.solve(C, a, b, eps=eps, tol=TOL)
    P = r.plan()
    assert r.converged
    assert np.abs(P.sum(1) - a).sum() <= TOL
    assert np.abs(P.sum(0) - b).sum() <= TOL
    assert np.isclose(r.marginal_error.row, np.abs(P.sum(1) - a).sum(), atol=1e-14)


@SETTINGS
@given(problems(), st.randoms(use_true_random=False))
def test_permuting_rows_and_columns_permutes_the_plan(p, rnd) -> None:
    C, a, b, eps = p
    pi = np.array(rnd.sample(range(C.shape[0]), C.shape[0]))
    sigma = np.array(rnd.sample(range(C.shape[1]), C.shape[1]))
    r = bigsink.solve(C, a, b, eps=eps, tol=1e-11)
    rp = bigsink.solve(C[np.ix_(pi, sigma)], a[pi], b[sigma], eps=eps, tol=1e-11)
    np.testing.assert_allclose(rp.plan(), r.plan()[np.ix_(pi, sigma)], rtol=1e-7, atol=1e-12)
    assert np.isclose(rp.transport_cost, r.transport_cost, rtol=1e-8)


@SETTINGS
@given(problems(), st.floats(-5.0, 5.0))
def test_constant_added_to_cost_shifts_potentials_not_plan(p, c: float) -> None:
    C, a, b, eps = p
    r = bigsink.solve(C, a, b, eps=eps, tol=1e-11, eps_scaling=False)
    rs = bigsink.solve(C + c, a, b, eps=eps, tol=1e-11, eps_scaling=False)
    np.testing.assert_allclose(rs.plan(C + c), r.plan(), rtol=1e-7, atol=1e-12)
    # f + g shifts by c: (f_i + g_j) - C_ij is unchanged
    np.testing.assert_allclose(rs.f[:, None] + rs.g[None, :] - c, r.f[:, None] + r.g[None, :],
                               atol=1e-8 * max(1.0, abs(c)))
    assert np.isclose(rs.transport_cost, r.transport_cost + c, rtol=1e-8, atol=1e-10)
