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
    return 0 if result.converged else 1


def _cmd_bench(args: argparse.Namespace) -> int:
    """Solve the benchmark problems with bigsink and POT; print a table, write JSON."""
    from .bench import BenchConfig, format_table, parse_list, run_bench, write_json

    def parsed(text: str, kind: type, name: str) -> tuple[object, ...]:
        try:
            return parse_list(text, kind)
        except ValueError:
            raise InputError(f"--{name}: expected a comma-separated list, got {text!r}.") from None

    cfg = BenchConfig(
        sizes=parsed(args.n, int, "n"), eps=parsed(args.eps, float, "eps"),  # type: ignore[arg-type]
        dtypes=parsed(args.dtype, str, "dtype"), executor=args.executor,  # type: ignore[arg-type]
        tol=args.tol, max_iter=args.max_iter, pot_max_seconds=args.pot_max_seconds,
        pot=not args.no_pot, reference=not args.no_reference, seed=args.seed,
        methods=parsed(args.pot_methods, str, "pot-methods"),  # type: ignore[arg-type]
    )
    report = run_bench(cfg, log=None if args.quiet else lambda s: print(s, flush=True))
    print(format_table(report))
    if args.json:
        write_json(report, args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="bigsink", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="solve an embedded example problem and print a summary")
    demo.add_argument("--n", type=int, default=1000, help="points per side (default 1000)")
    demo.add_argument("--eps", type=float, default=1e-3, help="regularisation (default 1e-3)")
    demo.add_argument("--tol", type=float, default=1e-6, help="L1 marginal tolerance")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_cmd_demo)

    bench = sub.add_parser("bench", help="time bigsink against POT on the benchmark problem")
    bench.add_argument("--n", default="10000", help="sizes n = m, comma-separated")
    bench.add_argument("--eps", default="1e-2", help="regularisations, comma-separated")
    bench.add_argument("--dtype", default="float64", help="float64 and/or float32")
    bench.add_argument("--executor", default="local", choices=["local", "dask", "zarr"],
                       help="in-process threads, a 2-worker LocalCluster, or Zarr streaming")
    bench.add_argument("--tol", type=float, default=1e-6, help="L1 marginal tolerance")
    bench.add_argument("--max-iter", type=int, default=10_000, help="iteration cap per solver")
    bench.add_argument("--pot-max-seconds", type=float, default=60.0,
                       help="wall-time cap per POT run (per-iteration time from a capped run)")
    bench.add_argument("--pot-methods", default="sinkhorn,sinkhorn_log,sinkhorn_stabilized")
    bench.add_argument("--no-pot", action="store_true", help="bigsink only")
    bench.add_argument("--no-reference", action="store_true",
                       help="compare <P,C> to bigsink's result instead of a tighter solve")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--json", default=None, help="write the report as JSON to this path")
    bench.add_argument("--quiet", action="store_true", help="only the final table")
    bench.set_defaults(func=_cmd_bench)
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
