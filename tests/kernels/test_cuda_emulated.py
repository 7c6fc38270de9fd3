"""The CUDA kernels of :mod:`bigsink.kernels.cuda`, run on the CPU (no GPU needed).

Their CUDA C is compiled with g++ under a shim (``tests/cuda_emulator.py``: one thread per
CUDA thread, a barrier for ``__syncthreads``) and driven by the same host code as on CuPy,
with NumPy arrays; outputs are compared with the generic kernels of :mod:`bigsink.kernels`.
The GPU itself is exercised by ``tests/test_gpu.py`` (marked ``gpu``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bigsink.kernels as fused
from bigsink.kernels import cuda as _cuda
from bigsink.kernels import reference as kernels

sys.path.insert(0, str(Path(__file__).parent))
import cuda_emulator


@pytest.fixture(scope="module")
def launch(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not cuda_emulator.available():
        pytest.skip("the CUDA emulator needs g++ with C++20 <barrier>")
    return cuda_emulator.launcher(cuda_emulator.build(tmp_path_factory.mktemp("cuda")))


def _problem(r: int, m: int, K: int, dtype: str, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    C = rng.random((r, m)).astype(dtype)
    a = rng.random((r, K))
    a[1, 0] = 0.0                                       # a zero weight: f = -inf
    g = rng.normal(scale=0.05, size=(m, K))
    g[3, -1] = -np.inf                                  # a zero column weight
    with np.errstate(divide="ignore"):
        log_a = np.log(a)
    return {"C": C, "log_a": log_a, "f_prev": rng.normal(scale=0.05, size=(r, K)), "g": g}


def _close(x: np.ndarray, y: np.ndarray, rtol: float) -> None:
    """Equal to ``rtol`` where finite, and infinite at the same places."""
    assert x.shape == y.shape and x.dtype == np.float64
    np.testing.assert_array_equal(np.isfinite(x), np.isfinite(y))
    fin = np.isfinite(y)
    np.testing.assert_allclose(x[fin], y[fin], rtol=rtol, atol=1e-300)
    np.testing.assert_array_equal(x[~fin], y[~fin])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("r", "m", "K", "tau", "omega"),
                         [(5, 600, 2, 1.0, 1.0), (9, 70, 1, 0.8, 1.4), (3, 300, 1, 0.9, 0.7)])
def test_sinkhorn_strip_matches_generic(launch, dtype, r, m, K, tau, omega) -> None:
    p = _problem(r, m, K, dtype)
    eps = 0.03
    f, (cm, cs) = _cuda.sinkhorn_with(np, launch, p["C"], p["log_a"], p["f_prev"], p["g"],
                                      eps, tau, omega)
    f0, (cm0, cs0) = kernels.sinkhorn_strip(p["C"], 0, p["log_a"], p["f_prev"], p["g"], eps,
                                            tau, omega)
    # float64 C: double exp on both sides; float32 C: the CUDA kernels' exp_poly7 (< 5e-9)
    rtol = 1e-12 if dtype == "float64" else 2e-8
    _close(f, f0, rtol)
    _close(cm, cm0, rtol)
    _close(cs, cs0, rtol)
    assert np.isneginf(f[1, 0]) and cs[3, -1] == 0.0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_evaluate_strip_matches_generic(launch, dtype) -> None:
    p = _problem(6, 333, 2, dtype, seed=1)
    eps = 0.05
    f, _ = kernels.sinkhorn_strip(p["C"], 0, p["log_a"], p["f_prev"], p["g"], eps, 1.0)
    rows, (cols, pc) = _cuda.evaluate_with(np, launch, p["C"], f, p["g"], eps)
    rows0, (cols0, pc0) = kernels.evaluate_strip(p["C"], 0, f, p["g"], eps)
    rtol = 1e-12 if dtype == "float64" else 2e-8
    _close(rows, rows0, rtol)
    _close(cols, cols0, rtol)
    _close(pc, pc0, rtol)


def test_row_strided_strip_and_many_chunks(launch, monkeypatch) -> None:
    """A row-strided view is read in place; the column kernels split rows into chunks."""
    monkeypatch.setattr(_cuda, "TARGET_THREADS", 4 * 50)   # -> 4 chunks of 3, 3, 3, 1 rows
    p = _problem(10, 50, 1, "float64", seed=2)
    big = np.zeros((10, 80))
    big[:, :50] = p["C"]
    view = big[:, :50]                                      # row stride 80, not contiguous
    out = _cuda.sinkhorn_with(np, launch, view, p["log_a"], p["f_prev"], p["g"], 0.02, 1.0)
    ref = kernels.sinkhorn_strip(p["C"], 0, p["log_a"], p["f_prev"], p["g"], 0.02, 1.0)
    _close(out[0], ref[0], 1e-12)
    _close(out[1][1], ref[1][1], 1e-12)
    assert _cuda._chunks(10, 50, 1) == (3, 4)


def test_cuda_sources_compile_with_nvcc(tmp_path) -> None:
    """Where the CUDA toolkit is installed (no GPU needed), the kernels compile to PTX."""
    import shutil

    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not installed")
    for name in _cuda.SOURCES:
        for dtype in ("float32", "float64"):
            cu = tmp_path / f"{name}_{dtype}.cu"
            cu.write_text(_cuda.kernel_source(name, dtype))
            subprocess.run(["nvcc", "-ptx", str(cu), "-o", str(cu.with_suffix(".ptx"))],
                           check=True, capture_output=True)


class _FakeCupyArray:
    """Stands in for a CuPy array in the dispatch test (its type's module is ``cupy``)."""

    __module__ = "cupy"
    ndim = 2
    dtype = np.dtype("float32")
    shape = (2, 3)


def test_fused_sends_cupy_strips_to_the_cuda_kernels(monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(_cuda, "sinkhorn_strip", lambda *a: calls.append("s") or ("f", None))
    monkeypatch.setattr(_cuda, "evaluate_strip", lambda *a: calls.append("e") or ("r", None))
    C = _FakeCupyArray()
    assert fused.sinkhorn_strip(C, 0, None, None, None, 1.0, 1.0)[0] == "f"
    assert fused.evaluate_strip(C, 0, None, None, 1.0)[0] == "r"
    assert calls == ["s", "e"]


def test_import_bigsink_never_imports_cupy() -> None:
    code = ("import sys, bigsink, bigsink.kernels.cuda, bigsink.bench, bigsink.costs; "
            "assert 'cupy' not in sys.modules")
    root = str(Path(__file__).parents[2])
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root,
                   env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"})
