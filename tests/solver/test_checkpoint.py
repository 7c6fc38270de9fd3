"""Checkpoint and resume: an interrupted solve resumed from its checkpoint reaches the same
answer as an uninterrupted one (compared with POT's value too)."""

from __future__ import annotations

import os
import shutil
from typing import Any

import numpy as np
import ot
import pytest

import bigsink
from bigsink import DenseCost, InputError
from bigsink.executors import LocalExecutor
from bigsink.solver.checkpoint import load_checkpoint


class Crash(RuntimeError):
    """Raised by :class:`CrashingCost` to simulate a killed run."""


class CrashingCost(DenseCost):
    """A dense cost whose ``rows`` raises on its ``after``-th call (one strip = one pass)."""

    def __init__(self, C: np.ndarray, after: int) -> None:
        super().__init__(C)
        self.calls = 0
        self.after = after

    def rows(self, start: int, stop: int) -> Any:
        self.calls += 1
        if self.calls == self.after:
            raise Crash(f"simulated crash at read {self.calls}")
        return super().rows(start, stop)


EPS = 1e-3
TOL = 1e-7


def test_interrupted_then_resumed_equals_uninterrupted(r3_problem: Any, tmp_path: Any) -> None:
    C, a, b = r3_problem
    one = LocalExecutor(threads=1)                     # one strip per pass: calls = passes
    # the log domain reads C every pass; several eps stages
    log = {"resident_kernel": False, "eps_scaling": True, "eps_decay": 0.5}
    full = bigsink.solve(DenseCost(C), a, b, eps=EPS, tol=TOL, executor=one, progress=False,
                         **log)
    assert full.converged and len(full.eps_stages) > 3  # eps-scaling: several stages
    # R4: <P, C> at eps = 1e-3, and POT's log-domain Sinkhorn on the same problem
    assert full.transport_cost == pytest.approx(0.01062430811, rel=1e-6)
    P = ot.sinkhorn(a, b, C, EPS, method="sinkhorn_log", stopThr=1e-10, numItermax=100_000)
    assert full.transport_cost == pytest.approx(float((P * C).sum()), rel=1e-5)

    path = str(tmp_path / "ck")
    crash_at = full.n_iter // 2 + 3                    # mid-solve, not on a checkpoint
    with pytest.raises(Crash):
        bigsink.solve(CrashingCost(C, crash_at), a, b, eps=EPS, tol=TOL, executor=one,
                      checkpoint=path, checkpoint_every=7, progress=False, **log)
    ck = load_checkpoint(path, _fp(a, b, C.shape))
    assert 0 < ck.n_iter < full.n_iter
    assert ck.schedule == full.eps_stages

    res = bigsink.solve(DenseCost(C), a, b, eps=EPS, tol=TOL, executor=one,
                        checkpoint=path, checkpoint_every=7, resume=True, progress=False, **log)
    assert res.n_iter == full.n_iter
    assert res.eps_stages == full.eps_stages
    np.testing.assert_allclose(res.f, full.f, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.g, full.g, rtol=1e-12, atol=1e-14)
    assert res.transport_cost == pytest.approx(full.transport_cost, rel=1e-12)
    np.testing.assert_array_equal(res.history.iteration, full.history.iteration)
    np.testing.assert_allclose(res.history.error, full.history.error, rtol=1e-10)


def _fp(a: np.ndarray, b: np.ndarray, shape: tuple[int, int], eps: float = EPS) -> Any:
    from bigsink.solver.checkpoint import fingerprint

    return fingerprint(shape, a[:, None], b[:, None], eps, np.inf, np.inf)


