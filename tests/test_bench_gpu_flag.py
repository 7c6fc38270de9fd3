"""``bigsink bench --device gpu`` where CuPy is missing: a clear error before any work."""

from __future__ import annotations

import importlib.util

import pytest

from bigsink import bench
from bigsink.cli import main
from bigsink.errors import InputError

no_cupy = pytest.mark.skipif(importlib.util.find_spec("cupy") is not None,
                             reason="CuPy is installed here")


@no_cupy
def test_bench_device_gpu_without_cupy_is_an_input_error(capsys) -> None:
    rc = main(["bench", "--device", "gpu", "--n", "50", "--no-pot", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "bigsink bench: error:" in err and "needs CuPy: pip install cupy-cuda12x" in err
    with pytest.raises(InputError, match="needs CuPy"):
        bench.run_bench(bench.BenchConfig(sizes=(50,), device="gpu", pot=False))


def test_bench_device_is_validated() -> None:
    with pytest.raises(InputError, match="device must be 'cpu' or 'gpu'"):
        bench.BenchConfig(device="tpu")
    with pytest.raises(InputError, match="use --executor local or zarr"):
        bench.run_bench(bench.BenchConfig(sizes=(50,), device="gpu", executor="dask"))


def test_bench_parser_has_device_flag() -> None:
    from bigsink.cli import build_parser

    args = build_parser().parse_args(["bench", "--device", "gpu"])
    assert args.device == "gpu"
    assert build_parser().parse_args(["bench"]).device == "cpu"


@no_cupy
def test_solve_device_gpu_without_cupy(tmp_path, capsys) -> None:
    import numpy as np

    np.save(tmp_path / "c.npy", np.ones((3, 3)))
    rc = main(["solve", str(tmp_path / "c.npy"), "--eps", "0.1", "--device", "gpu",
               "--out", str(tmp_path / "r"), "--quiet"])
    assert rc == 2 and "needs CuPy" in capsys.readouterr().err
