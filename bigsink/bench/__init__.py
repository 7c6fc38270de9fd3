"""``bigsink bench``: bigsink against POT on the same problems, in one run.

:func:`run_bench` runs :func:`~bigsink.bench.cpu.run_bench_cpu` (any executor), with
``device="gpu"`` :func:`~bigsink.bench.gpu.run_bench_gpu`, with ``cloud=True`` the
point-cloud kernels' :func:`~bigsink.bench.cloud.run_bench_cloud`, or with
``truncate=True`` certified truncation against the dense log domain
(:func:`~bigsink.bench.truncate.run_bench_truncate`); all report through
:mod:`~bigsink.bench.common` (the table, the JSON, the configuration). See
``docs/benchmarks.md`` for the figures and the commands that produce them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .cloud import format_cloud_table, run_bench_cloud
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
from .truncate import format_truncate_table, run_bench_truncate

__all__ = [
    "EXECUTORS", "POT_METHODS", "POT_UNBALANCED_METHODS", "BenchConfig", "bound_seconds",
    "format_report", "format_table", "machine_figures", "make_problem", "parse_list",
    "run_bench", "write_json",
]


def run_bench(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-ready dict (``machine``, ``config``, ``runs``)."""
    if cfg.cloud:
        return run_bench_cloud(cfg, log)
    if cfg.truncate or cfg.multiscale:
        return run_bench_truncate(cfg, log)
    return (run_bench_gpu if cfg.device == "gpu" else run_bench_cpu)(cfg, log)


def format_report(report: dict[str, Any]) -> str:
    """The report of :func:`run_bench` as a text table (its kind's own)."""
    if "truncate" in report:
        return format_truncate_table(report)
    return format_cloud_table(report) if "cloud" in report else format_table(report)
