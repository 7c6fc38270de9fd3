"""The ``bigsink`` command line.

Each subcommand is a ``_cmd_<name>(args) -> int`` function registered in :func:`build_parser`.
Errors from bad input (missing paths, bad shapes, an unreachable scheduler) print one clear
line to stderr and exit with status 2; other failures, and a solve that did not converge, exit
with status 1 (set ``BIGSINK_TRACEBACK=1`` to see the traceback of a failure).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import ConvergenceWarning, InputError

__all__ = ["build_parser", "main"]


def _cmd_warmup(args: argparse.Namespace) -> int:
    """Compile every numba kernel into the cache (:mod:`bigsink.warmup`)."""
    from .warmup import cache_dir, warmup

    def report(name: str, seconds: float) -> None:
        if not args.quiet:
            print(f"  {name:<34} {seconds:7.2f} s", flush=True)

    took = warmup(report)
    print(f"warmup: {len(took)} paths in {sum(took.values()):.1f} s; kernels cached in "
          f"{cache_dir()}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """Build a real problem (two 2-D point clouds), solve it, print a summary."""
    from . import PointCloudCost, solve

    _check_plot(args.plot)
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


def _load_npy(name: str, path: str) -> np.ndarray:
    """An .npy file as an array, or an InputError naming the argument and the path."""
    if not os.path.isfile(path):
        raise InputError(f"{name}: no such file {path!r}.")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{name}: could not read {path!r} as a .npy array: {exc}") from None


def _parse_pair(name: str, text: str) -> tuple[int, int]:
    """``"R,C"`` as two positive ints."""
    try:
        r, c = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{name}: expected two integers 'R,C', got {text!r}.") from None
    return r, c


def _scheduler_error(address: str, exc: BaseException) -> InputError:
    """The one-line error for a scheduler that cannot be reached."""
    return InputError(
        f"could not reach the Dask scheduler at {address!r} ({type(exc).__name__}: {exc}). "
        "Start one (cluster/local.sh) or check --scheduler."
    )


def _check_plot(path: str | None) -> None:
    """``--plot`` checked before any work: a .png in an existing directory."""
    if not path:
        return
    where = os.path.abspath(path)
    if not os.path.isdir(os.path.dirname(where)):
        raise InputError(f"--plot: the directory {os.path.dirname(where)!r} does not exist; "
                         "create it or choose another path.")


def _storage_options(text: str | None) -> dict[str, Any] | None:
    """``--storage-options``: a JSON object (fsspec's options for a URL), or None."""
    if not text:
        return None
    try:
        options = json.loads(text)
    except ValueError as exc:
        raise InputError(f"--storage-options: expected a JSON object, got {text!r} "
                         f"({exc}).") from None
    if not isinstance(options, dict):
        raise InputError(f"--storage-options: expected a JSON object, got {text!r}.")
    return options


def _cmd_cost(args: argparse.Namespace) -> int:
    """Write a Zarr cost matrix from two point clouds stored as .npy files."""
    from .io import write_cost

    x = _load_npy("X", args.x)
    y = _load_npy("Y", args.y)
    scale: Any = args.scale
    if scale not in (None, "max"):
        try:
            scale = float(scale)
        except ValueError:
            raise InputError(f"--scale: expected a number or 'max', got {scale!r}.") from None
    chunks = _parse_pair("--chunks", args.chunks) if args.chunks else None
    t0 = time.perf_counter()
    try:
        cost = write_cost(x, y, args.out, args.metric, p=args.p, scale=scale, chunks=chunks,
                          dtype=args.dtype, client=args.scheduler, overwrite=args.overwrite,
                          progress=False if args.quiet else None,
                          storage_options=_storage_options(args.storage_options))
    except (OSError, TimeoutError) as exc:
        if args.scheduler:
            raise _scheduler_error(args.scheduler, exc) from None
        raise
    if not args.quiet:
        print(f"wrote {cost.path}: shape {cost.shape}, chunks {cost.grid.block_shape}, "
              f"{cost.dtype}, range [{cost.attrs['min']:g}, {cost.attrs['max']:g}] "
              f"({time.perf_counter() - t0:.2f} s)")
    return 0


def _jsonable(x: Any) -> Any:
    """Floats and arrays as JSON values (non-finite floats as strings)."""
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float | np.floating):
        x = float(x)
        return x if math.isfinite(x) else str(x)
    return x


