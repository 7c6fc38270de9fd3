"""Unbalanced transport (KL marginal penalties) against POT and closed forms.

Objective (DESIGN.md §2, POT ``sinkhorn_unbalanced(reg_type="kl")``)::

    <P, C> + eps*KL(P || a b^T) + rho_a*KL(P 1 || a) + rho_b*KL(P^T 1 || b)

with the generalised KL ``sum x log(x/y) - x + y``.
"""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path

import numpy as np
import ot
import pytest

import bigsink

TIGHT = {"tol": 1e-13, "max_iter": 200_000}


def gkl(x: np.ndarray, y: np.ndarray) -> float:
    """Generalised KL divergence of non-negative arrays."""
    x, y = np.ravel(x), np.ravel(y)
    pos = x > 0
    return float(np.sum(x[pos] * np.log(x[pos] / y[pos])) - x.sum() + y.sum())


def objective(P: np.ndarray, C: np.ndarray, a: np.ndarray, b: np.ndarray, eps: float,
              rho_a: float, rho_b: float) -> float:
    """The unbalanced objective evaluated directly on a dense plan."""
    val = float(np.sum(P * C)) + eps * gkl(P, a[:, None] * b[None, :])
    if math.isfinite(rho_a):
        val += rho_a * gkl(P.sum(1), a)
    if math.isfinite(rho_b):
        val += rho_b * gkl(P.sum(0), b)
    return val


