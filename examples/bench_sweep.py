"""Sweep throughput: one source against many targets on a shared cost, three ways.

    python examples/bench_sweep.py [--small] [--out DIR] [--n 2000 --targets 200 --eps 0.05]

1. ``bigsink.sweep`` on a local Ray instance (batched solves, K columns per pass over C),
   timed from a started Ray (its start-up, a few seconds, is reported apart);
2. a loop of ``bigsink.solve``, one target at a time;
3. POT ``ot.sinkhorn(a, B, M, reg)`` with B holding all targets as columns.

Problem: 2-D uniform points, squared Euclidean cost divided by its maximum (C in [0, 1]),
a random source and random targets. Every method runs to the same L1 marginal tolerance;
figures are pairs per second and the largest relative difference of ``<P, C>`` from the loop.
Timings on a shared machine are noisy. The figures are printed and written to
``DIR/bench_sweep.json``; ``--small`` (the CI size, as every example takes) is 100 points and
8 targets unless ``--n`` / ``--targets`` say otherwise.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import bigsink


def make_problem(n: int, targets: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """C (n, n) in [0, 1], a source a (n,) and targets B (T, n)."""
    rng = np.random.default_rng(seed)
    x, y = rng.random((n, 2)), rng.random((n, 2))
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)                  # (n, n)
    C /= C.max()
    a = rng.random(n) + 0.5
    B = rng.random((targets, n)) + 0.5
    return C, a / a.sum(), B / B.sum(axis=1, keepdims=True)


def run(n: int = 2000, targets: int = 200, eps: float = 0.05, tol: float = 1e-6,
        batch_size: int | None = None, num_cpus: int | None = None,
        loop_targets: int | None = None) -> dict[str, Any]:
    """Time the three methods; returns pairs/s for each and the agreement between them.

    ``loop_targets`` times the one-by-one loop on the first targets only (its rate is per
    pair, so a subset measures it; the agreement check covers that subset).
    """
    import ot
    import ray

    C, a, B = make_problem(n, targets)
    t0 = time.perf_counter()
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    t_ray = time.perf_counter() - t0                  # a sweep on a running cluster skips it
    try:
        t0 = time.perf_counter()
        res = bigsink.sweep(C, bigsink.Pairs.one_vs_many(a, B), [eps], tol=tol,
                            batch_size=batch_size, progress=False)
        t_sweep = time.perf_counter() - t0
    finally:
        if started:
            ray.shutdown()
    assert not res.errors, res.errors[0]
    sweep_tc = res.column("transport_cost")
    print(f"ray start: {t_ray:.2f} s; sweep: {t_sweep:.2f} s ({targets / t_sweep:.3g} pairs/s)",
          file=sys.stderr, flush=True)

    L = targets if loop_targets is None else min(targets, loop_targets)
    t0 = time.perf_counter()
    loop_tc = np.array([bigsink.solve(C, a, b, eps=eps, tol=tol, progress=False).transport_cost
                        for b in B[:L]])
    t_loop = time.perf_counter() - t0
    print(f"loop: {t_loop:.2f} s for {L} ({L / t_loop:.3g} pairs/s)", file=sys.stderr,
          flush=True)

    print("pot ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    # with a matrix b, POT returns <P_k, C> for each of its columns (T,)
    pot_tc = np.asarray(ot.sinkhorn(a, B.T, C, eps, stopThr=tol, numItermax=100_000))
    t_pot = time.perf_counter() - t0
    return {
        "n": n, "targets": targets, "eps": eps, "tol": tol,
        "ray_start_s": t_ray, "sweep_s": t_sweep, "loop_s": t_loop, "pot_s": t_pot,
        "loop_targets": L,
        "sweep_pairs_per_s": targets / t_sweep,
        "sweep_pairs_per_s_with_ray_start": targets / (t_sweep + t_ray),
        "loop_pairs_per_s": L / t_loop,
        "pot_pairs_per_s": targets / t_pot,
        "max_rel_diff_loop": float(np.max(np.abs(sweep_tc[:L] - loop_tc) / loop_tc)),
        "max_rel_diff_pot": float(np.max(np.abs(pot_tc[:L] - loop_tc) / loop_tc)),
    }


#: (n, targets) of a full run and of ``--small``.
FULL, SMALL = (2000, 200), (100, 8)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point: ``--small`` and ``--out DIR`` as every example (see
    ``examples/_common.py``), and the benchmark's own sizes."""
    from _common import example_args, example_parser

    p = example_parser(__doc__)
    p.add_argument("--n", type=int, default=None, help=f"points a side ({FULL[0]}; "
                   f"{SMALL[0]} with --small)")
    p.add_argument("--targets", type=int, default=None,
                   help=f"targets ({FULL[1]}; {SMALL[1]} with --small)")
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--num-cpus", type=int, default=None)
    p.add_argument("--loop-targets", type=int, default=None,
                   help="time the one-by-one loop on this many targets only")
    args = example_args(__doc__, p, argv)
    n, targets = SMALL if args.small else FULL
    figures = run(n if args.n is None else args.n,
                  targets if args.targets is None else args.targets, args.eps, args.tol,
                  args.batch_size, args.num_cpus, args.loop_targets)
    text = json.dumps(figures, indent=2)
    (args.out / "bench_sweep.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
