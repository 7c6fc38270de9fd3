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


def _load_pairs(path: str) -> object:
    """Read a PAIRS.npz: ``a`` (P, n) and ``b`` (P, m) row-paired; or ``a`` (n,) and ``b``
    (P, m) for one source against P targets; or ``sources`` (S, n), ``targets`` (T, m) and
    ``index`` (P, 2) of (source id, target id)."""
    from .sweep import Pairs

    try:
        data = np.load(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"--pairs: cannot read {path!r} as .npz ({exc}).") from None
    if not hasattr(data, "files"):
        raise InputError(f"--pairs: {path!r} is not an .npz archive (use numpy.savez).")
    keys = set(data.files)
    if {"sources", "targets", "index"} <= keys:
        return Pairs(tuple(data["sources"]), tuple(data["targets"]), data["index"])
    if {"a", "b"} <= keys:
        a, b = data["a"], data["b"]
        if a.ndim == 1 and b.ndim == 2:
            return Pairs.one_vs_many(a, b)
        if a.ndim == 2 and b.ndim == 2 and a.shape[0] == b.shape[0]:
            return Pairs.from_sequence(list(zip(a, b, strict=True)))
        raise InputError(
            f"--pairs: {path!r} has a {a.shape} and b {b.shape}; expected a (P, n) with "
            "b (P, m), or a (n,) with b (P, m)."
        )
    raise InputError(
        f"--pairs: {path!r} holds arrays {sorted(keys)}; expected 'a' and 'b', or 'sources', "
        "'targets' and 'index'."
    )


def _cmd_sweep(args: argparse.Namespace) -> int:
    """Solve every pair of PAIRS.npz at every eps on Ray; write one row per (pair, eps)."""
    from .sweep import sweep

    try:
        eps = [float(e) for e in args.eps.split(",") if e.strip()]
    except ValueError:
        raise InputError(f"--eps: expected comma-separated numbers, got {args.eps!r}.") from None
    cost: object = args.cost
    if args.cost.endswith(".npy"):
        try:
            cost = np.load(args.cost)
        except (OSError, ValueError) as exc:
            raise InputError(f"COST: cannot read {args.cost!r} as .npy ({exc}).") from None
    t0 = time.perf_counter()
    res = sweep(
        cost, _load_pairs(args.pairs), eps, tol=args.tol, max_iter=args.max_iter,
        batch_size=args.batch_size, address=args.address, num_cpus=args.num_cpus,
        num_gpus=args.num_gpus, progress=not args.quiet, save_potentials=args.potentials,
    )
    res.save(args.out)
    n_conv = int(sum(r.converged for r in res.rows))
    print(f"sweep: {len(res)} rows ({len(res.errors)} failed, {n_conv} converged) in "
          f"{time.perf_counter() - t0:.2f} s -> {args.out}")
    for r in res.errors[:5]:
        print(f"  pair {r.pair} eps {r.eps:g}: {r.error}", file=sys.stderr)
    return 1 if res.errors else 0


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

    sw = sub.add_parser(
        "sweep", help="solve many (a, b) pairs at several eps on Ray, one row per (pair, eps)",
        description="PAIRS.npz holds 'a' (P, n) and 'b' (P, m) (row k is pair k), or 'a' (n,) "
        "and 'b' (P, m) (one source against P targets), or 'sources' (S, n), 'targets' (T, m) "
        "and an integer 'index' (P, 2) of (source id, target id).",
    )
    sw.add_argument("cost", metavar="COST", help="cost matrix: a .npy file or a Zarr array path")
    sw.add_argument("--pairs", required=True, metavar="PAIRS.npz", help="the weight pairs")
    sw.add_argument("--eps", required=True, help="comma-separated eps values, e.g. 0.1,0.01")
    sw.add_argument("--out", required=True, metavar="RESULTS",
                    help="results table: .csv, or .parquet (needs pyarrow)")
    sw.add_argument("--address", default=None, help="join this Ray cluster (host:port)")
    sw.add_argument("--tol", type=float, default=1e-9, help="L1 marginal tolerance")
    sw.add_argument("--max-iter", type=int, default=10_000, help="iterations per solve")
    sw.add_argument("--batch-size", type=int, default=None, help="pairs per task")
    sw.add_argument("--num-cpus", type=int, default=None, help="CPUs of a new local Ray")
    sw.add_argument("--num-gpus", type=int, default=0, help="GPUs (one actor each)")
    sw.add_argument("--potentials", default=None, metavar="ZARR",
                    help="also write potentials to this Zarr group")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.set_defaults(func=_cmd_sweep)
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
