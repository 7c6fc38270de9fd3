"""Pure kernels on NumPy and on array-api-strict, against direct dense formulas."""

from __future__ import annotations

from typing import Any

import array_api_strict
import numpy as np
import pytest
from scipy.special import logsumexp

from bigsink.kernels import reference as K

NAMESPACES = [pytest.param(np, id="numpy"), pytest.param(array_api_strict, id="array-api-strict")]


def _rand(rng: np.random.Generator, r: int, m: int, k: int) -> tuple[np.ndarray, ...]:
    C = rng.random((r, m)) * 3.0
    g = rng.normal(size=(m, k))
    log_a = np.log(rng.random((r, k)) + 0.1)
    return C, g, log_a


@pytest.mark.parametrize("xp", NAMESPACES)
def test_lse_pair_and_merge_match_logsumexp(xp: Any) -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 30)) * 50
    halves = [K.lse_pair(xp.asarray(z[:, :13]), axis=1), K.lse_pair(xp.asarray(z[:, 13:]), axis=1)]
    merged = K.pair_to_lse(K.merge_pairs(*halves))
    np.testing.assert_allclose(np.asarray(merged), logsumexp(z, axis=1), rtol=1e-13)


@pytest.mark.filterwarnings("ignore:divide by zero")
@pytest.mark.parametrize("xp", NAMESPACES)
def test_empty_pairs_merge_to_minus_inf(xp: Any) -> None:
    z = xp.asarray(np.array([[-np.inf, -np.inf], [0.0, -np.inf]]))
    m, s = K.lse_pair(z, axis=1)
    assert float(m[0]) == -np.inf and float(s[0]) == 0.0
    merged = K.pair_to_lse(K.merge_pairs((m, s), (m, s)))
    assert float(merged[0]) == -np.inf
    assert float(merged[1]) == pytest.approx(np.log(2.0))


def test_tree_reduce_is_a_fixed_balanced_tree() -> None:
    order = K.tree_reduce([f"{i}" for i in range(5)], lambda p, q: f"({p}{q})")
    assert order == "(((01)(23))4)"
    with pytest.raises(ValueError):
        K.tree_reduce([], lambda p, q: p)


@pytest.mark.parametrize("xp", NAMESPACES)
@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_sinkhorn_strip_matches_dense_updates(xp: Any, tau: float) -> None:
    rng = np.random.default_rng(1)
    C, g, log_a = _rand(rng, 9, 21, 3)
    eps = 0.05
    la = xp.asarray(log_a)
    f_new, (cm, cs) = K.sinkhorn_strip(xp.asarray(C), 0, la, la, xp.asarray(g), eps, tau)
    # f_i = eps log a_i - tau eps LSE_j((g_j - C_ij)/eps): KL(P || a b^T) regularisation
    # (POT reg_type="kl"; tau = 1 is DESIGN.md §2's balanced update)
    ref_f = eps * log_a - tau * eps * logsumexp((g[None] - C[:, :, None]) / eps, axis=1)
    np.testing.assert_allclose(np.asarray(f_new), ref_f, rtol=1e-12, atol=1e-13)
    # column partial = LSE_i((f_new_i - C_ij)/eps) over the strip's rows
    ref_col = logsumexp((ref_f[:, None, :] - C[:, :, None]) / eps, axis=0)
    got = np.asarray(K.pair_to_lse((cm, cs)))
    np.testing.assert_allclose(got, ref_col, rtol=1e-12)
    _, exact = K.column_pair(xp.asarray(C), 0, xp.asarray(ref_f), eps)
    np.testing.assert_allclose(np.asarray(K.pair_to_lse(exact)), ref_col, rtol=1e-12)


@pytest.mark.parametrize("xp", NAMESPACES)
def test_zero_weights_give_minus_inf_potentials_without_nan(xp: Any) -> None:
    rng = np.random.default_rng(2)
    C, g, log_a = _rand(rng, 5, 8, 2)
    log_a[1, 0] = -np.inf
    g[3, 1] = -np.inf
    la = xp.asarray(log_a)
    f_new, (cm, cs) = K.sinkhorn_strip(xp.asarray(C), 0, la, la, xp.asarray(g), 0.1, 1.0)
    f_np = np.asarray(f_new)
    assert f_np[1, 0] == -np.inf
    assert np.isfinite(np.delete(f_np.ravel(), 2)).all()
    assert not np.isnan(np.asarray(cm)).any() and not np.isnan(np.asarray(cs)).any()


@pytest.mark.parametrize("xp", NAMESPACES)
def test_evaluate_strip_matches_dense_plan(xp: Any) -> None:
    rng = np.random.default_rng(3)
    C = rng.random((6, 4))
    f, g = rng.normal(size=(6, 2)) * 0.1, rng.normal(size=(4, 2)) * 0.1
    rows, (cols, pc) = K.evaluate_strip(xp.asarray(C), 0, xp.asarray(f), xp.asarray(g), 0.3)
    P = np.exp((f[:, None, :] + g[None, :, :] - C[:, :, None]) / 0.3)
    np.testing.assert_allclose(np.asarray(rows), P.sum(1), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(cols), P.sum(0), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(pc), (P * C[:, :, None]).sum((0, 1)), rtol=1e-13)


@pytest.mark.parametrize("xp", NAMESPACES)
def test_scan_strip_finds_range_and_first_bad(xp: Any) -> None:
    C = np.arange(12.0).reshape(3, 4)
    _, (lo, hi, n_bad, first) = K.scan_strip(xp.asarray(C), 5)
    assert (lo, hi, n_bad, first) == (0.0, 11.0, 0, -1)
    C[1, 2] = np.nan
    C[2, 0] = np.inf
    _, part = K.scan_strip(xp.asarray(C), 5)
    assert part == (0.0, 11.0, 2, 5 * 4 + 1 * 4 + 2)
    assert K.merge_scan(part, (-1.0, 3.0, 1, 3)) == (-1.0, 11.0, 3, 3)


def test_over_relaxed_strip_is_the_relaxed_update_and_its_columns() -> None:
    rng = np.random.default_rng(11)
    C, g, log_a = _rand(rng, 9, 21, 2)
    f_prev = rng.normal(scale=0.1, size=log_a.shape)                  # (9, 2)
    log_a[4, 1] = -np.inf                                             # a zero weight
    plain, _ = K.sinkhorn_strip(C, 0, log_a, f_prev, g, 0.05, 1.0)
    f_new, pair = K.sinkhorn_strip(C, 0, log_a, f_prev, g, 0.05, 1.0, 1.6)
    fin = np.isfinite(plain)
    # f = f_prev + omega (f_sinkhorn - f_prev) (Thibault et al. 2021), -inf kept for a_i = 0
    np.testing.assert_allclose(f_new[fin], (f_prev + 1.6 * (plain - f_prev))[fin], rtol=1e-13)
    assert f_new[4, 1] == -np.inf
    # the column partials are those of the relaxed f, as a separate column pass gives them
    _, ref = K.column_pair(C, 0, f_new, 0.05)
    np.testing.assert_allclose(K.pair_to_lse(pair), K.pair_to_lse(ref), rtol=1e-12)