def _summary_json(result: Any) -> dict[str, Any]:
    """A result's summary as JSON-able numbers (``solve --json``, ``show --json``)."""
    me = result.marginal_error
    return {
        "converged": bool(result.converged), "n_iter": int(result.n_iter),
        "eps": result.eps, "eps_stages": _jsonable(result.eps_stages), "tol": result.tol,
        "transport_cost": _jsonable(result.transport_cost),
        "reg_cost": _jsonable(result.reg_cost), "dual_cost": _jsonable(result.dual_cost),
        "marginal_error": {"row": _jsonable(me.row), "col": _jsonable(me.col)},
        "mass": _jsonable(result.mass), "seconds": result.seconds,
        "placement": result.placement, "executor": result.executor,
        "active_fraction": result.active_fraction,
        "truncation_bound": result.truncation_bound,
    }


def _cmd_show(args: argparse.Namespace) -> int:
    """Print the summary of a saved result (``bigsink solve --out``)."""
    from .result import load_result

    result = load_result(args.result)
    if args.json:
        print(json.dumps({**_summary_json(result), "path": os.path.abspath(args.result)}))
    else:
        print(result.summary())
    return 0


def _cmd_solve(args: argparse.Namespace) -> int:
    """Solve from a Zarr (or .npy) cost and .npy marginals; save the result."""
    from . import solve
    from .costs import as_cost

    cost = as_cost(args.cost, _storage_options(args.storage_options))
    a = _load_npy("--a", args.a) if args.a else None
    b = _load_npy("--b", args.b) if args.b else None
    out = os.path.abspath(args.out)
    if os.path.lexists(out) and not args.overwrite:
        raise InputError(f"--out: {out!r} already exists; choose another path or --overwrite.")
    if not os.path.isdir(os.path.dirname(out)):
        raise InputError(f"--out: the directory {os.path.dirname(out)!r} does not exist.")
    if args.resume and not args.checkpoint:
        raise InputError("--resume needs --checkpoint PATH (the checkpoint to resume from).")
    _check_plot(args.plot)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = solve(cost, a, b, eps=args.eps, tol=args.tol, max_iter=args.max_iter,
                           client=args.scheduler, progress=False if args.quiet else None,
                           checkpoint=args.checkpoint, resume=args.resume,
                           device=args.device, truncate=args.truncate, theta=args.theta,
                           verify=args.verify, rho=args.rho, eps_scaling=args.eps_scaling)
    except (OSError, TimeoutError) as exc:
        if args.scheduler:
            raise _scheduler_error(args.scheduler, exc) from None
        raise
    path = result.save(out, overwrite=args.overwrite)
    if args.plot:
        from . import plot

        plot.convergence(result, path=args.plot)
    if args.json:
        print(json.dumps({**_summary_json(result), "out": path, "scheduler": args.scheduler}))
    elif not args.quiet:
        print(result.summary())
        print(f"  saved to         {path}")
    if not result.converged:                     # said even with --quiet or --json
        me = result.marginal_error
        print(f"bigsink solve: NOT converged in {result.n_iter} iterations: marginal error "
              f"row {np.max(me.row):.3g}, col {np.max(me.col):.3g} > tol {result.tol:g} "
              f"(saved to {path}); raise --max-iter or eps.", file=sys.stderr)
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
    from .costs import as_cost

    cost = as_cost(args.cost, _storage_options(args.storage_options))
    _check_plot(args.plot)
    t0 = time.perf_counter()
    res = sweep(                    # --out is kept as batches complete, checked before any work
        cost, _load_pairs(args.pairs), eps, tol=args.tol, max_iter=args.max_iter,
        batch_size=args.batch_size, address=args.address, num_cpus=args.num_cpus,
        num_gpus=args.num_gpus, progress=not args.quiet, save_potentials=args.potentials,
        overwrite=args.overwrite, out=args.out, resume=args.resume,
    )
    if args.plot:
        from . import plot

        plot.sweep(res, path=args.plot)
    n_conv = int(sum(r.converged for r in res.rows))
    print(f"sweep: {len(res)} rows ({len(res.errors)} failed, {n_conv} converged) in "
          f"{time.perf_counter() - t0:.2f} s -> {args.out}")
    for r in res.errors[:5]:
        print(f"  pair {r.pair} eps {r.eps:g}: {r.error}", file=sys.stderr)
    return 1 if res.errors else 0


def _cmd_bench(args: argparse.Namespace) -> int:
    """Solve the benchmark problems with bigsink and POT; print a table, write JSON."""
    from .bench import BenchConfig, format_report, parse_list, run_bench, write_json

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
        methods=(None if args.pot_methods is None
                 else parsed(args.pot_methods, str, "pot-methods")),  # type: ignore[arg-type]
        device=args.device, rho=args.rho, cloud=args.cloud,
        dims=parsed(args.dims, int, "dims"),  # type: ignore[arg-type]
        truncate=args.truncate, multiscale=args.multiscale,
    )
    report = run_bench(cfg, log=None if args.quiet else lambda s: print(s, flush=True))
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
    return 0


