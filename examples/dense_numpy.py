"""Two point clouds, one in-memory solve, the three costs, and a plot of the plan.

    python examples/dense_numpy.py [--small] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import bigsink
from bigsink import plot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="a CI-sized problem")
    parser.add_argument("--out", type=Path, default=Path("."), help="where to write figures")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

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
