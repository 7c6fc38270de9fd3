"""Fused numba kernels against the generic array-namespace kernels and against POT."""

from __future__ import annotations

import warnings

import numpy as np
import ot
import pytest

import bigsink
import bigsink.kernels as fused
from bigsink.kernels import cpu
from bigsink.kernels import reference as kernels

#: float64 costs: the fused kernels match the reference to 1e-12; float32 costs use a
#: float32-accurate exp (~5e-9), i.e. they match to float32 precision.
_RTOL = {np.float64: 1e-12, np.float32: 5e-8}


def _strip(rng: np.random.Generator, r: int, m: int, K: int, dtype: type, scale: float = 1.0):
    """A random strip with a zero row weight, a zero column weight and a far-off row."""
    C = (scale * rng.uniform(0, 1, (r, m))).astype(dtype)
    C[1] += 50 * scale                                     # a row far from every column
    log_a = np.log(rng.dirichlet(np.ones(r * K)).reshape(r, K))
    log_a[3] = -np.inf                                     # a_i = 0
    g = rng.normal(0, 0.05 * scale, (m, K))
    g[5] = -np.inf                                         # b_j = 0
    return C, log_a, g


def _lse(pair: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return kernels.pair_to_lse(pair)


def test_exp_matches_numpy() -> None:
    x = np.concatenate([np.linspace(-708, 709.4, 200_001), [0.0, -1e-300, 1e-300]])
    rel = np.abs(cpu.exp(x) - np.exp(x)) / np.exp(x)
    assert rel.max() < 5e-16
    special = cpu.exp(np.array([-np.inf, -1000.0, -709.0, 710.0, np.inf]))
    assert list(special[:3]) == [0.0, 0.0, 0.0] and np.all(np.isinf(special[3:]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("eps", [1.0, 1e-2, 1e-3])
@pytest.mark.parametrize("omega", [1.0, 1.7])
def test_sinkhorn_strip_matches_reference(dtype: type, K: int, eps: float, omega: float) -> None:
    rng = np.random.default_rng(K + int(1 / eps))
    C, log_a, g = _strip(rng, 29, 203, K, dtype)
    plain, _ = kernels.sinkhorn_strip(C, 0, log_a, log_a, g, eps, 1.0)
    # previous potentials as the solver has them: within a few eps of the plain update
    f_prev = np.where(np.isfinite(plain), plain, 0.0) + rng.normal(scale=3 * eps, size=plain.shape)
    f1, p1 = kernels.sinkhorn_strip(C, 0, log_a, f_prev, g, eps, 1.0, omega)
    f2, p2 = fused.sinkhorn_strip(C, 0, log_a, f_prev, g, eps, 1.0, omega)
    assert f2.shape == f1.shape and p2[0].shape == p1[0].shape == (203, K)
    np.testing.assert_array_equal(np.isneginf(f1), np.isneginf(f2))
    fin = np.isfinite(f1)
    rtol = _RTOL[dtype]
    np.testing.assert_allclose(f2[fin], f1[fin], rtol=rtol, atol=0)
    l1, l2 = _lse(p1), _lse(p2)
    np.testing.assert_array_equal(np.isneginf(l1), np.isneginf(l2))
    fin = np.isfinite(l1)
    # the column log-sums give g = -eps * lse: compare them relatively, as potentials
    assert np.all(np.abs(l2[fin] - l1[fin]) <= rtol * np.maximum(1.0, np.abs(l1[fin])))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("offset", [0.0, 30.0, -30.0, 200.0, -200.0, 1000.0, -1000.0, np.inf])
def test_shift_guess_never_changes_the_answer(dtype: type, offset: float) -> None:
    """The kernel shifts row i by its log-sum-exp at ``f_prev``. A guess off by 30 (kept),
    by 200 or 1000 (beyond the window, or overflowing: the row max instead) or not finite
    gives the same strip, across several chunks (m = 1100) and a partial group (r = 13)."""
    rng = np.random.default_rng(11)
    eps = 1e-2
    C, log_a, g = _strip(rng, 13, 1100, 2, dtype)
    f1, p1 = kernels.sinkhorn_strip(C, 0, log_a, log_a, g, eps, 1.0)
    # omega = 1: f_prev only sets the shift, exact at f_prev = f1; `offset` moves it
    f_prev = np.where(np.isfinite(f1), f1, 0.0) - eps * offset
    f2, p2 = fused.sinkhorn_strip(C, 0, log_a, f_prev, g, eps, 1.0)
    fin = np.isfinite(f1)
    np.testing.assert_array_equal(np.isfinite(f2), fin)
    np.testing.assert_allclose(f2[fin], f1[fin], rtol=_RTOL[dtype], atol=0)
    l1, l2 = _lse(p1), _lse(p2)
    fin = np.isfinite(l1)
    np.testing.assert_array_equal(np.isfinite(l2), fin)
    assert np.all(np.abs(l2[fin] - l1[fin]) <= _RTOL[dtype] * np.maximum(1.0, np.abs(l1[fin])))
    r1, (c1, pc1) = kernels.evaluate_strip(C, 0, f1, g, eps)
    r2, (c2, pc2) = fused.evaluate_strip(C, 0, f1, g, eps)
    np.testing.assert_allclose(r2, r1, rtol=_RTOL[dtype], atol=1e-300)
    np.testing.assert_allclose(c2, c1, rtol=_RTOL[dtype], atol=1e-300)
    np.testing.assert_allclose(pc2, pc1, rtol=_RTOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_unbalanced_tau(dtype: type) -> None:
    rng = np.random.default_rng(7)
    C, log_a, g = _strip(rng, 17, 64, 2, dtype)
    f1, _ = kernels.sinkhorn_strip(C, 0, log_a, log_a, g, 0.05, 0.8)
    f2, _ = fused.sinkhorn_strip(C, 0, log_a, log_a, g, 0.05, 0.8)
    fin = np.isfinite(f1)
    np.testing.assert_allclose(f2[fin], f1[fin], rtol=_RTOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("K", [1, 2])
def test_evaluate_strip_matches_reference(dtype: type, K: int) -> None:
    rng = np.random.default_rng(3)
    C, log_a, g = _strip(rng, 31, 150, K, dtype)
    f, _ = kernels.sinkhorn_strip(C, 0, log_a, log_a, g, 1e-2, 1.0)
    r1, (c1, pc1) = kernels.evaluate_strip(C, 0, f, g, 1e-2)
    r2, (c2, pc2) = fused.evaluate_strip(C, 0, f, g, 1e-2)
    rtol = _RTOL[dtype]
    np.testing.assert_allclose(r2, r1, rtol=rtol, atol=1e-300)
    np.testing.assert_allclose(c2, c1, rtol=rtol, atol=1e-300)
    np.testing.assert_allclose(pc2, pc1, rtol=rtol)


def test_generic_fallback_for_other_namespaces() -> None:
    xp = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(0)
    C, log_a, g = _strip(rng, 8, 12, 1, np.float64)
    g[5] = 0.0
    log_a[3] = np.log(0.1)
    la = xp.asarray(log_a)
    out, _ = fused.sinkhorn_strip(xp.asarray(C), 0, la, la, xp.asarray(g), 0.1, 1.0)
    ref, _ = kernels.sinkhorn_strip(C, 0, log_a, log_a, g, 0.1, 1.0)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-13)
    assert fused.strip_kernels(np.float64)[0] is fused.sinkhorn_strip
    assert fused.strip_kernels(np.int64)[0] is kernels.sinkhorn_strip
    assert fused.strip_kernels(np.float32, xp)[0] is kernels.sinkhorn_strip


def _points(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(size=(n, 2)), rng.uniform(size=(n, 2))
    C = ot.dist(x, y)
    return C / C.max()


@pytest.mark.parametrize("eps", [1e-1, 1e-2])
def test_solve_fused_equals_generic_and_pot(eps: float, monkeypatch: pytest.MonkeyPatch) -> None:
    C = _points(300, 1)
    fast = bigsink.solve(C, eps=eps, tol=1e-9, progress=False)
    monkeypatch.setattr(fused, "sinkhorn_strip", kernels.sinkhorn_strip)
    monkeypatch.setattr(fused, "evaluate_strip", kernels.evaluate_strip)
    slow = bigsink.solve(C, eps=eps, tol=1e-9, progress=False)
    assert fast.n_iter == slow.n_iter
    np.testing.assert_allclose(fast.f, slow.f, rtol=1e-10, atol=1e-12 * eps)
    np.testing.assert_allclose(fast.transport_cost, slow.transport_cost, rtol=1e-11)
    a = np.full(300, 1 / 300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        P = ot.sinkhorn(a, a, C, eps, method="sinkhorn_log", stopThr=1e-12, numItermax=20000)
    np.testing.assert_allclose(fast.transport_cost, float((P * C).sum()), rtol=1e-7)


def test_solve_float32_cost_and_precision_warning() -> None:
    C = _points(200, 2)
    r64 = bigsink.solve(C, eps=1e-2, tol=1e-8, progress=False)
    with pytest.warns(bigsink.PrecisionWarning, match="float32"):
        r32 = bigsink.solve(C.astype(np.float32), eps=1e-2, tol=1e-8, progress=False)
    assert r32.converged
    # the float32 rounding of C (<= 6e-8 relative) moves <P, C> by about that much
    np.testing.assert_allclose(r32.transport_cost, r64.transport_cost, rtol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", bigsink.PrecisionWarning)
        bigsink.solve(C.astype(np.float32), eps=1e-2, tol=1e-6, progress=False)


def test_batched_solve_matches_single() -> None:
    C = _points(150, 3)
    rng = np.random.default_rng(4)
    A = rng.dirichlet(np.ones(150), size=2).T                       # (150, 2)
    both = bigsink.solve(C, A, None, eps=5e-2, tol=1e-9, progress=False)
    for k in range(2):
        one = bigsink.solve(C, A[:, k], None, eps=5e-2, tol=1e-9, progress=False)
        np.testing.assert_allclose(both.transport_cost[k], one.transport_cost, rtol=1e-9)


def test_exp_variants_have_their_own_cache_entries() -> None:
    # closures of one factory share a qualified name, hence numba's on-disk cache index,
    # where concurrent processes once swapped the two polynomials' machine code
    names = {f.py_func.__qualname__ for f in (cpu._exp_row, cpu._exp_row_f32)}
    assert len(names) == 2
    x = np.linspace(-5.0, 5.0, 1001)
    out = np.empty_like(x)
    cpu._exp_row(x, np.zeros_like(x), 1.0, 0.0, out)
    np.testing.assert_allclose(out, np.exp(x), rtol=4e-16)
    cpu._exp_row_f32(x, np.zeros_like(x), 1.0, 0.0, out)
    assert 1e-12 < np.max(np.abs(out / np.exp(x) - 1)) < 1e-8      # the cheaper variant


def test_merge_pairs_matches_reference() -> None:
    rng = np.random.default_rng(5)
    m1, m2 = rng.normal(0, 40, (1300, 2)), rng.normal(0, 40, (1300, 2))
    s1, s2 = rng.uniform(0.1, 3, (1300, 2)), rng.uniform(0.1, 3, (1300, 2))
    m1[:4], s1[:4] = -np.inf, 0.0                          # empty on the left,
    m2[2:6], s2[2:6] = -np.inf, 0.0                        # on the right, and on both
    (mr, sr), (mf, sf) = kernels.merge_pairs((m1, s1), (m2, s2)), fused.merge_pairs((m1, s1),
                                                                                     (m2, s2))
    np.testing.assert_array_equal(mf, mr)
    np.testing.assert_allclose(sf, sr, rtol=1e-15, atol=0)
    assert list(sf[2:4, 0]) == [0.0, 0.0]
    f32 = (m1.astype(np.float32), s1.astype(np.float32))   # not float64: the generic merge
    assert fused.merge_pairs(f32, f32)[0].dtype == np.float32
