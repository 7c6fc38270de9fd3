"""Plots render to PNG files of the expected size from real results."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import bigsink
from bigsink import plot

matplotlib = pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def result(r3_problem) -> bigsink.SinkhornResult:
    C, a, b = r3_problem
    return bigsink.solve(C, a, b, eps=1e-3, tol=1e-8)


def test_convergence_plot(result, tmp_path) -> None:
    plot.convergence(result, path=tmp_path / "conv.png")
    assert _png_size(tmp_path / "conv.png") == (640, 400)


def test_plan_plot_and_downsampling(result, r3_problem, tmp_path) -> None:
    plot.plan(result, path=tmp_path / "plan.png", max_side=30)
    assert _png_size(tmp_path / "plan.png") == (640, 400)
    P = result.plan()
    small = plot._downsample(P, 30)
    assert small.shape == (25, 25)                    # 100 rows in blocks of 4
    assert small.sum() == pytest.approx(P.sum(), rel=1e-12)


def test_plan_plot_from_a_zarr_plan(result, tmp_path) -> None:
    P = result.plan()
    z = zarr.create_array(str(tmp_path / "plan.zarr"), shape=P.shape, chunks=(7, 100), dtype="f8")
    z[:] = P
    z.attrs["bigsink_plan"] = True
    image = plot._downsample_zarr(tmp_path / "plan.zarr", 30)
    np.testing.assert_allclose(image, plot._downsample(P, 30), rtol=1e-12)
    plot.plan(result, tmp_path / "plan.zarr", path=tmp_path / "zplan.png", max_side=30)
    assert _png_size(tmp_path / "zplan.png") == (640, 400)


def test_sweep_plot(tmp_path) -> None:
    rows = [{"eps": e, "transport_cost": 0.1 * k + e, "pair": k} for e in (0.1, 0.01)
            for k in range(4)]
    plot.sweep(rows, path=tmp_path / "sweep.png")
    assert _png_size(tmp_path / "sweep.png") == (640, 400)


def test_plots_leave_pyplot_and_the_backend_alone(result, tmp_path) -> None:
    """issue 25: plots switched the backend to Agg (breaking Jupyter's inline display) and
    never closed their figures (25 calls: "More than 20 figures"). Each call now leaves
    the backend and pyplot's open figures as they were, and writes a non-blank PNG."""
    import matplotlib.image
    import matplotlib.pyplot as plt

    backend, figures = matplotlib.get_backend(), plt.get_fignums()
    rows = [{"eps": e, "transport_cost": 0.1 * k + e, "pair": k} for e in (0.1, 0.01)
            for k in range(4)]
    for k in range(25):
        plot.convergence(result, path=tmp_path / "c.png")
        plot.plan(result, path=tmp_path / "p.png", max_side=30)
        plot.sweep(rows, path=tmp_path / "s.png")
        assert matplotlib.get_backend() == backend and plt.get_fignums() == figures, k
    for name in ("c.png", "p.png", "s.png"):
        image = matplotlib.image.imread(tmp_path / name)
        assert image.shape[:2] == (400, 640) and float(image[..., :3].std()) > 0.01
