"""Every script in examples/ runs at its small size and writes its output files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: The files each example must produce in its --out directory.
OUTPUTS: dict[str, list[str]] = {
    "dense_numpy.py": ["dense_plan.png", "dense_convergence.png"],
    "gpu.py": ["gpu_report.json"],
    "zarr_dask.py": ["zarr_dask.json", "zarr_dask_result.zarr"],
    "ray_sweep.py": ["ray_sweep.csv", "ray_sweep.png"],
    "swav_assign.py": ["swav_assign.json"],
    "samples_wasserstein.py": ["samples_wasserstein.json"],
}


def test_every_example_is_listed() -> None:
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py")
                     if not p.name.startswith(("bench_", "_")))      # benchmarks, shared code
    assert scripts == sorted(OUTPUTS)


@pytest.mark.parametrize("script", sorted(OUTPUTS))
def test_example_runs(script: str, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / script), "--small", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    for name in OUTPUTS[script]:
        assert (tmp_path / name).exists(), name
        assert (tmp_path / name).is_dir() or (tmp_path / name).stat().st_size > 0, name
