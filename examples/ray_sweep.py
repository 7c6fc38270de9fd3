"""One source against many targets at several eps on Ray: a results table and a plot.

    python examples/ray_sweep.py [--small] [--out DIR]
"""

from __future__ import annotations

import numpy as np
from _common import example_args

import bigsink
from bigsink import plot


def main() -> None:
    args = example_args(__doc__)

    n, n_targets = (100, 12) if args.small else (2000, 200)
    grid = np.linspace(0, 1, n)
    C = (grid[:, None] - grid[None, :]) ** 2                     # 1-D squared distance
    source = np.exp(-((grid - 0.3) ** 2) / 0.01)
    means = np.linspace(0.2, 0.8, n_targets)                     # targets drift away
    targets = np.exp(-((grid[None, :] - means[:, None]) ** 2) / 0.01)
    pairs = bigsink.Pairs.one_vs_many(source / source.sum(),
                                      targets / targets.sum(axis=1, keepdims=True))

    results = bigsink.sweep(C, pairs, eps=[1e-1, 1e-2, 1e-3], tol=1e-8, num_cpus=2)
    results.save(args.out / "ray_sweep.csv", overwrite=True)
    plot.sweep(results, path=args.out / "ray_sweep.png")
    for row in results.rows[:: max(1, len(results.rows) // 6)]:
        print(f"pair {row.pair:3d}  eps {row.eps:7.0e}  <P,C> {row.transport_cost:.6f}  "
              f"iters {row.n_iter}")
    print(f"{len(results.rows)} rows -> {args.out / 'ray_sweep.csv'}, {args.out / 'ray_sweep.png'}")


if __name__ == "__main__":
    main()
