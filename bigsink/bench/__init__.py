"""``bigsink bench``: bigsink against POT on the same problems, in one run.

:func:`run_bench` runs :func:`~bigsink.bench.cpu.run_bench_cpu` (any executor) or, with
``device="gpu"``, :func:`~bigsink.bench.gpu.run_bench_gpu`; both report through
:mod:`~bigsink.bench.common` (the table, the JSON, the configuration). See
``docs/benchmarks.md`` for the figures and the commands that produce them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .common import (
    EXECUTORS,
    POT_METHODS,
    POT_UNBALANCED_METHODS,
    BenchConfig,
    bound_seconds,
    format_table,
    machine_figures,
    make_problem,
    parse_list,
    write_json,
)
from .cpu import run_bench_cpu
from .gpu import run_bench_gpu

__all__ = [
    "EXECUTORS", "POT_METHODS", "POT_UNBALANCED_METHODS", "BenchConfig", "bound_seconds",
    "format_table", "machine_figures", "make_problem", "parse_list", "run_bench", "write_json",
]


def run_bench(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-ready dict (``machine``, ``config``, ``runs``)."""
    return (run_bench_gpu if cfg.device == "gpu" else run_bench_cpu)(cfg, log)
