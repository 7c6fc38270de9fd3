"""Every script in examples/ (the benchmark scripts too) runs at its small size, with the
``--small --out DIR`` every example takes, and writes its output files."""

from __future__ import annotations

import json
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
    "bench_sweep.py": ["bench_sweep.json"],          # a benchmark: its figures
}


def test_every_example_is_listed() -> None:
    """issue 25: bench_sweep.py was left out here and rejected ``--small --out``."""
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py")
                     if not p.name.startswith("_"))                  # _common.py: shared code
    assert scripts == sorted(OUTPUTS)


@pytest.mark.parametrize("script", sorted(OUTPUTS))
def test_example_runs(script: str, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / script), "--small", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    for name in OUTPUTS[script]:
        assert (tmp_path / name).exists(), name
        assert (tmp_path / name).is_dir() or (tmp_path / name).stat().st_size > 0, name
        if name.endswith(".json"):
            json.loads((tmp_path / name).read_text())                # whole, valid JSON

