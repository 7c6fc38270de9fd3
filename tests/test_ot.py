"""bigsink.ot against POT: POT's documented calls give POT's answers after replacing
``import ot`` by ``import bigsink.ot as ot``, including forbidden (inf) pairs, batched
histograms, the entropy reference, unbalanced penalties and point clouds."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import bigsink
import bigsink.ot as bot

pot = pytest.importorskip("ot")

#: A POT user's script, run unchanged with ``ot`` bound to POT and to bigsink.ot. Its calls
#: are those of POT's docstrings (ot.sinkhorn, ot.sinkhorn2, ot.unbalanced.sinkhorn_unbalanced,
#: ot.solve, ot.solve_sample), on their toy data and on a random 2-D problem.
SCRIPT = """
import numpy as np
a = [.5, .5]
b = [.5, .5]
M = [[0., 1.], [1., 0.]]
out["sinkhorn"] = ot.sinkhorn(a, b, M, 1)
out["sinkhorn2"] = ot.sinkhorn2(a, b, M, 1)
out["sinkhorn_unbalanced"] = ot.sinkhorn_unbalanced(a, b, M, 1, 1)
rng = np.random.RandomState(0)
xa = rng.randn(30, 2)
xb = rng.randn(40, 2) + 1.0
wa = rng.rand(30); wa /= wa.sum()
out["unif"] = ot.unif(4)
wb = rng.rand(40); wb /= wb.sum()
Mx = ot.dist(xa, xb)
Mx /= Mx.max()
out["plan_log"], log = ot.sinkhorn(wa, wb, Mx, 0.05, log=True, method="sinkhorn_log")
out["log_uv"] = log["log_u"][:, None] + log["log_v"][None, :]
out["loss_stab"] = ot.sinkhorn2(wa, wb, Mx, 0.01, method="sinkhorn_stabilized")
out["unb_pair"] = ot.sinkhorn_unbalanced(wa, wb, Mx, 0.05, (0.5, 2.0), stopThr=1e-12,
                                         numItermax=100000)
out["unb_entropy"] = ot.sinkhorn_unbalanced(wa, wb, Mx, 0.05, 1.0, reg_type="entropy",
                                            stopThr=1e-12, numItermax=100000)
