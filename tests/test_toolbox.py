"""Sinkhorn divergence and sample distances against POT and exact 1-D values."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import ot
import pytest

import bigsink
from bigsink.toolbox import PowerCost


def clouds(seed: int, n: int = 20, m: int = 15, d: int = 2) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x, y = rng.random((n, d)), rng.random((m, d)) + 0.4
    a, b = rng.random(n) + 0.05, rng.random(m) + 0.05
    return x, y, a / a.sum(), b / b.sum()


@pytest.mark.parametrize(("seed", "eps"), [(0, 0.1), (1, 0.5), (2, 0.05)])
def test_divergence_matches_pot_solve_sample(seed: int, eps: float) -> None:
    x, y, a, b = clouds(seed)
    ref = ot.solve_sample(x, y, a, b, reg=eps, debias=True, max_iter=100_000, tol=1e-13).value
    d = bigsink.divergence(x, y, a, b, eps=eps, tol=1e-12, max_iter=100_000)
    assert d.value == pytest.approx(float(ref), rel=1e-6)
    assert d.value > 0
    # S is built from the regularised values, not the linear costs
    assert d.value == pytest.approx(d.ab.reg_cost - (d.aa.reg_cost + d.bb.reg_cost) / 2,
                                    rel=1e-12)


def test_divergence_zero_for_identical_inputs() -> None:
    x, _, a, _ = clouds(3)
    assert abs(bigsink.divergence(x, x, a, a, eps=0.1).value) <= 1e-10
    assert abs(bigsink.divergence(x, eps=0.05).value) <= 1e-10
    C = ot.dist(x, x)
    assert abs(bigsink.divergence(costs=(C, C, C), a=a, b=a, eps=0.1).value) <= 1e-10


def test_divergence_from_cost_triple_of_any_source(tmp_path: Path) -> None:
    import zarr

    x, y, a, b = clouds(4, 12, 9)
    ref = bigsink.divergence(x, y, a, b, eps=0.2, tol=1e-12)
    path = str(tmp_path / "cab.zarr")
    z = zarr.create_array(path, shape=(12, 9), chunks=(5, 9), dtype="float64")
    z[:] = ot.dist(x, y)
    triple = (path, ot.dist(x, x), bigsink.PointCloudCost(y, y))
    d = bigsink.divergence(costs=triple, a=a, b=b, eps=0.2, tol=1e-12)
    assert d.value == pytest.approx(ref.value, rel=1e-9)


def test_divergence_nonnegative_over_random_clouds() -> None:
    for seed in range(4):
        x, y, a, b = clouds(10 + seed, 10, 8)
        y = x[:8] + 0.01 * seed                           # close clouds: small positive S
        assert bigsink.divergence(x, y, a, b, eps=0.1, tol=1e-11).value >= -1e-12


def test_divergence_self_terms_converge_with_over_relaxation() -> None:
    # the self-transport problems (x, x) converge slowly for plain Sinkhorn (not in 3000
    # iterations here); adaptive over-relaxation (the default) gets there in a few hundred
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 3)), rng.normal(size=(80, 3)) + 0.5
    fast = bigsink.divergence(x, y, eps=0.1, tol=1e-5, max_iter=3000)
    assert fast.aa.converged and fast.bb.converged and fast.ab.converged
    assert max(fast.aa.n_iter, fast.bb.n_iter) < 1000
    ref = ot.solve_sample(x, y, reg=0.1, debias=True, max_iter=100_000, tol=1e-10).value
    assert fast.value == pytest.approx(float(ref), rel=1e-4)


def test_divergence_bad_input() -> None:
    x, y, _, _ = clouds(5)
    with pytest.raises(bigsink.InputError, match="C_aa"):
        bigsink.divergence(costs=(ot.dist(x, y), ot.dist(y, y), ot.dist(x, x)), eps=0.1)
    with pytest.raises(bigsink.InputError, match="either"):
        bigsink.divergence(x, y, costs=(0, 0, 0), eps=0.1)
    with pytest.raises(bigsink.InputError, match="eps"):
        bigsink.divergence(x, y, eps=-1.0)
    with pytest.raises(bigsink.InputError, match="rho"):
        bigsink.divergence(x, y, eps=0.1, rho=1.0)


@pytest.mark.parametrize("p", [1.0, 2.0, 1.5, 3.0])
def test_exact_1d_matches_pot(p: float) -> None:
    rng = np.random.default_rng(int(p * 10))
    x, y = rng.normal(size=37), rng.exponential(size=23)
    wa, wb = rng.random(37), rng.random(23)
    ref = ot.wasserstein_1d(x, y, wa / wa.sum(), wb / wb.sum(), p=p)
    assert bigsink.wasserstein_1d_exact(x, y, wa, wb, p) == pytest.approx(float(ref), rel=1e-12)
    # unweighted equal sizes: mean of |sorted differences|^p
    u, v = rng.random(50), rng.random(50)
    assert bigsink.wasserstein_1d_exact(u, v, p=p) == pytest.approx(
        float(np.mean(np.abs(np.sort(u) - np.sort(v)) ** p)), rel=1e-12)


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_entropic_estimate_approaches_exact_1d(p: float) -> None:
    rng = np.random.default_rng(7)
    x, y = rng.beta(1, 2, 40), rng.beta(2, 2, 30)
    biases, exact = [], None
    for eps in (0.1, 0.03, 0.01, 0.003, 0.001):
        w = bigsink.wasserstein(x, y, p=p, eps=eps, tol=1e-9)
        exact = w.exact
        assert exact is not None
        biases.append(abs(w.value - exact))
    assert exact == pytest.approx(float(ot.wasserstein_1d(x, y, p=p)), rel=1e-12)
    assert all(b2 < b1 for b1, b2 in itertools.pairwise(biases)), biases
    assert biases[-1] < 0.05 * exact


def test_wasserstein_matches_pot_nd_and_weights() -> None:
    x, y, a, b = clouds(6, 14, 11, 3)
    eps = 0.05
    for p, M in ((2.0, ot.dist(x, y)), (1.0, ot.dist(x, y, metric="euclidean")),
                 (3.0, ot.dist(x, y, metric="euclidean") ** 3)):
        P = ot.sinkhorn(a, b, M, eps, stopThr=1e-14, numItermax=100_000)
        w = bigsink.wasserstein(x, y, a * 3.0, b, p=p, eps=eps, tol=1e-12)  # weights normalised
        assert w.exact is None
        assert w.value == pytest.approx(float(np.sum(P * M)), rel=1e-7)
        assert w.distance == pytest.approx(w.value ** (1 / p))


def test_wasserstein_debiased_is_divergence() -> None:
    rng = np.random.default_rng(8)
    x, y = rng.random(25), rng.random(20) * 0.8
    w = bigsink.wasserstein(x, y, p=2, eps=0.01, debias=True, tol=1e-11)
    ref = ot.solve_sample(x[:, None], y[:, None], reg=0.01, debias=True, max_iter=100_000,
                          tol=1e-13).value
    assert w.value == pytest.approx(float(ref), rel=1e-6)
    assert w.exact is not None and w.debias


def test_power_cost_blocks() -> None:
    x, y, _, _ = clouds(9, 7, 5)
    c = PowerCost(bigsink.PointCloudCost(x, y, "euclidean", block_shape=(3, 5)), 1.5)
    np.testing.assert_allclose(c.rows(0, 7), ot.dist(x, y, metric="euclidean") ** 1.5,
                               rtol=1e-12)
    np.testing.assert_allclose(c.block(1, 0), c.rows(3, 6), rtol=1e-15)


def r7_samples() -> tuple[np.ndarray, np.ndarray]:
    """DESIGN.md R7: ``np.random.seed(1)`` then two ``np.random.beta(1, 2, 3000)`` draws."""
    legacy = np.random.RandomState(1)  # the same stream as the global legacy generator
    return legacy.beta(1, 2, 3000), legacy.beta(1, 2, 3000)


def test_r7_exact_w1() -> None:
    x, y = r7_samples()
    assert bigsink.wasserstein_1d_exact(x, y, p=1) == pytest.approx(0.009090469790019021,
                                                                    rel=1e-12)


@pytest.mark.slow
def test_r7_entropic() -> None:
    """DESIGN.md R7: the entropic <P, C> at eps = 1/20 and the exact W1 (n = 3000, ~15 s)."""
    x, y = r7_samples()
    w = bigsink.wasserstein(x, y, p=1, eps=1 / 20, tol=1e-9)
    assert w.value == pytest.approx(0.047913054710487915, rel=1e-6)
    assert w.exact == pytest.approx(0.009090469790019021, rel=1e-12)


@pytest.mark.dask
def test_divergence_on_dask(dask_client: object) -> None:
    """Solver options (client=) pass through; same value as the local executor."""
    pytest.importorskip("bigsink.executors.dask")
    x, y, a, b = clouds(12, 16, 10)
    local = bigsink.divergence(x, y, a, b, eps=0.1, tol=1e-11)
    remote = bigsink.divergence(x, y, a, b, eps=0.1, tol=1e-11, client=dask_client)
    assert remote.value == pytest.approx(local.value, rel=1e-10)
