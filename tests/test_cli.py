"""The ``bigsink`` command line, run as a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = [sys.executable, "-m", "bigsink.cli"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``bigsink ARGS`` and capture its output."""
    return subprocess.run([*BIN, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_demo_prints_a_summary_and_saves_a_plot(tmp_path: Path) -> None:
    out = run("demo", "--n", "300", "--eps", "0.01", "--quiet", "--plot", "conv.png", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for word in ("converged", "transport_cost", "reg_cost", "marginal error", "iterations"):
        assert word in out.stdout
    assert (tmp_path / "conv.png").read_bytes()[:4] == b"\x89PNG"
