"""Hypothesis properties of the solver: marginals, permutation invariance, cost shifts."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from hypothesis import HealthCheck, event, given, settings
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


@st.composite
def any_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """What a user may hand ``solve``: shapes from 1, costs of any dtype and scale, weights
    of any scale (zeros included), eps from far below to far above the cost's range."""
    n, m = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cost_scale = draw(st.sampled_from([1e-8, 1e-3, 1.0, 1e3, 1e8]))
    dtype = draw(st.sampled_from(["float64", "float32", "int64", "bool", "complex128"]))
    C = (rng.random((n, m)) * cost_scale).astype(dtype) if dtype != "bool" else rng.random(
        (n, m)) > 0.5
    w_scale = draw(st.sampled_from([1e-300, 1e-100, 1e-5, 1.0, 1e5, 1e100, 1e200]))
    a = rng.random(n) * (rng.random(n) > 0.2)                          # some zero weights
    b = rng.random(m) + 0.01
    if a.sum() > 0:
        a = a / a.sum()
    a, b = a * w_scale, b / b.sum() * w_scale
    eps = draw(st.sampled_from([1e-12, 1e-6, 1e-3, 0.1, 1.0, 1e4])) * cost_scale
    rho = draw(st.sampled_from([np.inf, np.inf, 1.0]))
    return dict(cost=C, a=a, b=b, eps=eps, rho=rho)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_inputs())
def test_any_input_is_refused_or_reports_what_its_plan_does(x: dict[str, Any]) -> None:
    """issue 24: over shapes, dtypes, weight and cost scales and eps, ``solve`` raises an
    InputError up front, or returns a result whose reported mass and marginal errors are
    its plan's, to 1e-9 of the mass; never a NumericalError or a non-finite number."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # non-convergence, float32 precision
        try:
            r = bigsink.solve(x["cost"], x["a"], x["b"], eps=x["eps"], rho=x["rho"],
                              max_iter=300, progress=False)
        except bigsink.InputError as exc:
            event(f"refused: {str(exc).split(':')[0].split(' ')[0]}")
            return
    event("solved")
    a, b = x["a"], x["b"]
    P = r.plan()
    mass = float(r.mass)
    assert np.isfinite([mass, r.transport_cost, r.reg_cost, *r.marginal_error]).all()
    assert mass > 0 or (mass == 0 and not math.isinf(x["rho"]))   # all too dear to move
    # exp((f + g - C) / eps) is only as exact as its exponent: the rounding of C, and of
    # the solve's own (mass-normalised) potentials, in the cost's precision, over eps
    C = np.asarray(x["cost"], dtype=np.float64)
    ulp = float(np.finfo(np.result_type(x["cost"].dtype, np.float32)).eps)
    f, g = np.asarray(r.f), np.asarray(r.g)
    shift = x["eps"] * np.log(r.mass) if r.mass > 0 else 0.0     # the mass's share of f, g
    size = max(float(np.abs(C).max()),
               float(np.abs(f[np.isfinite(f)] - shift).max(initial=0.0)),
               float(np.abs(g[np.isfinite(g)]).max(initial=0.0)), 1e-300)
    rounding = 4 * ulp * size / x["eps"]
    scale = max(mass, float(a.sum())) * (1e-9 + rounding)
    assert abs(P.sum() - mass) <= scale
    assert abs(np.abs(P.sum(1) - a).sum() - r.marginal_error.row) <= scale
    assert abs(np.abs(P.sum(0) - b).sum() - r.marginal_error.col) <= scale
    if r.converged and math.isinf(x["rho"]):
        assert max(r.marginal_error) <= r.tol * float(a.sum())