res = ot.solve(Mx, wa, wb, reg=0.05)
out["solve_plan"], out["solve_value"] = res.plan, res.value
out["solve_linear"] = res.value_linear
out["solve_uv"] = res.potentials[0][:, None] + res.potentials[1][None, :]
res = ot.solve(Mx, wa, wb, reg=0.05, reg_type="entropy")
out["entropy_plan"], out["entropy_value"] = res.plan, res.value
res = ot.solve(Mx, wa, wb, reg=0.05, unbalanced=0.5, tol=1e-12, max_iter=100000)
out["unb_plan"], out["unb_value"] = res.plan, res.value
out["unb_linear"] = res.value_linear
out["unb_uv"] = res.potentials[0][:, None] + res.potentials[1][None, :]
res = ot.solve_sample(xa, xb, wa, wb, reg=1.0)
out["sample_plan"], out["sample_value"] = res.plan, res.value
res = ot.solve_sample(xa, xb, wa, wb, reg=1.0, reg_type="entropy")
out["sample_entropy"] = res.value
res = ot.solve_sample(xa, xb, wa, wb, reg=1.0, metric="euclidean")
out["sample_euclidean"] = res.value_linear
"""


def run_script(module: Any) -> dict[str, Any]:
    """Execute :data:`SCRIPT` with ``ot`` bound to ``module``; its ``out`` dictionary."""
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                  # POT's entropy-reference notice
        exec(SCRIPT, {"ot": module, "out": out})
    return out


def test_a_pot_script_runs_unchanged_with_the_same_answers() -> None:
    want, got = run_script(pot), run_script(bot)
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-9, err_msg=key)


def test_forbidden_pairs_are_exactly_zero_as_in_pot() -> None:
    rng = np.random.default_rng(4)
    n, m = 25, 30
    M = rng.random((n, m))
    M[rng.random((n, m)) < 0.4] = np.inf                    # 40% of the pairs forbidden
    M[np.arange(n), np.arange(n)] = rng.random(n)           # every row and column keeps one
    M[:, n:][np.arange(m - n), np.arange(m - n)] = 0.5
    a, b = np.full(n, 1 / n), np.full(m, 1 / m)
    for reg in (0.5, 0.05):
        P = bot.sinkhorn(a, b, M, reg, stopThr=1e-11, numItermax=20000)
        Q = pot.sinkhorn(a, b, M, reg, stopThr=1e-11, numItermax=20000, method="sinkhorn_log")
        assert (P[np.isinf(M)] == 0).all()
        np.testing.assert_allclose(P, Q, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(P.sum(1), a, rtol=1e-9)
        loss = bot.sinkhorn2(a, b, M, reg, stopThr=1e-11, numItermax=20000)
        assert loss == pytest.approx(float(np.sum(Q[np.isfinite(M)] * M[np.isfinite(M)])),
                                     rel=1e-6)
    M[3] = np.inf
    with pytest.raises(bigsink.InputError, match=r"row 3 is forbidden.*a\[3\]"):
        bot.sinkhorn(a, b, M, 0.1)


def test_histograms_in_columns_give_one_loss_each() -> None:
    rng = np.random.default_rng(5)
    M = rng.random((20, 15))
    a = np.full(20, 1 / 20)
    B = rng.random((15, 3))
    B /= B.sum(0)
    got = bot.sinkhorn2(a, B, M, 0.1)
    want = pot.sinkhorn2(a, B, M, 0.1, stopThr=1e-12)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, want, rtol=1e-7)
    np.testing.assert_allclose(bot.sinkhorn(a, B, M, 0.1), want, rtol=1e-7)


def test_reference_measure_warmstart_and_log() -> None:
    rng = np.random.default_rng(6)
    M = rng.random((12, 10))
    a, b = rng.random(12) + 0.1, rng.random(10) + 0.1
    a, b = a / a.sum(), b / b.sum()
    c = rng.random((12, 10)) + 0.5
    got, log = bot.sinkhorn_unbalanced(a, b, M, 0.1, 2.0, c=c, stopThr=1e-12, log=True)
    want, plog = pot.sinkhorn_unbalanced(a, b, M, 0.1, 2.0, c=c, stopThr=1e-13,
                                         numItermax=100000, log=True)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert log["total_cost"] == pytest.approx(plog["total_cost"], rel=1e-6)
    assert log["cost"] == pytest.approx(plog["cost"], rel=1e-6)
    np.testing.assert_allclose(log["logu"][:, None] + log["logv"][None, :],
                               plog["logu"][:, None] + plog["logv"][None, :], atol=1e-6)
    assert bot.sinkhorn_unbalanced2(a, b, M, 0.1, 2.0, c=c, stopThr=1e-12,
                                    returnCost="total") == pytest.approx(plog["total_cost"],
                                                                         rel=1e-6)
    # a warm start from POT's own scalings is already converged
    _, wlog = bot.sinkhorn(a, b, M, 0.1, log=True)
    _, again = bot.sinkhorn(a, b, M, 0.1, log=True, warmstart=(wlog["log_u"], wlog["log_v"]))
    assert again["niter"] <= 2 and {"err", "niter", "u", "v", "log_u", "log_v"} <= set(again)


def test_lazy_solve_sample_matches_the_dense_one() -> None:
    rng = np.random.default_rng(7)
    xa, xb = rng.random((300, 2)), rng.random((200, 2))
    for kw in ({}, {"reg_type": "entropy"}, {"unbalanced": 1.0}):
        dense = bot.solve_sample(xa, xb, reg=0.05, tol=1e-10, **kw)
        lazy = bot.solve_sample(xa, xb, reg=0.05, tol=1e-10, lazy=True, batch_size=100, **kw)
        assert lazy.status == "Converged"
        assert lazy.value == pytest.approx(dense.value, rel=1e-7, abs=1e-10), kw
        assert lazy.value_linear == pytest.approx(dense.value_linear, rel=1e-7), kw
        np.testing.assert_allclose(lazy.lazy_plan[10:20], dense.plan[10:20], rtol=1e-6,
                                   atol=1e-14)
        np.testing.assert_allclose(lazy.plan, dense.plan, rtol=1e-6, atol=1e-14)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: bot.solve(np.ones((3, 3))), "reg: bigsink solves entropic OT.*ot.emd"),
    (lambda: bot.sinkhorn([], [], np.ones((3, 3)), 0.1, method="bogus"), "method='bogus'"),
    (lambda: bot.solve(np.ones((3, 3)), reg=1.0, reg_type="L2"), "reg_type='L2'"),
    (lambda: bot.solve(np.ones((3, 3)), reg=1.0, plan_init=np.ones((3, 3))), "plan_init"),
    (lambda: bot.solve_sample(np.ones((3, 2)), np.ones((3, 2)), reg=1.0, metric="cosine"),
     "metric='cosine'"),
    (lambda: bot.sinkhorn([.5, .5], [1.0], np.ones((2, 2)), 0.1), "b: expected 2 weights"),
    (lambda: bot.sinkhorn([], [], [[0.0, np.nan]], 0.1), r"M\[0, 1\] = nan"),
    (lambda: bot.sinkhorn_unbalanced([], [], np.ones((2, 2)), 0.1, -1.0), "reg_m"),
])
def test_what_bigsink_ot_cannot_do_is_said(call: Any, match: str) -> None:
    with pytest.raises(bigsink.InputError, match=match):
        call()


def test_non_convergence_is_the_status_and_a_warning() -> None:
    rng = np.random.default_rng(8)
    M = rng.random((50, 50))
    with pytest.warns(bigsink.ConvergenceWarning):
        res = bot.solve(M, reg=1e-3, max_iter=3)
    assert res.status.startswith("Not converged")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bot.sinkhorn2([], [], M, 1e-3, numItermax=3)      # warn=False, as in POT