def pot_plan(a: np.ndarray, b: np.ndarray, C: np.ndarray, eps: float, rho_a: float,
             rho_b: float, method: str = "sinkhorn") -> np.ndarray:
    """POT's converged unbalanced plan (KL regulariser)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(ot.unbalanced.sinkhorn_unbalanced(
            a, b, C, eps, (rho_a, rho_b), method=method, reg_type="kl",
            stopThr=1e-15, numItermax=200_000,
        ))


def random_problem(seed: int, n: int = 9, m: int = 6) -> tuple[np.ndarray, ...]:
    """Asymmetric cost, n != m, non-uniform weights with unequal masses."""
    rng = np.random.default_rng(seed)
    C = rng.random((n, m)) * 2.0                      # not symmetric, not a distance
    a = rng.random(n) + 0.1
    b = rng.random(m) + 0.1
    return C, 0.8 * a / a.sum(), 1.5 * b / b.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("eps", "rho_a", "rho_b"), [
    (0.5, 1.0, 1.0), (0.1, 0.3, 2.0), (0.2, math.inf, 0.5), (0.2, 0.5, math.inf),
])
def test_plan_matches_pot_kl(seed: int, eps: float, rho_a: float, rho_b: float) -> None:
    C, a, b = random_problem(seed)
    r = bigsink.solve(C, a, b, eps=eps, rho_a=rho_a, rho_b=rho_b, eps_scaling=False, **TIGHT)
    Q = pot_plan(a, b, C, eps, rho_a, rho_b)
    P = r.plan()
    assert np.max(np.abs(P - Q)) <= 1e-6 * np.max(Q)
    np.testing.assert_allclose(P, Q, rtol=1e-6, atol=1e-12)
    # the costs: <P, C> and the full objective computed directly from the dense plan
    assert r.transport_cost == pytest.approx(float(np.sum(Q * C)), rel=1e-8)
    assert r.reg_cost == pytest.approx(objective(Q, C, a, b, eps, rho_a, rho_b), rel=1e-8)
    # the dual objective equals the primal at convergence (strong duality)
    assert r.dual_cost == pytest.approx(r.reg_cost, rel=1e-8, abs=1e-12)
    assert r.mass == pytest.approx(float(Q.sum()), rel=1e-8)
    # the solve is the minimiser: nudging the plan (within hard constraints) raises the objective
    rng = np.random.default_rng(seed)
    for _ in range(3):
        Pn = P * np.exp(1e-3 * rng.standard_normal(P.shape))
        if math.isinf(rho_a):
            Pn *= (a / Pn.sum(1))[:, None]
        if math.isinf(rho_b):
            Pn *= (b / Pn.sum(0))[None, :]
        assert objective(Pn, C, a, b, eps, rho_a, rho_b) > r.reg_cost


def test_not_the_entropy_regulariser() -> None:
    """Our ``eps*KL(P||ab^T)`` is POT's reg_type="kl"; reg_type="entropy" is a different plan."""
    C, a, b = random_problem(5)
    r = bigsink.solve(C, a, b, eps=0.3, rho=0.5, eps_scaling=False, **TIGHT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Q_ent = ot.unbalanced.sinkhorn_unbalanced(a, b, C, 0.3, 0.5, reg_type="entropy",
                                                  stopThr=1e-15, numItermax=100_000)
    assert np.max(np.abs(r.plan() - Q_ent)) > 1e-3


def test_pot_log_method_agrees() -> None:
    """POT's stabilised variant converges to the same plan as ours at a smaller eps."""
    C, a, b = random_problem(7, 12, 10)
    eps, rho = 0.05, 0.7
    r = bigsink.solve(C, a, b, eps=eps, rho=rho, eps_scaling=False, **TIGHT)
    Q = pot_plan(a, b, C, eps, rho, rho, method="sinkhorn_stabilized")
    np.testing.assert_allclose(r.plan(), Q, rtol=1e-6, atol=1e-6 * Q.max())


def test_eps_scaling_same_solution() -> None:
    C, a, b = random_problem(3, 15, 11)
    eps, rho = 0.01, 0.4
    r = bigsink.solve(C, a, b, eps=eps, rho=rho, eps_scaling=True, **TIGHT)
    assert len(r.eps_stages) > 1
    Q = pot_plan(a, b, C, eps, rho, rho)  # plain scaling is still safe: C/eps <= 200
    np.testing.assert_allclose(r.plan(), Q, rtol=1e-6, atol=1e-12)
    assert r.reg_cost == pytest.approx(objective(Q, C, a, b, eps, rho, rho), rel=1e-8)
    r0 = bigsink.solve(C, a, b, eps=eps, rho=rho, eps_scaling=False, **TIGHT)
    np.testing.assert_allclose(r0.plan(), r.plan(), rtol=1e-7, atol=1e-13)


def test_batched_matches_per_problem() -> None:
    C, a, _ = random_problem(4)
    rng = np.random.default_rng(11)
    B = rng.random((C.shape[1], 3)) * np.array([0.5, 1.0, 2.0])
    eps, rho_a, rho_b = 0.2, 0.8, 0.3
    r = bigsink.solve(C, a, B, eps=eps, rho_a=rho_a, rho_b=rho_b, eps_scaling=False, **TIGHT)
    P = r.plan()
    assert P.shape == (*C.shape, 3)
    for k in range(3):
        Q = pot_plan(a, B[:, k], C, eps, rho_a, rho_b)
        np.testing.assert_allclose(P[:, :, k], Q, rtol=1e-6, atol=1e-12)
        assert r.reg_cost[k] == pytest.approx(
            objective(Q, C, a, B[:, k], eps, rho_a, rho_b), rel=1e-8)
        assert r.transport_cost[k] == pytest.approx(float(np.sum(Q * C)), rel=1e-8)


def test_reduces_to_balanced_as_rho_grows() -> None:
    C, a, b = random_problem(6)
    b = b * (a.sum() / b.sum())                        # equal masses for the balanced limit
    eps = 0.2
    bal = bigsink.solve(C, a, b, eps=eps, eps_scaling=False, **TIGHT)
    Pb = bal.plan()
    np.testing.assert_allclose(Pb, ot.sinkhorn(a, b, C, eps, stopThr=1e-15, numItermax=100_000),
                               rtol=1e-8, atol=1e-14)
    gaps, regs = [], []
    for rho in (1.0, 10.0, 100.0):
        r = bigsink.solve(C, a, b, eps=eps, rho=rho, init=(bal.f, bal.g), tol=1e-10,
                          max_iter=20_000)
        gaps.append(np.abs(r.plan() - Pb).sum())
        regs.append(r.reg_cost)
    assert all(g2 < 0.3 * g1 for g1, g2 in itertools.pairwise(gaps)), gaps
    assert gaps[-1] < 1e-2 * Pb.sum()
    # reg_cost increases to the balanced regularised value (the penalties relax less and less)
    assert all(r2 > r1 for r1, r2 in itertools.pairwise(regs)), regs
    assert regs[-1] == pytest.approx(bal.reg_cost, rel=1e-2)
    assert regs[-1] < bal.reg_cost


def _dual_kl_terms(f: np.ndarray, g: np.ndarray, a: np.ndarray, b: np.ndarray, eps: float,
                   rho_a: float, rho_b: float) -> float:
    """The dual's marginal terms: ``-rho <w, e^{-(pot - eps log w)/rho} - 1>`` per side
    (``<w, pot - eps log w>`` for rho = inf); the entropic term is shift-invariant."""
    total = 0.0
    for w, pot, rho in ((a, f, rho_a), (b, g, rho_b)):
        F = pot - eps * np.log(w)
        total += float(w @ F) if math.isinf(rho) else float(-rho * (w @ np.expm1(-F / rho)))
    return total


@pytest.mark.parametrize(("rho_a", "rho_b"), [(0.7, 3.0), (0.7, math.inf), (math.inf, 3.0)])
def test_translation_maximises_the_dual_along_the_shift(rho_a: float, rho_b: float) -> None:
    C, a, b = random_problem(8)
    problem = bigsink.problem.make_problem(C.shape, a, b, 0.1, math.inf, rho_a, rho_b)
    rng = np.random.default_rng(9)
    f, g = rng.normal(size=(9, 1)), rng.normal(size=(6, 1))
    f2, g2 = bigsink.solver.translate(problem, f, g, 0.1)
    lam = float((f2 - f)[0, 0])
    np.testing.assert_allclose(f2 - f, lam)
    np.testing.assert_allclose(g - g2, lam)                 # the plan is unchanged
    assert abs(lam) > 1e-3

    def along(t: float) -> float:
        return _dual_kl_terms(f[:, 0] + t, g[:, 0] - t, a, b, 0.1, rho_a, rho_b)

    best = along(lam)
    assert best > along(0.0)
    assert all(best >= along(lam + d) for d in (-1e-3, 1e-3, -1e-1, 1e-1))
    f3, g3 = bigsink.solver.translate(problem, f2, g2, 0.1)  # already at the optimum
    np.testing.assert_allclose(f3, f2, atol=1e-12)
    np.testing.assert_allclose(g3, g2, atol=1e-12)
    balanced = bigsink.problem.make_problem(C.shape, a, b * a.sum() / b.sum(), 0.1)
    assert bigsink.solver.translate(balanced, f, g, 0.1) == (f, g)


@pytest.mark.parametrize(("rho_a", "rho_b"), [(5.0, 5.0), (5.0, math.inf)])
def test_large_rho_over_eps_converges_in_few_iterations(rho_a: float, rho_b: float) -> None:
    # rho/eps = 500: plain unbalanced Sinkhorn damps the shift (f + c, g - c) by only
    # 1 - tau = 1/501 per iteration (thousands of iterations to 1e-10); the translation
    # step removes that mode
    C, a, b = random_problem(10, n=30, m=20)
    r = bigsink.solve(C, a, b, eps=0.01, rho_a=rho_a, rho_b=rho_b, tol=1e-10, max_iter=3000)
    assert r.converged and r.n_iter < 1500
    Q = pot_plan(a, b, C, 0.01, rho_a, rho_b)
    np.testing.assert_allclose(r.plan(), Q, rtol=1e-6, atol=1e-12)


def test_unbalanced_on_point_cloud_and_zarr(tmp_path: Path) -> None:
    """Same answer from a point-cloud source and a Zarr store as from the dense matrix."""
    import zarr

    rng = np.random.default_rng(8)
    x, y = rng.random((13, 2)), rng.random((9, 2)) + 0.3
    a, b = rng.random(13) + 0.1, rng.random(9) + 0.1
    pc = bigsink.PointCloudCost(x, y, block_shape=(4, 9))
    C = ot.dist(x, y)
    Q = pot_plan(a, b, C, 0.1, 0.5, 2.0)
    path = str(tmp_path / "c.zarr")
    z = zarr.create_array(path, shape=C.shape, chunks=(5, 9), dtype="float64")
    z[:] = C
    for src in (pc, bigsink.ZarrCost(path)):
        r = bigsink.solve(src, a, b, eps=0.1, rho_a=0.5, rho_b=2.0, eps_scaling=False, **TIGHT)
        np.testing.assert_allclose(r.plan(), Q, rtol=1e-6, atol=1e-12)


@pytest.mark.dask
def test_unbalanced_on_dask(dask_client: object) -> None:
    pytest.importorskip("bigsink.executors.dask")
    C, a, b = random_problem(12)
    Q = pot_plan(a, b, C, 0.2, 0.5, 1.5)
    for resident in (True, False):          # kernels held by the workers; the log domain
        r = bigsink.solve(C, a, b, eps=0.2, rho_a=0.5, rho_b=1.5, eps_scaling=False,
                          client=dask_client, resident_kernel=resident, **TIGHT)
        np.testing.assert_allclose(r.plan(), Q, rtol=1e-6, atol=1e-12)
