"""bigsink as a differentiable loss: gradients against finite differences and POT's
potentials, and the PyTorch / JAX wrappers in a short training loop (skipped without them)."""

from __future__ import annotations

import itertools

import numpy as np
import ot
import pytest

import bigsink
from bigsink.executors import LocalExecutor

TIGHT = dict(tol=1e-13, max_iter=200_000, progress=False)


def _clouds(seed: int = 0, n: int = 40, m: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 2)), rng.random((m, 2)) + 0.3


def _value(x: np.ndarray, y: np.ndarray, a=None, b=None, metric="sqeuclidean", p=2.0) -> float:
    cost = bigsink.PointCloudCost(x, y, metric, p=p)
    return float(bigsink.solve(cost, a, b, eps=0.05, **TIGHT).reg_cost)


@pytest.mark.parametrize(("metric", "p"), [("sqeuclidean", 2.0), ("euclidean", 2.0),
                                            ("minkowski", 1.5), ("minkowski", 3.0)])
def test_point_gradients_match_finite_differences(metric: str, p: float) -> None:
    x, y = _clouds(1)
    res = bigsink.solve(bigsink.PointCloudCost(x, y, metric, p=p), eps=0.05, **TIGHT)
    gx, gy = res.grad_x(executor=LocalExecutor(threads=2)), res.grad_y()
    h = 1e-6
    for pts, grad, which in ((x, gx, 0), (y, gy, 1)):
        for i, k in ((3, 0), (11, 1)):
            up, down = pts.copy(), pts.copy()
            up[i, k] += h
            down[i, k] -= h
            args = ((up, y), (down, y)) if which == 0 else ((x, up), (x, down))
            fd = (_value(*args[0], metric=metric, p=p) - _value(*args[1], metric=metric, p=p))
            assert grad[i, k] == pytest.approx(fd / (2 * h), rel=1e-5, abs=1e-8)


def test_weight_gradients_match_finite_differences_and_pot() -> None:
    x, y = _clouds(2)
    rng = np.random.default_rng(3)
    a, b = rng.random(40), rng.random(30)
    a[7] = 0.0                                                      # a zero weight too
    a, b = a / a.sum(), b / b.sum()
    cost = bigsink.PointCloudCost(x, y)
    res = bigsink.solve(cost, a, b, eps=0.05, **TIGHT)
    ga, gb = res.grad_a(), res.grad_b()
    assert np.isfinite(ga).all() and abs(ga.sum()) < 1e-10        # centred, finite at a_7 = 0
    h = 1e-6
    for grad, w, side in ((ga, a, 0), (gb, b, 1)):
        d = np.zeros_like(w)
        d[2], d[5] = 1.0, -1.0                                       # along the simplex
        up, down = ((w + h * d, w - h * d))
        args = ((up, b), (down, b)) if side == 0 else ((a, up), (a, down))
        fd = (_value(x, y, *args[0]) - _value(x, y, *args[1])) / (2 * h)
        assert grad @ d == pytest.approx(fd, rel=1e-6)
    # POT: its log-domain potentials, f = eps log u, in the KL form f - eps log a, centred
    C = cost.rows(0, 40)
    keep = a > 0
    log = ot.sinkhorn(a[keep], b, C[keep], 0.05, method="sinkhorn_log", stopThr=1e-13,
                      numItermax=100_000, log=True)[1]
    F = log["log_u"] * 0.05 - 0.05 * np.log(a[keep])
    np.testing.assert_allclose(ga[keep] - ga[keep].mean(), F - F.mean(), atol=1e-9)
    raw = res.grad_a(centred=False)
    np.testing.assert_allclose(raw - raw.mean(), ga, atol=1e-12)


def test_divergence_gradients_match_finite_differences() -> None:
    x, y = _clouds(4, 30, 25)
    div = bigsink.divergence(x, y, eps=0.05, **TIGHT)
    gx = div.grad_x()
    h = 1e-6
    up, down = x.copy(), x.copy()
    up[4, 1] += h
    down[4, 1] -= h
    fd = (bigsink.divergence(up, y, eps=0.05, **TIGHT).value
          - bigsink.divergence(down, y, eps=0.05, **TIGHT).value) / (2 * h)
    assert gx[4, 1] == pytest.approx(fd, rel=1e-5)


def _training_loop(step, x0: np.ndarray, y: np.ndarray) -> None:
    """Gradient steps on the source points move them onto the targets: the loss falls and
    the distance between the clouds' centroids shrinks five-fold."""
    losses = []
    x = x0
    for _ in range(15):
        value, grad = step(x)
        losses.append(value)
        x = x - 0.25 * len(x) * grad     # grad_i ~ (2/n)(x_i - T(x_i)): half way to T
    assert all(b < a for a, b in itertools.pairwise(losses))
    gap = np.linalg.norm(x.mean(0) - y.mean(0))
    assert gap < 0.2 * np.linalg.norm(x0.mean(0) - y.mean(0))


def test_torch_loss_moves_one_cloud_onto_another() -> None:
    torch = pytest.importorskip("torch")
    from bigsink.autodiff import torch_sinkhorn_loss

    x0, y = _clouds(5, 50, 40)
    yt = torch.tensor(y)

    def step(x: np.ndarray) -> tuple[float, np.ndarray]:
        xt = torch.tensor(x, requires_grad=True)
        loss = torch_sinkhorn_loss(xt, yt, eps=0.01, tol=1e-9)
        loss.backward()
        return float(loss.detach()), xt.grad.numpy()

    _training_loop(step, x0, y)
    xt = torch.tensor(x0, requires_grad=True)
    at = torch.full((50,), 1 / 50, dtype=torch.float64, requires_grad=True)
    torch_sinkhorn_loss(xt, yt, at, eps=0.05, tol=1e-12).backward()
    res = bigsink.solve(bigsink.PointCloudCost(x0, y), eps=0.05, tol=1e-12, progress=False)
    np.testing.assert_allclose(xt.grad.numpy(), res.grad_x(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(at.grad.numpy(), res.grad_a(centred=False), rtol=1e-9)


def test_jax_loss_moves_one_cloud_onto_another() -> None:
    jax = pytest.importorskip("jax")
    from bigsink.autodiff import jax_sinkhorn_loss

    jax.config.update("jax_enable_x64", True)
    x0, y = _clouds(6, 50, 40)
    value_and_grad = jax.value_and_grad(lambda x: jax_sinkhorn_loss(x, y, eps=0.01, tol=1e-9))

    def step(x: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = value_and_grad(jax.numpy.asarray(x))
        return float(value), np.asarray(grad)

    _training_loop(step, x0, y)
    res = bigsink.solve(bigsink.PointCloudCost(x0, y), eps=0.05, tol=1e-12, progress=False)
    grad = jax.grad(lambda x: jax_sinkhorn_loss(x, y, eps=0.05, tol=1e-12))(x0)
    np.testing.assert_allclose(np.asarray(grad), res.grad_x(), rtol=1e-9, atol=1e-12)
