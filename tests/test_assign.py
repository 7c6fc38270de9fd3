"""bigsink.assign: SwAV-style balanced soft assignment."""

from __future__ import annotations

from decimal import Decimal, getcontext

import numpy as np
import pytest

import bigsink


def naive(scores: np.ndarray, eps: float, n_iter: int) -> np.ndarray:
    """The three-step normalisation written out directly in float64 (SwAV's seed)."""
    Q = np.exp(scores / eps).T                      # (K, B)
    K, B = Q.shape
    Q /= Q.sum()
    for _ in range(n_iter):
        Q /= Q.sum(axis=1, keepdims=True)
        Q /= K
        Q /= Q.sum(axis=0, keepdims=True)
        Q /= B
    return (Q * B).T


@pytest.mark.parametrize(("B", "K", "n_iter"), [(32, 5, 3), (17, 9, 1), (40, 3, 0), (8, 8, 10)])
def test_equals_naive(B: int, K: int, n_iter: int) -> None:
    rng = np.random.default_rng(B * K)
    scores = rng.uniform(-1, 1, (B, K))
    out = bigsink.assign(scores, eps=0.1, n_iter=n_iter)
    ref = naive(scores, 0.1, n_iter)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=0)
    if n_iter:
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-12)


def test_dask_sharded_equals_unsharded(dask_client: object) -> None:
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(3)
    scores = rng.uniform(-1, 1, (64, 6))
    ref = bigsink.assign(scores, eps=0.05, n_iter=3)
    lazy = bigsink.assign(da.from_array(scores, chunks=(16, 6)), eps=0.05, n_iter=3)
    assert lazy.numblocks == (4, 1)                 # stays sharded by samples
    np.testing.assert_allclose(lazy.compute(), ref, rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(ref, naive(scores, 0.05, 3), rtol=1e-12)
    # with a tolerance too
    t_ref = bigsink.assign(scores, eps=0.05, n_iter=50, tol=1e-9)
    t_lazy = bigsink.assign(da.from_array(scores, chunks=(16, 6)), eps=0.05, n_iter=50, tol=1e-9)
    np.testing.assert_allclose(np.asarray(t_lazy), t_ref, rtol=1e-12, atol=1e-300)


def _log_domain_reference(scores: np.ndarray, eps: float, n_iter: int) -> np.ndarray:
    """The same normalisation in 50-digit decimal arithmetic (no overflow possible)."""
    getcontext().prec = 50
    B, K = scores.shape
    Q = [[(Decimal(float(s)) / Decimal(eps)).exp() for s in row] for row in scores]
    tot = sum(sum(r) for r in Q)
    Q = [[q / tot for q in r] for r in Q]
    for _ in range(n_iter):
        cols = [sum(Q[i][k] for i in range(B)) for k in range(K)]
        Q = [[Q[i][k] / cols[k] / K for k in range(K)] for i in range(B)]
        rows = [sum(r) for r in Q]
        Q = [[Q[i][k] / rows[i] / B for k in range(K)] for i in range(B)]
    return np.array([[float(q * B) for q in r] for r in Q])


def test_large_scores_do_not_overflow() -> None:
    rng = np.random.default_rng(5)
    eps = 0.05
    scores = rng.uniform(-1e3, 1e3, (12, 4)) * eps  # scores / eps up to 1e3 (exp overflows)
    with np.errstate(over="raise", invalid="raise"):
        out = bigsink.assign(scores, eps=eps, n_iter=3)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-12)
    ref = _log_domain_reference(scores, eps, 3)
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-300)
    with np.errstate(over="ignore", invalid="ignore"):
        assert not np.all(np.isfinite(naive(scores, eps, 3)))  # the direct formula fails here


def test_tolerance_balances_prototypes() -> None:
    rng = np.random.default_rng(9)
    scores = rng.uniform(-1, 1, (30, 5))
    out = bigsink.assign(scores, eps=0.5, n_iter=1000, tol=1e-10)
    # at the start of the stopping round the prototype masses were B/K within tol; the last
    # row step changes them by at most the same order
    np.testing.assert_allclose(out.sum(axis=0), 30 / 5, rtol=1e-8)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-12)


def test_array_api_strict() -> None:
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(2)
    scores = rng.uniform(-1, 1, (10, 4))
    out = bigsink.assign(xps.asarray(scores), eps=0.1)
    assert type(out).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.asarray(out), naive(scores, 0.1, 3), rtol=1e-12)


@pytest.mark.parametrize("kwargs", [{"eps": 0.0}, {"n_iter": -1}, {"tol": 0.0}, {"eps": "x"}])
def test_bad_input(kwargs: dict[str, object]) -> None:
    with pytest.raises(bigsink.InputError):
        bigsink.assign(np.zeros((3, 2)), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(bigsink.InputError, match="2-D"):
        bigsink.assign(np.zeros(3))


@pytest.mark.gpu
def test_cupy_matches_numpy() -> None:
    cp = pytest.importorskip("cupy")
    try:
        cp.cuda.runtime.getDeviceCount()
    except Exception:  # no driver / no device
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(4)
    scores = rng.uniform(-1, 1, (64, 7)) * 50
    out = bigsink.assign(cp.asarray(scores), eps=0.05, n_iter=3)
    assert isinstance(out, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(out), bigsink.assign(scores, eps=0.05), rtol=1e-12)