class _Defaults(argparse.HelpFormatter):
    """Help that ends each option's line with its default, where it has a telling one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (default in (None, False, argparse.SUPPRESS) or "default" in text
                or action.option_strings == [] or isinstance(default, bool)):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="bigsink", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"bigsink {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log the library's decisions on stderr (executor, eps schedule, "
                        "kernel placement, fallbacks, scratch files); -vv for debug")
    sub = parser.add_subparsers(dest="command", required=True)
    add = functools.partial(sub.add_parser, formatter_class=_Defaults)

    demo = add("demo", help="solve an embedded example problem and print a summary")
    demo.add_argument("--n", type=int, default=1000, help="points per side (default 1000)")
    demo.add_argument("--eps", type=float, default=1e-3, help="regularisation (default 1e-3)")
    demo.add_argument("--tol", type=float, default=1e-6, help="L1 marginal tolerance")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--plot", default="demo-convergence.png", metavar="FILE.png",
                      help="save the convergence plot here ('' for none)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_cmd_demo)

    warm = add(
        "warmup", help="compile the numba kernels into their cache (e.g. when building an "
        "image), so that the first solve does not pay for it")
    warm.add_argument("--quiet", action="store_true", help="only the one-line summary")
    warm.set_defaults(func=_cmd_warmup)

    cost = add("cost", help="write a Zarr cost matrix from two .npy point clouds")
    cost.add_argument("x", metavar="X.npy", help="source points (n, d) or (n,)")
    cost.add_argument("y", metavar="Y.npy", help="target points (m, d) or (m,)")
    cost.add_argument("--out", required=True,
                      help="Zarr directory to create, or a URL such as s3://bucket/C.zarr")
    cost.add_argument("--metric", default="sqeuclidean",
                      choices=("sqeuclidean", "euclidean", "minkowski"))
    cost.add_argument("--p", type=float, default=2.0, help="Minkowski exponent")
    cost.add_argument("--scale", default=None, help="divide C by this number, or 'max'")
    cost.add_argument("--chunks", default=None, metavar="R,C", help="chunk shape")
    cost.add_argument("--dtype", default="float32", help="stored dtype (default float32)")
    cost.add_argument("--scheduler", default=None, metavar="ADDR",
                      help="Dask scheduler address (default: local threads)")
    cost.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    cost.add_argument("--storage-options", default=None, metavar="JSON",
                      help="fsspec options for a URL, e.g. '{\"anon\": false}' or "
                      "'{\"client_kwargs\": {\"endpoint_url\": \"http://...\"}}'")
    cost.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    cost.set_defaults(func=_cmd_cost)

    solve = add("solve", help="solve from a Zarr (or .npy) cost; save the result")
    solve.add_argument("cost", metavar="COST", help="Zarr array directory/URL or .npy file")
    solve.add_argument("--a", default=None, metavar="A.npy", help="row weights (default uniform)")
    solve.add_argument("--b", default=None, metavar="B.npy",
                       help="column weights (default uniform)")
    solve.add_argument("--eps", required=True,
                       help="regularisation: a number, or relative to C as std:0.05 / mean:0.05")
    solve.add_argument("--tol", type=float, default=1e-6, help="L1 marginal tolerance")
    solve.add_argument("--max-iter", type=int, default=10_000, help="iteration budget")
    solve.add_argument("--rho", type=float, default=math.inf,
                       help="KL marginal penalty: unbalanced transport (inf: balanced)")
    solve.add_argument("--eps-scaling", default=None, action=argparse.BooleanOptionalAction,
                       help="solve a decreasing sequence of eps (default: auto, when "
                       "spread(C)/eps is large)")
    solve.add_argument("--scheduler", default=None, metavar="ADDR",
                       help="Dask scheduler address (default: in-process threads)")
    solve.add_argument("--storage-options", default=None, metavar="JSON",
                       help="fsspec options for a URL, e.g. '{\"anon\": false}' or "
                      "'{\"client_kwargs\": {\"endpoint_url\": \"http://...\"}}'")
    solve.add_argument("--device", default=None, choices=["cpu", "gpu"],
                       help="gpu: strips run on CuPy (each Dask worker uses its own GPU)")
    solve.add_argument("--truncate", default=None, action=argparse.BooleanOptionalAction,
                       help="certified block truncation (default: auto, where it pays)")
    solve.add_argument("--theta", type=float, default=None,
                       help="the truncation's L1 budget per pass (default tol/10)")
    solve.add_argument("--verify", action="store_true",
                       help="with truncation, end with one exact pass over every block")
    solve.add_argument("--checkpoint", default=None, metavar="PATH", help="checkpoint group")
    solve.add_argument("--resume", action="store_true", help="resume from --checkpoint")
    solve.add_argument("--out", required=True, help="result directory (Zarr group) to create")
    solve.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    solve.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    solve.add_argument("--plot", metavar="FILE.png", help="save the convergence plot here")
    solve.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    solve.set_defaults(func=_cmd_solve)
    show = add("show", help="print the summary of a saved result")
    show.add_argument("result", metavar="RESULT", help="a result directory (solve --out)")
    show.add_argument("--json", action="store_true", help="print it as JSON")
    show.set_defaults(func=_cmd_show)

    sw = add(
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
    sw.add_argument("--storage-options", default=None, metavar="JSON",
                    help="fsspec options for a URL COST (credentials, endpoint_url)")
    sw.add_argument("--tol", type=float, default=1e-9, help="L1 marginal tolerance")
    sw.add_argument("--max-iter", type=int, default=10_000, help="iterations per solve")
    sw.add_argument("--batch-size", type=int, default=None, help="pairs per task")
    sw.add_argument("--num-cpus", type=int, default=None, help="CPUs of a new local Ray")
    sw.add_argument("--num-gpus", type=int, default=0, help="GPUs (one actor each)")
    sw.add_argument("--potentials", default=None, metavar="ZARR",
                    help="also write potentials to this Zarr group")
    sw.add_argument("--overwrite", action="store_true",
                    help="replace an existing --out and --potentials")
    sw.add_argument("--resume", action="store_true",
                    help="continue the sweep whose table is at --out: solve only its missing "
                    "or failed rows")
    sw.add_argument("--plot", metavar="FILE.png", help="save a plot of the results here")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.set_defaults(func=_cmd_sweep)
    bench = add("bench", help="time bigsink against POT on the benchmark problem")
    bench.add_argument("--n", default="10000", help="sizes n = m, comma-separated")
    bench.add_argument("--eps", default="1e-2", help="regularisations, comma-separated")
    bench.add_argument("--dtype", default="float64", help="float64 and/or float32")
    bench.add_argument("--executor", default="local",
                       help="local (in-process threads), dask (a 2-worker LocalCluster), zarr "
                       "(streamed from a Zarr store in process) or dask-zarr (that store "
                       "streamed by the LocalCluster's workers)")
    bench.add_argument("--tol", type=float, default=1e-6, help="L1 marginal tolerance")
    bench.add_argument("--max-iter", type=int, default=10_000, help="iteration cap per solver")
    bench.add_argument("--pot-max-seconds", type=float, default=60.0,
                       help="wall-time cap per POT run (per-iteration time from a capped run)")
    bench.add_argument("--pot-methods", default=None,
                       help="POT methods, comma-separated (default: sinkhorn,sinkhorn_log,"
                       "sinkhorn_stabilized; with --rho: sinkhorn,sinkhorn_stabilized,"
                       "sinkhorn_translation_invariant)")
    bench.add_argument("--rho", type=float, default=math.inf,
                       help="KL marginal penalty: unbalanced problems (default inf: balanced)")
    bench.add_argument("--no-pot", action="store_true", help="bigsink only")
    bench.add_argument("--no-reference", action="store_true",
                       help="compare <P,C> to bigsink's result instead of a tighter solve")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--cloud", action="store_true",
                       help="point clouds: one pass of the fused on-the-fly kernels against "
                            "the materialised path, per size, dtype and --dims")
    bench.add_argument("--dims", default="2,3,10,64",
                       help="point dimensions of --cloud, --truncate and --multiscale, "
                            "comma-separated")
    bench.add_argument("--truncate", action="store_true",
                       help="point clouds: certified truncation against the dense log domain "
                            "(time to --tol, blocks read per iteration; --no-reference: "
                            "truncated only)")
    bench.add_argument("--multiscale", action="store_true",
                       help="point clouds: multiscale solves beside the dense path capped "
                            "at a few iterations (--no-reference: multiscale only)")
    bench.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                       help="gpu: CuPy arrays, bound from the measured device bandwidth")
    bench.add_argument("--json", default=None, help="write the report as JSON to this path")
    bench.add_argument("--quiet", action="store_true", help="only the final table")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bigsink`` console script."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(stream=sys.stderr, format="bigsink: %(name)s: %(message)s")
        logging.getLogger("bigsink").setLevel(logging.DEBUG if args.verbose > 1 else logging.INFO)
    try:
        return int(args.func(args))
    except InputError as exc:
        print(f"bigsink {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bigsink {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a failure, not bad input: one line, no traceback
        if os.environ.get("BIGSINK_TRACEBACK"):
            raise
        msg = " ".join(str(exc).split())
        print(f"bigsink {args.command}: failed: {type(exc).__name__}: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
