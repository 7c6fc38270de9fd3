"""The ``bigsink`` command line.

Each subcommand is a ``_cmd_<name>(args) -> int`` function registered in :func:`build_parser`.
Errors from bad input print one clear line to stderr and exit with status 2; other failures
exit with status 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from .errors import InputError

__all__ = ["build_parser", "main"]


def _cmd_demo(args: argparse.Namespace) -> int:
    """Build a real problem (two 2-D point clouds), solve it, print a summary."""
    from . import PointCloudCost, solve

    rng = np.random.default_rng(args.seed)
    x, y = rng.random((args.n, 2)), rng.random((args.n, 2))
    cost = PointCloudCost(x, y, "sqeuclidean", scale=2.0)  # C in [0, 1]
    t0 = time.perf_counter()
    result = solve(cost, eps=args.eps, tol=args.tol, progress=not args.quiet)
    print(f"demo: n = m = {args.n}, 2-D uniform points, squared Euclidean cost / 2, "
          f"uniform weights ({time.perf_counter() - t0:.2f} s)")
    print(result.summary())
    if args.plot:
        from . import plot

        plot.convergence(result, path=args.plot)
        print(f"  convergence plot {args.plot}")
    return 0 if result.converged else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="bigsink", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="solve an embedded example problem and print a summary")
    demo.add_argument("--n", type=int, default=1000, help="points per side (default 1000)")
    demo.add_argument("--eps", type=float, default=1e-3, help="regularisation (default 1e-3)")
    demo.add_argument("--tol", type=float, default=1e-6, help="L1 marginal tolerance")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--plot", default="demo-convergence.png", metavar="FILE.png",
                      help="save the convergence plot here ('' for none)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bigsink`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except InputError as exc:
        print(f"bigsink {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
