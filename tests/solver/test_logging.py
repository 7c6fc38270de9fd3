"""The library's decisions go to logging.getLogger("bigsink"): executor, eps schedule,
kernel placement, a scratch file for a store's kernel, and the scaling path's fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import bigsink
from bigsink.solver import steps


def messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.name}: {r.getMessage()}" for r in caplog.records)


def test_a_solve_logs_its_decisions(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.random((300, 2)), rng.random((200, 2))
    store = bigsink.write_cost(x, y, tmp_path / "C.zarr", chunks=(100, 200), dtype="float64",
                               progress=False)
    with caplog.at_level(logging.INFO, logger="bigsink"):
        bigsink.solve(store, eps=1e-3, progress=False, resident_kernel=True)
    text = messages(caplog)
    assert "bigsink.solver: executor: local" in text
    assert "bigsink.solver: eps schedule: " in text and "eps-scaling auto" in text
    assert "bigsink.solver: placement: " in text
    assert "bigsink.scratch: scratch file " in text           # a store's kernel: mapped file
    assert all(r.levelno <= logging.INFO for r in caplog.records)


def test_the_fallback_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A primary step that breaks down hands over to its backup, and says so."""

    class Broken:
        closed = False

        def step(self, f, g, omega):
            return None

        def close(self) -> None:
            self.closed = True

    class Plain:
        def step(self, f, g, omega):
            return f, g

        def close(self) -> None:
            pass

    fb = steps.Fallback(Broken(), Plain())   # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="bigsink"):
        out = fb.step(np.zeros(2), np.zeros(3), 1.0)
    assert out is not None and fb.primary.closed                  # type: ignore[attr-defined]
    assert "Broken broke down; Plain goes on" in messages(caplog)


def test_the_library_is_silent_unless_configured(capsys: pytest.CaptureFixture[str]) -> None:
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("bigsink").handlers)
    bigsink.solve(np.random.default_rng(1).random((20, 20)), eps=0.1, progress=False)
    assert capsys.readouterr().err == ""