def test_checkpoint_written_at_every_k_and_stage(r3_problem: Any, tmp_path: Any) -> None:
    C, a, b = r3_problem
    path = tmp_path / "ck"
    r = bigsink.solve(C, a, b, eps=0.01, tol=1e-6, checkpoint=path, checkpoint_every=5,
                      progress=False)
    ck = load_checkpoint(path, _fp(a, b, C.shape, 0.01))
    assert ck.n_iter == (r.n_iter // 5) * 5 or ck.stage == len(r.eps_stages) - 1
    assert ck.n_iter <= r.n_iter
    assert len(ck.history) == ck.n_iter
    assert not [p for p in os.listdir(tmp_path) if p != "ck"]   # no temporaries left


def test_resume_from_surviving_old_copy(r3_problem: Any, tmp_path: Any) -> None:
    """A crash between the two renames leaves only ``PATH.old-*``: it is resumed from."""
    C, a, b = r3_problem
    path = tmp_path / "ck"
    with pytest.warns(bigsink.ConvergenceWarning):
        bigsink.solve(C, a, b, eps=0.01, tol=1e-6, checkpoint=path, checkpoint_every=5,
                      max_iter=10, eps_scaling=False, progress=False)
    shutil.move(path, str(path) + ".old-deadbeef")
    ck = load_checkpoint(path, _fp(a, b, C.shape, 0.01))
    assert ck.n_iter == 10


def test_checkpoint_of_another_problem_is_an_input_error(r3_problem: Any, tmp_path: Any) -> None:
    C, a, b = r3_problem
    path = tmp_path / "ck"
    with pytest.warns(bigsink.ConvergenceWarning):
        bigsink.solve(C, a, b, eps=0.01, checkpoint=path, checkpoint_every=2, max_iter=4,
                      eps_scaling=False, progress=False)
    with pytest.raises(InputError, match="eps"):
        bigsink.solve(C, a, b, eps=0.02, checkpoint=path, resume=True, progress=False)
    with pytest.raises(InputError, match="shape"):
        bigsink.solve(C[:50], a[:50] / a[:50].sum(), b, eps=0.01, checkpoint=path,
                      resume=True, progress=False)
    with pytest.raises(InputError, match="weights"):
        bigsink.solve(C, b, a, eps=0.01, checkpoint=path, resume=True, progress=False)
    with pytest.raises(InputError, match="another cost"):
        bigsink.solve(2 * C, a, b, eps=0.01, checkpoint=path, resume=True, progress=False)
    with pytest.raises(InputError, match="checkpoint_every"):
        bigsink.solve(C, a, b, eps=0.01, checkpoint=path, checkpoint_every=0, progress=False)
    with pytest.raises(InputError, match="resume"):
        bigsink.solve(C, a, b, eps=0.01, resume=True, progress=False)


def test_a_checkpoint_never_replaces_what_bigsink_did_not_write(
        r3_problem: Any, tmp_path: Any) -> None:
    """A directory or file of the user's at ``checkpoint`` is refused before any work and
    left as it was (it used to be renamed aside and removed); an empty directory, or a
    checkpoint bigsink wrote, is used."""
    from bigsink.cli import main

    C, a, b = r3_problem
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    a_file = tmp_path / "data.bin"
    a_file.write_bytes(b"\x00" * 16)
    for where in (mine, a_file):
        for resume in (False, True):
            with pytest.raises(InputError, match="not a bigsink checkpoint"):
                bigsink.solve(C, a, b, eps=0.01, checkpoint=where, resume=resume,
                              progress=False)
    np.save(tmp_path / "C.npy", C)
    assert main(["solve", str(tmp_path / "C.npy"), "--eps", "0.01", "--out",
                 str(tmp_path / "r.zarr"), "--checkpoint", str(mine), "--quiet"]) == 2
    assert (mine / "notes.txt").read_text() == "precious"
    assert a_file.read_bytes() == b"\x00" * 16
    assert sorted(os.listdir(tmp_path)) == ["C.npy", "data.bin", "mine"]   # nothing else
    empty = tmp_path / "empty"
    empty.mkdir()
    again = bigsink.solve(C, a, b, eps=0.01, checkpoint=empty, resume=True, progress=False)
    assert again.converged                                   # nothing to resume: a new run
    res = bigsink.solve(C, a, b, eps=0.01, checkpoint=empty, checkpoint_every=1,
                        progress=False)
    assert res.converged and os.listdir(empty)               # now bigsink's checkpoint
    assert bigsink.solve(C, a, b, eps=0.01, checkpoint=empty, progress=False).converged


@pytest.mark.fault
def test_a_damaged_checkpoint_is_named_before_any_iteration(
        r3_problem: Any, tmp_path: Any) -> None:
    """NaN or +inf in a checkpoint's f, or a stage out of range, are an InputError naming
    the checkpoint (NaN used to run the whole max_iter on NaN errors)."""
    import zarr

    C, a, b = r3_problem
    path = tmp_path / "ck"
    with pytest.warns(bigsink.ConvergenceWarning):
        bigsink.solve(C, a, b, eps=0.01, checkpoint=path, checkpoint_every=2, max_iter=4,
                      eps_scaling=False, progress=False)
    group = zarr.open_group(str(path), mode="r+")
    f = np.asarray(group["f"][...])
    for bad in (np.nan, np.inf):
        damage = f.copy()
        damage[::7] = bad
        group["f"][...] = damage
        with pytest.raises(InputError, match="damaged") as info:
            bigsink.solve(C, a, b, eps=0.01, checkpoint=path, resume=True, progress=False,
                          max_iter=3000)
        assert str(path) in str(info.value)
    group["f"][...] = f
    group.attrs["stage"] = 7
    with pytest.raises(InputError, match="stage 7"):
        bigsink.solve(C, a, b, eps=0.01, checkpoint=path, resume=True, progress=False)
