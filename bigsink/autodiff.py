"""bigsink as a differentiable loss in PyTorch and JAX (the only importer of either).

Both wrappers return the regularised OT value ``reg_cost`` between two weighted point
clouds and differentiate it by the envelope theorem (no unrolled iterations): by the
points, ``sum_j P_ij grad_x c(x_i, y_j)`` (:meth:`~bigsink.SinkhornResult.grad_x`); by
the weights, the potentials of the KL form minus eps
(:meth:`~bigsink.SinkhornResult.grad_a` with ``centred=False``: the partial derivative,
whose component along the simplex is the centred one). Arrays cross to NumPy and back by
DLPack (no copy on the CPU); the solve itself runs where bigsink runs (``executor``,
``client``, ``device`` as for :func:`bigsink.solve`, through ``options``). Gradients are
computed in the backward pass, only for the inputs that need one (a pass over C each).

Install the framework yourself (``pip install torch`` or ``pip install jax``); bigsink
does not depend on either.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .costs import PointCloudCost
from .errors import InputError
from .result import SinkhornResult
from .solver import solve

__all__ = ["jax_sinkhorn_loss", "torch_sinkhorn_loss"]


def _solve(x: Any, y: Any, a: Any, b: Any,
           eps: float, metric: str, p: float, scale: float, options: dict[str, Any]
           ) -> SinkhornResult:
    """The balanced solve behind both wrappers (float64 points and weights)."""
    if "rho" in options or "rho_a" in options or "rho_b" in options:
        raise InputError("the differentiable losses are balanced: drop rho, rho_a, rho_b.")
    cost = PointCloudCost(x, y, metric, p=p, scale=scale)
    return solve(cost, a, b, eps=eps, progress=False, **options)


def _grads(res: SinkhornResult, need: tuple[bool, bool, bool, bool]) -> list[Any]:
    """The gradients of ``reg_cost`` by x, y, a, b that ``need`` asks for (None else)."""
    gx = gy = None
    if need[0] or need[1]:
        gx, gy = res.grad_x(), res.grad_y()                          # one pass for both
    return [gx, gy, res.grad_a(centred=False) if need[2] else None,
            res.grad_b(centred=False) if need[3] else None]


def torch_sinkhorn_loss(
    x: Any, y: Any, a: Any = None, b: Any = None, *, eps: float,
    metric: str = "sqeuclidean", p: float = 2.0, scale: float = 1.0, **options: Any,
) -> Any:
    """``reg_cost`` of the clouds ``x`` (n, d), ``y`` (m, d) with weights ``a`` (n,), ``b``
    (m,) (uniform when None) as a PyTorch scalar, differentiable by all four
    (``torch.autograd.Function``; see the module docstring)."""
    import torch

    class _Loss(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, xt: Any, yt: Any, at: Any, bt: Any) -> Any:
            xa, ya, aa, ba = (None if t is None
                              else np.from_dlpack(t.detach().cpu().contiguous())
                              for t in (xt, yt, at, bt))             # DLPack: no copy on CPU
            res = _solve(xa, ya, aa, ba, eps, metric, p, scale, options)
            ctx.result, ctx.like = res, xt
            return torch.as_tensor(float(res.reg_cost), dtype=xt.dtype, device=xt.device)

        @staticmethod
        def backward(ctx: Any, grad_out: Any) -> Any:
            need = tuple(bool(v) for v in ctx.needs_input_grad)
            like = ctx.like
            return tuple(
                None if g is None else grad_out * torch.from_dlpack(
                    np.ascontiguousarray(g)).to(dtype=like.dtype, device=like.device)
                for g in _grads(ctx.result, need))                    # type: ignore[arg-type]

    return _Loss.apply(x, y, a, b)


def jax_sinkhorn_loss(
    x: Any, y: Any, a: Any = None, b: Any = None, *, eps: float,
    metric: str = "sqeuclidean", p: float = 2.0, scale: float = 1.0, **options: Any,
) -> Any:
    """``reg_cost`` of the clouds ``x``, ``y`` with weights ``a``, ``b`` (uniform when None)
    as a JAX scalar, differentiable by all four (``jax.custom_vjp`` around a
    ``jax.pure_callback``; see the module docstring)."""
    import jax
    import jax.numpy as jnp

    n, m = x.shape[0], y.shape[0]
    a = jnp.full((n,), 1.0 / n, dtype=x.dtype) if a is None else a
    b = jnp.full((m,), 1.0 / m, dtype=x.dtype) if b is None else b
    shapes = tuple(jax.ShapeDtypeStruct(v.shape, v.dtype) for v in (x, y, a, b))
    scalar = jax.ShapeDtypeStruct((), x.dtype)

    def host(xs: Any, ys: Any, as_: Any, bs: Any) -> tuple[Any, ...]:
        """Solve on the host: the value and the four gradients."""
        res = _solve(np.asarray(xs, np.float64), np.asarray(ys, np.float64),
                     np.asarray(as_, np.float64), np.asarray(bs, np.float64), eps, metric, p,
                     scale, options)
        grads = _grads(res, (True, True, True, True))
        return (np.asarray(res.reg_cost, dtype=scalar.dtype),
                *(np.asarray(gr, dtype=s.dtype) for gr, s in zip(grads, shapes, strict=True)))

    def both(*args: Any) -> tuple[Any, ...]:
        return jax.pure_callback(host, (scalar, *shapes), *args)

    @jax.custom_vjp
    def loss(xs: Any, ys: Any, as_: Any, bs: Any) -> Any:
        return both(xs, ys, as_, bs)[0]

    def forward(xs: Any, ys: Any, as_: Any, bs: Any) -> tuple[Any, Any]:
        value, *grads = both(xs, ys, as_, bs)
        return value, tuple(grads)

    def backward(grads: Any, cotangent: Any) -> tuple[Any, ...]:
        return tuple(cotangent * gr for gr in grads)

    loss.defvjp(forward, backward)
    return loss(x, y, a, b)
