"""Two point clouds, one in-memory solve, the three costs, and a plot of the plan.

    python examples/dense_numpy.py [--small] [--out DIR]
"""

from __future__ import annotations

import numpy as np
from _common import example_args

import bigsink
from bigsink import plot


def main() -> None:
    args = example_args(__doc__)

    n = 200 if args.small else 2000
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2))                      # a Gaussian blob ...
    y = rng.random((n, 2)) * 4 - 2                   # ... sent onto a square
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    C /= C.max()

    result = bigsink.solve(C, eps=1e-3, tol=1e-8)
    print(result.summary())
    print(f"<P,C> = {result.transport_cost:.6g}   <P,C> + eps KL = {result.reg_cost:.6g}   "
          f"dual = {result.dual_cost:.6g}")

    plot.plan(result, path=args.out / "dense_plan.png")
    plot.convergence(result, path=args.out / "dense_convergence.png")
    print(f"wrote {args.out / 'dense_plan.png'} and {args.out / 'dense_convergence.png'}")


if __name__ == "__main__":
    main()
