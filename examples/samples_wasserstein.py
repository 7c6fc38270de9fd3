"""W_p between sample sets: the entropic estimate, with the exact 1-D value beside it.

    python examples/samples_wasserstein.py [--small] [--out DIR]
"""

from __future__ import annotations

import json

import numpy as np
from _common import example_args

import bigsink


def main() -> None:
    args = example_args(__doc__)

    n = 300 if args.small else 3000
    rng = np.random.default_rng(1)
    x, y = rng.beta(1, 2, n), rng.beta(2, 2, n)
    tol = 1e-5                                                   # L1 marginal error
    rows = []
    for p in (1, 2):
        exact = bigsink.wasserstein_1d_exact(x, y, p=p)
        for eps in (1e-1, 3e-2, 1e-2):
            est = bigsink.wasserstein(x, y, p=p, eps=eps, tol=tol)
            deb = bigsink.wasserstein(x, y, p=p, eps=eps, tol=tol, debias=True)
            rows.append({"p": p, "eps": eps, "entropic": est.value, "debiased": deb.value,
                         "exact": exact})
            print(f"W_{p}^{p}: eps {eps:6.0e}  entropic {est.value:.6f}  debiased "
                  f"{deb.value:.6f}  exact {exact:.6f}")

    # n-D samples: no closed form for the samples, so compare with POT on the same samples:
    # the exact discrete W_2^2 (ot.emd2) and POT's entropic <P, C> (ot.sinkhorn2).
    d, k, eps = 3, n // 3, 0.1
    xs, ys = rng.normal(size=(k, d)), rng.normal(size=(k, d)) + 0.5
    # the self-terms (x, x), (y, y) of the debiased value converge slowly after eps-scaling
    # (auto here; eps_scaling=False is faster for them): a looser tol keeps this quick
    est = bigsink.wasserstein(xs, ys, p=2, eps=eps, tol=1e-4)
    deb = bigsink.wasserstein(xs, ys, p=2, eps=eps, tol=1e-4, debias=True)
    nd = {"d": d, "n": k, "eps": eps, "entropic": est.value, "debiased": deb.value}
    print(f"{d}-D Gaussians ({k} samples each), W_2^2 at eps {eps:g}: entropic "
          f"{est.value:.5f}  debiased {deb.value:.5f}")
    try:
        import ot
    except ImportError:
        print("  (install POT to compare: pip install pot)")
    else:
        M = ((xs[:, None, :] - ys[None, :, :]) ** 2).sum(-1)    # (k, k) squared distances
        w = np.full(k, 1.0 / k)
        nd["pot_emd2"] = float(ot.emd2(w, w, M))
        nd["pot_sinkhorn2"] = float(ot.sinkhorn2(w, w, M, eps, method="sinkhorn_log",
                                                 stopThr=1e-9, numItermax=100_000))
        print(f"  POT on the same samples: exact discrete W_2^2 (emd2) {nd['pot_emd2']:.5f}, "
              f"entropic <P,C> (sinkhorn2) {nd['pot_sinkhorn2']:.5f}")
    (args.out / "samples_wasserstein.json").write_text(json.dumps({"1d": rows, "nd": nd},
                                                                  indent=1))

if __name__ == "__main__":
    main()
