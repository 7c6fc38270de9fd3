"""The same solve on the CPU and on a GPU with CuPy; skipped politely without a GPU.

    python examples/gpu.py [--small] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import bigsink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="a CI-sized problem")
    parser.add_argument("--out", type=Path, default=Path("."), help="where to write the report")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
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
