"""Every bad input is rejected before any iteration, with a message that says what and how."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import bigsink
from bigsink import InputError

C = np.random.default_rng(0).random((4, 3))
A = np.full(4, 0.25)
B = np.full(3, 1 / 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"a": np.array([0.5, -0.1, 0.3, 0.3])}, r"a contains 1 negative value.*a\[1\] = -0\.1"),
        ({"a": np.array([0.5, np.nan, 0.25, 0.25])}, r"a contains 1 non-finite.*a\[1\] = nan"),
        ({"b": np.array([np.inf, 0.5, 0.5])}, r"b contains 1 non-finite.*b\[0\] = inf"),
        ({"a": np.zeros(4)}, r"a is all zeros"),
        ({"b": np.zeros((3, 2))}, r"b is all zeros \(column 0\)"),
        ({"a": np.full(4, 0.5)}, r"sum\(a\) = 2 and sum\(b\) = 1 .*rho="),
        ({"a": np.full(5, 0.2)}, r"a has 5 entries but the cost has 4 rows"),
        ({"b": np.full(2, 0.5)}, r"b has 2 entries but the cost has 3 columns"),
        ({"a": np.ones((4, 1, 1))}, r"a: expected shape \(4,\) or \(4, K\)"),
        (
            {"a": np.ones((4, 2)) / 4, "b": np.ones((3, 3)) / 3},
            r"a has 2 batched columns and b has 3",
        ),
        ({"eps": 0.0}, r"eps must be positive and finite; got 0\.0"),
        ({"eps": -1.0}, r"eps must be positive"),
        ({"eps": float("nan")}, r"eps must be positive"),
        ({"eps": float("inf")}, r"eps must be positive and finite"),
        ({"eps": "big"}, r"eps must be a positive number; got 'big'"),
        ({"tol": 0}, r"tol must be positive and finite"),
        ({"tol": float("inf")}, r"tol must be positive and finite"),
        ({"max_iter": 0}, r"max_iter must be an integer >= 1; got 0"),
        ({"max_iter": 2.5}, r"max_iter must be an integer >= 1"),
        ({"rho": -1.0}, r"rho must be positive \(or inf\)"),
        ({"eps_decay": 1.5}, r"eps_decay must be in \(0, 1\)"),
        ({"init": (np.zeros(7), None)}, r"init f: expected 4 potentials"),
        ({"executor": "gpu-cluster"}, r"executor must be 'local'"),
        ({"callback": "print"}, r"callback must be callable as callback\(n_iter, err\).*got str"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"a": A, "b": B, "eps": 0.1}
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        bigsink.solve(C, **args)


def test_input_error_is_a_value_error() -> None:
    assert issubclass(InputError, ValueError)


def test_small_mass_difference_is_accepted() -> None:
    r = bigsink.solve(C, A * (1 + 1e-9), B, eps=0.5)
    assert r.converged


@pytest.mark.parametrize(
    ("cost", "match"),
    [
        (np.zeros(5), r"cost: expected a 2-D \(n, m\) matrix, got an array of shape \(5,\)"),
        (np.zeros((2, 2, 2)), r"expected a 2-D"),
        (np.zeros((0, 3)), r"cost: the matrix is empty \(shape \(0, 3\)\)"),
    ],
)
def test_bad_cost_shapes(cost: np.ndarray, match: str) -> None:
    with pytest.raises(InputError, match=match):
        bigsink.solve(cost, eps=0.1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_cost_names_the_entry_and_block(bad: float) -> None:
    Cb = np.random.default_rng(1).random((20, 10))
    Cb[13, 7] = bad
    Cb[15, 2] = bad
    with pytest.raises(InputError, match=r"2 non-finite .*C\[13, 7\] = .* in block \(2, 1\)"):
        bigsink.solve(bigsink.DenseCost(Cb, (6, 4)), eps=0.1)


def test_missing_zarr_store(tmp_path) -> None:
    with pytest.raises(InputError, match=r"no Zarr store at .*nothing\.zarr"):
        bigsink.solve(str(tmp_path / "nothing.zarr"), eps=0.1)


def test_errors_come_before_any_iteration(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    import bigsink.solver as solver

    monkeypatch.setattr(solver, "iterate", lambda *a, **k: calls.append(1))
    Cb = C.copy()
    Cb[0, 0] = np.nan
    with pytest.raises(InputError):
        bigsink.solve(Cb, eps=0.1)
    assert calls == []


def test_a_bool_is_not_a_number_here() -> None:
    """``eps=True`` used to be taken as 1.0 (issue 24, item 12)."""
    C = np.random.default_rng(0).random((5, 4))
    for kw in ({"eps": True}, {"eps": 0.1, "tol": True}, {"eps": 0.1, "rho": np.True_}):
        with pytest.raises(bigsink.InputError, match="positive number; got"):
            bigsink.solve(C, progress=False, **kw)


def test_an_eps_below_the_costs_resolution_is_refused_up_front() -> None:
    """eps=1e-12 on costs of 1e6 ran 20 stages into a plan of rounding noise (issue 24,
    item 11): refused, naming both numbers."""
    rng = np.random.default_rng(1)
    C = 1e6 * rng.random((30, 20))
    calls: list[int] = []
    with pytest.raises(bigsink.InputError,
                       match=r"eps=1e-12 is below.*reach 99\d+, rounded to about 2.2e-10"):
        bigsink.solve(C, eps=1e-12, progress=False, callback=lambda i, e: calls.append(i))
    assert calls == []                                   # before any iteration
    for dtype, eps in (("float32", 1e-2), ("float64", 1e-8)):  # above a few ulps: solved
        r = bigsink.solve((C / 1e6).astype(dtype), eps=eps, progress=False, max_iter=5)
        assert np.isfinite(r.transport_cost)
    with pytest.raises(bigsink.InputError, match="float32 resolves"):
        bigsink.solve((C / 1e6).astype("float32"), eps=1e-8, progress=False)


def test_a_complex_cost_is_refused() -> None:
    """A complex cost was solved on its real part (issue 24, item 12)."""
    C = np.random.default_rng(2).random((6, 5)) * (1 + 1j)
    with pytest.raises(bigsink.InputError, match=r"complex.*C\.real"):
        bigsink.solve(C, eps=0.1, progress=False)


def test_potentials_are_minus_inf_only_where_the_weight_is_zero() -> None:
    """What the README promises (issue 24, item 12): a -inf potential only for a 0 weight,
    whose row of the plan is exactly 0; every other potential is finite."""
    rng = np.random.default_rng(3)
    C = rng.random((12, 9))
    a = rng.random(12)
    a[[2, 7]] = 0.0
    r = bigsink.solve(C, a / a.sum(), eps=0.1, progress=False)
    assert np.all(np.isneginf(r.f[[2, 7]])) and np.all(np.isfinite(np.delete(r.f, [2, 7])))
    assert np.all(np.isfinite(r.g))
    P = r.plan(C)
    assert np.all(P[[2, 7]] == 0.0) and np.isfinite(P).all()


RNG = np.random.default_rng(5)
CS = RNG.random((40, 30))
AS = RNG.random(40) + 0.1
AS /= AS.sum()
BS = RNG.random(30) + 0.1
BS /= BS.sum()


@pytest.mark.parametrize("scale", [1e-300, 1e-20, 7.0, 1e20, 1e149])
def test_the_weights_scale_changes_nothing_but_the_scale_of_the_answer(scale: float) -> None:
    # issue 24, item 5: at 1e-300 the absolute tol passed at once (2 iterations, cost 1.5%
    # off); at 1e300 it never converged
    ref = bigsink.solve(CS, AS, BS, eps=0.05, tol=1e-9, progress=False)
    r = bigsink.solve(CS, AS * scale, BS * scale, eps=0.05, tol=1e-9, progress=False)
    assert r.converged and r.n_iter == ref.n_iter
    assert r.transport_cost / scale == pytest.approx(ref.transport_cost, rel=1e-12)
    assert r.mass / scale == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(r.f - 0.05 * np.log(scale), ref.f, atol=1e-12)
    assert r.marginal_error.row / scale <= 1e-9
    if scale >= 1e-20:          # the plan of mass 1e-300 underflows entrywise: sums only
        P = r.plan()
        assert P.sum() == pytest.approx(r.mass, rel=1e-12)
        assert np.abs(P.sum(1) - AS * scale).sum() == pytest.approx(r.marginal_error.row,
                                                                     rel=1e-6, abs=1e-13 * scale)


@pytest.mark.parametrize(("rho_a", "rho_b"), [(1.0, 1.0), (0.5, np.inf), (2.0, 0.3)])
@pytest.mark.parametrize("scale", [1e-3, 7.0, 1e5])
def test_unbalanced_weights_at_any_scale_match_pot(rho_a: float, rho_b: float,
                                                   scale: float) -> None:
    ot = pytest.importorskip("ot")
    a, b = AS * scale, BS * scale * 1.3
    r = bigsink.solve(CS, a, b, eps=0.1, rho_a=rho_a, rho_b=rho_b, tol=1e-12, progress=False)
    P = ot.unbalanced.sinkhorn_unbalanced(a, b, CS, 0.1, (rho_a, rho_b), reg_type="kl",
                                          stopThr=1e-16, numItermax=100_000)
    np.testing.assert_allclose(r.plan(), P, rtol=1e-7, atol=1e-9 * P.max())
    assert r.mass == pytest.approx(P.sum(), rel=1e-7)


def test_a_warm_start_in_the_users_scale_is_one_iteration_from_done() -> None:
    a, b = AS * 1e8, BS * 1e8
    r = bigsink.solve(CS, a, b, eps=0.05, tol=1e-9, progress=False)
    again = bigsink.solve(CS, a, b, eps=0.05, tol=1e-9, init=(r.f, r.g), progress=False)
    assert again.n_iter <= 2
    np.testing.assert_allclose(again.f, r.f, rtol=1e-9)


@pytest.mark.parametrize(("scale", "rho", "match"), [
    (1e-310, np.inf, r"a sums to 1e-310, outside .*\[2.23e-308, 1e\+150\]. Multiply a and b"),
    (1e300, np.inf, r"a sums to 1e\+300, outside"),
    (1e-200, 1.0, r"a sums to 1e-200, outside .* for an unbalanced problem, \[1e-150"),
])
def test_a_scale_float64_cannot_hold_is_refused(scale: float, rho: float, match: str) -> None:
    with pytest.raises(InputError, match=match):
        bigsink.solve(CS, AS * scale, BS * scale, eps=0.05, rho=rho, progress=False)
