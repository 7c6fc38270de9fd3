"""Plots render to PNG files of the expected size from real results, leave pyplot alone,
show a point cloud's plan in an order where its structure shows, and place a sweep's points
at their pairs."""

from __future__ import annotations

import random

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


def _image(fig) -> np.ndarray:
    """The array a plan figure shows."""
    return np.asarray(fig.axes[0].images[0].get_array(), dtype=np.float64)


def _near_diagonal(image: np.ndarray, width: float = 0.1) -> float:
    """Share of the image's mass within a band of ``width`` (of the side) on the diagonal."""
    i, j = np.indices(image.shape)
    band = np.abs(i / image.shape[0] - j / image.shape[1]) <= width / 2
    return float(image[band].sum() / image.sum())


def _monotone_clouds(d: int, n: int = 200, seed: int = 1) -> bigsink.PointCloudCost:
    """Two clouds in random order whose optimal map is near a monotone (affine) one:
    ``y`` is ``x`` under a symmetric positive definite map, shuffled and jittered."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, d))
    A = np.array([[1.5, 0.3], [0.3, 0.8]])[:d, :d]
    y = (x @ A + 0.5)[rng.permutation(n)] + 0.01 * rng.normal(size=(n, d))
    return bigsink.PointCloudCost(x, y)


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("max_side", [400, 50])
def test_plan_of_point_clouds_is_ordered_to_a_diagonal(d: int, max_side: int) -> None:
    """issue 25: the heatmap of unsorted point clouds was noise (rows and columns as given:
    ~10% of the mass near the diagonal). By default a point cloud's columns now go along the
    targets' first principal axis and its rows by their barycentric targets: a near-monotone
    map is a diagonal, also when the plan is block-summed."""
    cloud = _monotone_clouds(d)
    r = bigsink.solve(cloud, eps=1e-3, tol=1e-4, progress=False)
    ordered = _image(plot.plan(r, max_side=max_side))
    given = _image(plot.plan(r, max_side=max_side, order="given"))
    assert ordered.shape == given.shape == (min(200, max_side),) * 2
    assert ordered.sum() == pytest.approx(given.sum(), rel=1e-9)          # same mass
    assert _near_diagonal(ordered) > 0.9
    assert _near_diagonal(given) < 0.3
    np.testing.assert_allclose(given, plot._downsample(r.plan(), max_side), rtol=1e-12)
    assert _image(plot.plan(r, max_side=max_side, order="points")) == pytest.approx(ordered)


def test_plan_order_keys_given_and_errors(result, r3_problem) -> None:
    """A dense cost keeps its order under "auto"; sort keys reorder; "points" needs points."""
    P = result.plan()
    np.testing.assert_allclose(_image(plot.plan(result)), P, rtol=1e-12)   # 100 < max_side
    n, m = P.shape
    flipped = _image(plot.plan(result, order=(-np.arange(n), -np.arange(m))))
    np.testing.assert_allclose(flipped, P[::-1, ::-1], rtol=1e-12)
    with pytest.raises(bigsink.InputError, match="point cloud"):
        plot.plan(result, order="points")
    with pytest.raises(bigsink.InputError, match="shape"):
        plot.plan(result, order=(np.arange(3), np.arange(m)))
    with pytest.raises(bigsink.InputError, match="order"):
        plot.plan(result, order="sorted")  # type: ignore[arg-type]


def test_zarr_plan_is_ordered_strip_by_strip(tmp_path) -> None:
    """A written plan of a point-cloud solve is ordered like the in-memory one (read strip by
    strip, twice); a loaded result has no points, and "auto" keeps the plan's order."""
    cloud = _monotone_clouds(2, n=120)
    r = bigsink.solve(cloud, eps=1e-3, tol=1e-4, progress=False)
    path = bigsink.write_plan(r, cloud, tmp_path / "plan.zarr")
    for side in (400, 50):
        np.testing.assert_allclose(_image(plot.plan(r, path, max_side=side)),
                                   _image(plot.plan(r, max_side=side)), rtol=1e-9, atol=1e-15)
    r.save(tmp_path / "r.zarr")
    loaded = bigsink.load_result(tmp_path / "r.zarr")
    np.testing.assert_allclose(_image(plot.plan(loaded, path, max_side=50)),
                               plot._downsample_zarr(path, 50), rtol=1e-12)
    with pytest.raises(bigsink.InputError, match="point cloud"):
        plot.plan(loaded, path, order="points")


def test_batched_zarr_plan_problem_k(r3_problem, tmp_path) -> None:
    """A batched written plan (n, m, K) is drawn for problem ``k`` (it failed to unpack)."""
    C, a, b = r3_problem
    b2 = np.stack([b, b[::-1]], axis=1)                                   # (m, K=2)
    rb = bigsink.solve(C, a, b2, eps=1e-2, progress=False)
    path = bigsink.write_plan(rb, C, tmp_path / "plan.zarr")
    image = _image(plot.plan(rb, path, k=1, max_side=30))
    np.testing.assert_allclose(image, plot._downsample(rb.plan()[:, :, 1], 30), rtol=1e-12)


