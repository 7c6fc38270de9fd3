"""The same solve on the CPU and on a GPU with CuPy; skipped politely without a GPU.

    python examples/gpu.py [--small] [--out DIR]
"""

from __future__ import annotations

import json

import numpy as np
from _common import example_args

import bigsink


def main() -> None:
    args = example_args(__doc__)
    report = args.out / "gpu_report.json"

    n = 500 if args.small else 20_000
    rng = np.random.default_rng(0)
    cost = bigsink.PointCloudCost(rng.random((n, 2)), rng.random((n, 2)), scale=2.0,
                                  dtype="float32")
    cpu = bigsink.solve(cost, eps=1e-2, tol=1e-6)
    print(f"cpu: {cpu.n_iter} iterations, {cpu.seconds:.2f} s, <P,C> = {cpu.transport_cost:.8g}")
    try:
        gpu = bigsink.solve(cost, eps=1e-2, tol=1e-6, device="gpu")
    except bigsink.InputError as exc:                # no CuPy or no GPU here
        print(f"gpu: skipped ({exc})")
        report.write_text(json.dumps({"gpu": None, "reason": str(exc),
                                      "cpu_seconds": cpu.seconds}))
        return
    print(f"gpu: {gpu.n_iter} iterations, {gpu.seconds:.2f} s, <P,C> = {gpu.transport_cost:.8g}")
    report.write_text(json.dumps({"gpu_seconds": gpu.seconds, "cpu_seconds": cpu.seconds,
                                  "rel_diff": abs(gpu.transport_cost / cpu.transport_cost - 1)}))


if __name__ == "__main__":
    main()
