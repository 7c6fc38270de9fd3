"""cluster/slurm/submit.py end to end through dask-jobqueue, with stand-ins for SLURM's
commands: `sbatch` runs the job script here (in its own process group, the job id its pid),
`squeue` reports whether it runs, `scancel` ends it. The workers are real `dask worker`
processes on 127.0.0.1; the job's shape comes from a site `jobqueue.yaml` (issue 23)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bigsink

pytest.importorskip("dask_jobqueue")

ROOT = Path(__file__).resolve().parents[1]

STANDINS = {
    "sbatch": """#!/bin/bash
# sbatch SCRIPT: copy the script (as SLURM does: the caller deletes it at once), run the
# copy in the background; its pid is the job id (jobs.txt)
cp "$1" "job-$$.sh"
bash "job-$$.sh" > "slurm-$$.out" 2>&1 < /dev/null &
echo "$!" >> jobs.txt
echo "Submitted batch job $!"
""",
    "squeue": """#!/bin/bash
# squeue -h -j ID -o %T: RUNNING while the job's process lives
while [ $# -gt 0 ]; do [ "$1" = -j ] && id=$2; shift; done
kill -0 "$id" 2>/dev/null && echo RUNNING
exit 0
""",
    "scancel": """#!{python}
# scancel ID: the job's processes (the worker's nanny and worker), then the job itself
import sys
import psutil
try:
    job = psutil.Process(int(sys.argv[1]))
    for proc in [*job.children(recursive=True), job]:
        proc.terminate()
except psutil.Error:
    pass
""",
}

JOBQUEUE = """
jobqueue:
  slurm:
    cores: 1
    memory: 1GiB
    processes: 1
    interface: null
    scheduler-options: {{host: 127.0.0.1}}
    worker-extra-args: ["--host", "127.0.0.1", "--no-dashboard"]
    python: {python}
    job-script-prologue: {prologue}
"""


def _site(tmp_path: Path, prologue: list[str]) -> dict[str, str]:
    """An environment with the stand-ins first on PATH and a site jobqueue.yaml."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in STANDINS.items():
        path = bindir / name
        path.write_text(text.replace("{python}", sys.executable))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    config = tmp_path / "dask"
    config.mkdir()
    (config / "jobqueue.yaml").write_text(JOBQUEUE.format(python=sys.executable,
                                                          prologue=prologue))
    return dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}",
                DASK_CONFIG=str(config),
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def _leftovers(tmp_path: Path) -> None:
    """End any job process the test left (jobs.txt lists them), children first."""
    import psutil

    jobs = tmp_path / "jobs.txt"
    for job in jobs.read_text().split() if jobs.exists() else []:
        try:
            proc = psutil.Process(int(job))
            for p in [*proc.children(recursive=True), proc]:
                p.kill()
        except psutil.Error:
            pass


@pytest.mark.slow
def test_submit_solves_on_stand_in_slurm_jobs_shaped_by_jobqueue_yaml(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.random((120, 2)), rng.random((100, 2))
    cost = bigsink.write_cost(x, y, tmp_path / "C.zarr", chunks=(40, 50), dtype="float64",
                              progress=False)
    env = _site(tmp_path, [])
    try:
        out = subprocess.run(
            [sys.executable, str(ROOT / "cluster" / "slurm" / "submit.py"), cost.path,
             "--eps", "0.01", "--out", str(tmp_path / "R"), "--jobs", "2",
             "--start-timeout", "120"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    finally:
        _leftovers(tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "#SBATCH --mem=" in out.stderr and "--cpus-per-task=1" in out.stderr  # from yaml
    r = bigsink.load_result(tmp_path / "R")
    ref = bigsink.solve(cost, eps=0.01, progress=False)
    assert r.converged and r.executor.startswith("dask: scheduler tcp://127.0.0.1:")
    np.testing.assert_allclose(r.f, ref.f, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_a_worker_that_dies_at_start_fails_the_submission_at_once(tmp_path: Path) -> None:
    """It used to wait silently for up to an hour."""
    cost = bigsink.write_cost(*np.random.default_rng(1).random((2, 30, 2)), tmp_path / "C.zarr",
                              progress=False)
    env = _site(tmp_path, ["exit 3"])                # the job ends before its worker starts
    t0 = time.monotonic()
    try:
        out = subprocess.run(
            [sys.executable, str(ROOT / "cluster" / "slurm" / "submit.py"), cost.path,
             "--eps", "0.1", "--out", str(tmp_path / "R"), "--jobs", "1"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    finally:
        _leftovers(tmp_path)
    assert out.returncode != 0
    assert "ended before its Dask worker connected" in out.stderr
    assert time.monotonic() - t0 < 60 and not (tmp_path / "R").exists()