def _series(fig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{legend label: (x, y)}`` of the lines on a sweep figure's axes."""
    return {line.get_label(): (np.asarray(line.get_xdata(), dtype=float),
                               np.asarray(line.get_ydata(), dtype=float))
            for line in fig.axes[0].get_lines()}


def test_sweep_plot_places_points_at_their_pairs() -> None:
    """issue 25: the sweep plot's x was the row's position within its eps, not its pair: rows
    in another order, or pairs missing from a (resumed, partial) table, went to the wrong x.
    Rows are shuffled here, pairs skip numbers, and each eps series must sit on its pairs."""
    pairs, eps = [3, 7, 12, 20], (0.1, 0.01)
    rows = [{"pair": p, "eps": e, "transport_cost": 10.0 * p + e} for e in eps for p in pairs]
    random.Random(0).shuffle(rows)
    lines = _series(plot.sweep(rows))
    assert sorted(lines) == ["eps = 0.01", "eps = 0.1"]
    for e in eps:
        x, y = lines[f"eps = {e:g}"]
        np.testing.assert_array_equal(x, pairs)
        np.testing.assert_allclose(y, 10.0 * np.asarray(pairs) + e)


def test_sweep_plot_of_sweep_rows_and_named_pairs() -> None:
    """SweepRow objects (a SweepResults) go by their ``pair``; named pairs get one tick
    each, labelled with the name, in sorted order, each point at its own name."""
    from bigsink.sweep import SweepResults, SweepRow

    made = [SweepRow(p, 0, p, e, 10.0 * p + e, 0.0, 1, True, 0.0, 0.0, 0.0)
            for p in (2, 0, 1) for e in (0.1, 0.01)]
    x, y = _series(plot.sweep(SweepResults(tuple(made), (0.1, 0.01))))["eps = 0.1"]
    np.testing.assert_array_equal(x, [0, 1, 2])
    np.testing.assert_allclose(y, [0.1, 10.1, 20.1])

    names = ["b:y", "a:x", "c:z"]
    rows = [{"pair": nm, "eps": 0.1, "transport_cost": float(k)} for k, nm in enumerate(names)]
    fig = plot.sweep(rows)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == sorted(names)
    x, y = _series(fig)["eps = 0.1"]
    for nm, k in zip(names, range(3), strict=True):          # the name's tick holds its row
        assert y[list(x).index(ax.get_xticks()[labels.index(nm)])] == k


def test_sweep_plot(tmp_path) -> None:
    rows = [{"eps": e, "transport_cost": 0.1 * k + e, "pair": k} for e in (0.1, 0.01)
            for k in range(4)]
    plot.sweep(rows, path=tmp_path / "sweep.png")
    assert _png_size(tmp_path / "sweep.png") == (640, 400)


def test_plots_leave_pyplot_and_the_backend_alone(result, tmp_path) -> None:
    """issue 25: plots switched the backend to Agg (breaking Jupyter's inline display) and
    never closed their figures (25 calls: "More than 20 figures"). Every public function of
    bigsink.plot, called 25 times, leaves the backend and pyplot's open figures as they
    were, returns its ``Figure`` and writes a PNG of the figure's size that is not blank."""
    import matplotlib.image
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    cloud = bigsink.solve(_monotone_clouds(2, n=60), eps=1e-2, tol=1e-4, progress=False)
    rows = [{"eps": e, "transport_cost": 0.1 * k + e, "pair": k} for e in (0.1, 0.01)
            for k in range(4)]
    calls = {                                     # name -> (function, call writing the PNG)
        "convergence": lambda p: plot.convergence(result, path=p),
        "plan": lambda p: plot.plan(result, path=p, max_side=30),
        "sweep": lambda p: plot.sweep(rows, path=p),
        "save_figure": lambda p: plot.save_figure(plot.plan(cloud), p),
    }
    assert sorted(calls) == sorted(plot.__all__), "a public plot function is not tested"
    calls["plan of a point cloud"] = lambda p: plot.plan(cloud, path=p)

    backend, figures = matplotlib.get_backend(), plt.get_fignums()
    for k in range(25):
        for name, call in calls.items():
            fig = call(tmp_path / f"{name}.png")
            assert isinstance(fig, Figure), name
            assert matplotlib.get_backend() == backend and plt.get_fignums() == figures, (k, name)
    for name in calls:
        image = matplotlib.image.imread(tmp_path / f"{name}.png")            # (400, 640, 4)
        assert image.shape[:2] == (400, 640), name
        assert float(image[..., :3].var()) > 1e-4, name                        # not blank
