"""Run the CUDA C of :mod:`bigsink.kernels.cuda` on the CPU: g++ with a small shim, one std::thread
per CUDA thread and a std::barrier for ``__syncthreads``, blocks one after another.

Only for tests on machines without a GPU: it checks the kernels' own source (indexing,
reductions, -inf handling) against the generic kernels, through the same host code that
runs them on CuPy (:func:`bigsink.kernels.cuda.sinkhorn_with`).
"""

from __future__ import annotations

import ctypes
import functools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bigsink.kernels import cuda as _cuda

SHIM = r"""
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>
struct dim3_ { int x, y, z; };
thread_local dim3_ threadIdx;
dim3_ blockIdx, blockDim, gridDim;
static std::barrier<>* g_bar = nullptr;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
inline void __syncthreads() { g_bar->arrive_and_wait(); }
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
using std::min;
template <class... A>
void emulate(void (*k)(A...), int gx, int gy, int gz, int bx, A... a) {
    gridDim = {gx, gy, gz};
    blockDim = {bx, 1, 1};
    for (int z = 0; z < gz; ++z) for (int y = 0; y < gy; ++y) for (int x = 0; x < gx; ++x) {
        blockIdx = {x, y, z};
        std::barrier<> bar(bx);
        g_bar = &bar;
        std::vector<std::thread> ts;
        for (int t = 0; t < bx; ++t)
            ts.emplace_back([&, t] { threadIdx = {t, 0, 0}; k(a...); });
        for (auto& th : ts) th.join();
    }
}
"""

_CT = {np.int32: ctypes.c_int, np.int64: ctypes.c_longlong, np.float64: ctypes.c_double}


@functools.cache
def available() -> bool:
    """Whether g++ with C++20 ``<barrier>`` is at hand (probed once by compiling a stub)."""
    if shutil.which("g++") is None:
        return False
    probe = "#include <barrier>\nint main() { std::barrier<> b(1); b.arrive_and_wait(); }\n"
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "probe.cpp"
        src.write_text(probe)
        done = subprocess.run(["g++", "-std=c++20", "-pthread", str(src), "-o",
                               str(Path(d) / "probe")], capture_output=True)
    return done.returncode == 0


def _params(src: str, name: str) -> list[str]:
    """Parameter names of kernel ``name`` in ``src``."""
    return [p.split()[-1].lstrip("*") for p in _signature(src, name).split(",") if p.strip()]


def _signature(src: str, name: str) -> str:
    """Parameter list of kernel ``name`` in ``src``, comments removed."""
    body = re.search(rf"void {name}\((.*?)\)\s*{{", re.sub(r"//[^\n]*", "", src), re.S)
    assert body is not None
    return body.group(1)


def build(where: Path) -> Any:
    """Compile every kernel for float32 and float64 costs into one shared library."""
    parts = [SHIM]
    for dtype in ("float32", "float64"):
        for name in _cuda.SOURCES:
            src = _cuda.kernel_source(name, dtype)
            src = src.replace("#pragma unroll 4", "")
            ns = f"k_{name}_{dtype}"
            sig = _signature(src, name)
            plain = src.replace('extern "C" ', "")
            names = ", ".join(_params(src, name))
            parts.append(
                f"namespace {ns} {{\n{plain}\n"
                f'extern "C" void run_{name}_{dtype}(int gx, int gy, int gz, int bx, {sig}) '
                f"{{ emulate({name}, gx, gy, gz, bx, {names}); }}\n}}\n"
            )
    cpp = where / "emulated.cpp"
    cpp.write_text("\n".join(parts))
    lib = where / "emulated.so"
    subprocess.run(["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", str(cpp),
                    "-o", str(lib)], check=True, capture_output=True)
    return ctypes.CDLL(str(lib))


def launcher(lib: Any) -> _cuda.Launch:
    """A ``launch`` for :func:`bigsink.kernels.cuda.sinkhorn_with` running the emulated kernels."""

    def launch(name: str, dtype: str, grid: tuple[int, ...], block: int,
               args: tuple[Any, ...]) -> None:
        conv: list[Any] = [ctypes.c_int(grid[0]), ctypes.c_int(grid[1]),
                           ctypes.c_int(grid[2]), ctypes.c_int(block)]
        for a in args:
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous or a.ndim == 2
                conv.append(ctypes.c_void_p(a.ctypes.data))
            else:
                conv.append(_CT[type(a)](a))
        getattr(lib, f"run_{name}_{dtype}")(*conv)

    return launch
