"""The `bigsink cost` / `bigsink solve` command line, run as real subprocesses, and the
`cluster/local.sh` script (a real `dask scheduler` and two `dask worker` processes)."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bigsink

ROOT = Path(__file__).resolve().parents[1]
HAS_DASK_EXECUTOR = importlib.util.find_spec("bigsink.executors.dask") is not None
needs_dask_executor = pytest.mark.skipif(
    not HAS_DASK_EXECUTOR, reason="bigsink.executors.dask (DaskExecutor) not merged yet"
)


def env() -> dict[str, str]:
    """The environment for subprocesses: this checkout first on PYTHONPATH, venv on PATH."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PYTHONPATH": path, "PATH": bindir + os.pathsep + os.environ["PATH"]}


def bigsink_cli(*args: Any, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``bigsink ARGS`` (as ``python -m bigsink.cli``) in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "bigsink.cli", *map(str, args)], cwd=cwd, env=env(),
        capture_output=True, text=True, timeout=timeout,
    )


def assert_clean_error(proc: subprocess.CompletedProcess, code: int, *words: str) -> None:
    """Exit status ``code``, one line on stderr naming ``words``, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """x (80, 2), y (60, 2) points and non-uniform weights a, b as .npy files in tmp_path."""
    rng = np.random.default_rng(11)
    np.save(tmp_path / "x.npy", rng.random((80, 2)))
    np.save(tmp_path / "y.npy", rng.random((60, 2)))
    a, b = rng.random(80) + 0.2, rng.random(60) + 0.2
    np.save(tmp_path / "a.npy", a / a.sum())
    np.save(tmp_path / "b.npy", b / b.sum())
    return tmp_path


def test_cost_then_solve_then_load(inputs: Path) -> None:
    """`bigsink cost` + `bigsink solve --json`: load_result reads the result; it matches POT."""
    import ot

    p = bigsink_cli("cost", "x.npy", "y.npy", "--out", "C.zarr", "--chunks", "32,25",
                    "--scale", "max", "--dtype", "float64", cwd=inputs)
    assert p.returncode == 0, p.stderr
    cost = bigsink.ZarrCost(inputs / "C.zarr")
    assert cost.grid.block_shape == (32, 25) and cost.attrs["max"] == pytest.approx(1.0)
    p = bigsink_cli("solve", "C.zarr", "--a", "a.npy", "--b", "b.npy", "--eps", "0.02",
                    "--tol", "1e-9", "--out", "R", "--json", cwd=inputs)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["converged"] is True and summary["out"] == str(inputs / "R")
    r = bigsink.load_result(inputs / "R")
    assert r.converged and r.transport_cost == summary["transport_cost"]
    a, b = np.load(inputs / "a.npy"), np.load(inputs / "b.npy")
    C = cost.rows(0, 80)
    P_ot = ot.sinkhorn(a, b, C, 0.02, method="sinkhorn_log", stopThr=1e-12, numItermax=50000)
    assert r.transport_cost == pytest.approx(float((P_ot * C).sum()), rel=1e-6)
    np.testing.assert_allclose(r.plan(cost), P_ot, rtol=1e-5, atol=1e-12)
    # an .npy cost gives the same answer; a non-converged run exits 1
    np.save(inputs / "C.npy", C)
    p = bigsink_cli("solve", "C.npy", "--a", "a.npy", "--b", "b.npy", "--eps", "0.02",
                    "--tol", "1e-9", "--out", "R2", "--quiet", cwd=inputs)
    assert p.returncode == 0, p.stderr
    assert bigsink.load_result(inputs / "R2").transport_cost == pytest.approx(
        r.transport_cost, rel=1e-12)
    p = bigsink_cli("solve", "C.npy", "--eps", "0.5", "--tol", "1e-14", "--max-iter", "2",
                    "--out", "R3", "--json", cwd=inputs)
    assert p.returncode == 1 and json.loads(p.stdout)["converged"] is False


def test_bad_input_exits_2_with_one_line(inputs: Path) -> None:
    assert_clean_error(bigsink_cli("solve", "missing.zarr", "--eps", "0.1", "--out", "R",
                                   cwd=inputs), 2, "missing.zarr")
    assert_clean_error(bigsink_cli("cost", "nope.npy", "y.npy", "--out", "C.zarr", cwd=inputs),
                       2, "nope.npy")
    np.save(inputs / "C.npy", np.ones((80, 60)))
    assert_clean_error(bigsink_cli("solve", "C.npy", "--a", "b.npy", "--eps", "0.1", "--out",
                                   "R", cwd=inputs), 2, "60", "80")
    np.save(inputs / "C3.npy", np.ones((4, 4, 4)))
    assert_clean_error(bigsink_cli("solve", "C3.npy", "--eps", "0.1", "--out", "R", cwd=inputs),
                       2, "2-D")
    assert_clean_error(bigsink_cli("cost", "x.npy", "y.npy", "--out", "C.zarr", "--chunks",
                                   "a,b", cwd=inputs), 2, "--chunks")
    assert_clean_error(bigsink_cli("solve", "C.npy", "--eps", "-1", "--out", "R", cwd=inputs),
                       2, "eps")
    bad = np.ones((80, 60))
    bad[47, 13] = np.nan
    np.save(inputs / "Cnan.npy", bad)
    assert_clean_error(bigsink_cli("solve", "Cnan.npy", "--eps", "0.1", "--out", "R",
                                   cwd=inputs), 2, "C[47, 13]", "block")
    assert not (inputs / "R").exists() and not (inputs / "C.zarr").exists()


def test_unreachable_scheduler_cost(inputs: Path) -> None:
    p = bigsink_cli("cost", "x.npy", "y.npy", "--out", "C.zarr", "--scheduler",
                    "tcp://127.0.0.1:9", cwd=inputs, timeout=60)
    assert_clean_error(p, 2, "tcp://127.0.0.1:9")
    assert not (inputs / "C.zarr").exists()


@needs_dask_executor
def test_unreachable_scheduler_solve(inputs: Path) -> None:
    np.save(inputs / "C.npy", np.ones((80, 60)))
    p = bigsink_cli("solve", "C.npy", "--eps", "0.1", "--out", "R", "--scheduler",
                    "tcp://127.0.0.1:9", cwd=inputs, timeout=60)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and "127.0.0.1:9" in p.stderr
    assert not (inputs / "R").exists()


def test_wrong_cluster_addresses_exit_2_within_seconds(inputs: Path, http_port: int,
                                                       free_port: int) -> None:
    np.save(inputs / "C.npy", np.ones((80, 60)))
    web = f"tcp://127.0.0.1:{http_port}"                               # a "dashboard"
    t0 = time.monotonic()
    p = bigsink_cli("solve", "C.npy", "--eps", "0.1", "--out", "R", "--scheduler", web,
                    cwd=inputs, timeout=30)
    assert_clean_error(p, 2, web.removeprefix("tcp://"), "dashboard", ":8786")
    assert time.monotonic() - t0 < 30
    for bad in ("localhost", "tcp://127.0.0.1", "http://127.0.0.1:8787"):
        t0 = time.monotonic()
        p = bigsink_cli("solve", "C.npy", "--eps", "0.1", "--out", "R", "--scheduler", bad,
                        cwd=inputs, timeout=15)
        assert_clean_error(p, 2, repr(bad))
        assert time.monotonic() - t0 < 15
    nowhere = f"127.0.0.1:{free_port}"
    np.savez(inputs / "pairs.npz", a=np.full((1, 80), 1 / 80), b=np.full((1, 60), 1 / 60))
    t0 = time.monotonic()
    p = bigsink_cli("sweep", "C.npy", "--pairs", "pairs.npz", "--eps", "0.1", "--out", "s.csv",
                    "--address", nowhere, cwd=inputs, timeout=30)
    assert_clean_error(p, 2, nowhere, "ray start --head")
    assert time.monotonic() - t0 < 30 and not (inputs / "R").exists()


@pytest.mark.dask
def test_cost_on_scheduler(inputs: Path, dask_client: Any) -> None:
    """`bigsink cost --scheduler ADDR` writes on the cluster the same array as locally."""
    addr = dask_client.scheduler.address
    p = bigsink_cli("cost", "x.npy", "y.npy", "--out", "D.zarr", "--chunks", "30,30",
                    "--scheduler", addr, "--quiet", cwd=inputs)
    assert p.returncode == 0, p.stderr
    p = bigsink_cli("cost", "x.npy", "y.npy", "--out", "L.zarr", "--chunks", "30,30",
                    "--quiet", cwd=inputs)
    assert p.returncode == 0, p.stderr
    np.testing.assert_array_equal(bigsink.ZarrCost(inputs / "D.zarr").rows(0, 80),
                                  bigsink.ZarrCost(inputs / "L.zarr").rows(0, 80))


@pytest.fixture
def local_cluster(tmp_path: Path) -> Any:
    """`cluster/local.sh 2` started for real; yields (address, process); stopped by SIGINT."""
    if shutil.which("dask", path=env()["PATH"]) is None:
        pytest.skip("the `dask` command is not installed")
    proc = subprocess.Popen(
        ["bash", str(ROOT / "cluster" / "local.sh"), "2"],
        env={**env(), "PORT": "0", "LOGDIR": str(tmp_path / "logs")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address.startswith("tcp://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        yield address, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.dask
def test_local_sh_cluster(local_cluster: Any, inputs: Path) -> None:
    """local.sh gives a working 2-worker cluster on 127.0.0.1 and stops it on Ctrl-C."""
    from distributed import Client

    address, proc = local_cluster
    with Client(address, timeout=10) as client:
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 2
        assert all(w.startswith("tcp://127.0.0.1:") for w in workers)
    x, y = np.load(inputs / "x.npy"), np.load(inputs / "y.npy")
    cost = bigsink.write_cost(x, y, inputs / "C.zarr", chunks=(20, 20), client=address,
                              progress=False)
    ref = bigsink.PointCloudCost(x, y, dtype="float32", block_shape=(20, 20))
    np.testing.assert_array_equal(cost.block(3, 2), ref.block(3, 2))
    if HAS_DASK_EXECUTOR:  # the whole CLI path through the script's cluster
        p = bigsink_cli("solve", "C.zarr", "--eps", "0.05", "--scheduler", address, "--out",
                        "R", "--json", cwd=inputs)
        assert p.returncode == 0, p.stderr
        # the cluster holds the kernel on its workers (the scaling path): in process the
        # same iterates, summed in another order
        local = bigsink.solve(cost, eps=0.05, progress=False)
        assert bigsink.load_result(inputs / "R").transport_cost == pytest.approx(
            local.transport_cost, rel=1e-9)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=40) == 0
    with pytest.raises(OSError):
        Client(address, timeout=2)


HAS_CHECKPOINT = "checkpoint" in inspect.signature(bigsink.solve).parameters


def test_resume_needs_checkpoint(inputs: Path) -> None:
    np.save(inputs / "C.npy", np.ones((80, 60)))
    assert_clean_error(bigsink_cli("solve", "C.npy", "--eps", "0.1", "--resume", "--out", "R",
                                   cwd=inputs), 2, "--checkpoint")


@pytest.mark.skipif(not HAS_CHECKPOINT, reason="solve(checkpoint=...) not merged yet")
def test_checkpoint_then_resume(inputs: Path) -> None:
    """A run with --checkpoint, then --resume from it: the same answer as a plain run."""
    x, y = np.load(inputs / "x.npy"), np.load(inputs / "y.npy")
    np.save(inputs / "C.npy", bigsink.PointCloudCost(x, y).rows(0, 80))
    common = ("--a", "a.npy", "--b", "b.npy", "--eps", "0.02", "--tol", "1e-9")
    p = bigsink_cli("solve", "C.npy", *common, "--out", "R0", "--quiet", cwd=inputs)
    assert p.returncode == 0, p.stderr
    p = bigsink_cli("solve", "C.npy", *common, "--checkpoint", "ck", "--max-iter", "5",
                    "--out", "R1", "--quiet", cwd=inputs)
    assert p.returncode == 1, p.stderr          # stopped early: not converged
    p = bigsink_cli("solve", "C.npy", *common, "--checkpoint", "ck", "--resume", "--out", "R2",
                    "--quiet", cwd=inputs)
    assert p.returncode == 0, p.stderr
    r0, r2 = bigsink.load_result(inputs / "R0"), bigsink.load_result(inputs / "R2")
    assert r2.transport_cost == pytest.approx(r0.transport_cost, rel=1e-6)


def test_demo_prints_a_summary_and_saves_a_plot(tmp_path: Path) -> None:
    out = bigsink_cli("demo", "--n", "300", "--eps", "0.01", "--quiet", "--plot", "conv.png",
                      cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for word in ("converged", "transport_cost", "reg_cost", "marginal error", "iterations"):
        assert word in out.stdout
    assert (tmp_path / "conv.png").read_bytes()[:4] == b"\x89PNG"


def test_solve_writes_a_convergence_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    np.save(tmp_path / "C.npy", rng.random((40, 30)))
    out = bigsink_cli("solve", "C.npy", "--eps", "0.01", "--out", "r.zarr", "--plot",
                      "conv.png", "--quiet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = (tmp_path / "conv.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (640, 400)
    assert bigsink.load_result(tmp_path / "r.zarr").converged


@pytest.mark.slow
def test_warmup_fills_an_empty_kernel_cache(tmp_path: Path) -> None:
    """issue 23 (item 1) / 25 (item 6): `bigsink warmup` compiles every path's kernels into
    numba's cache (here an empty NUMBA_CACHE_DIR), so a fresh container's first solve does
    not pay for it; a second run finds them there (it compiles nothing new)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    cli = [sys.executable, "-m", "bigsink.cli", "warmup"]
    first = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "warmup: 10 paths" in first.stdout and str(tmp_path / "cache") in first.stdout
    cached = {p.name for p in (tmp_path / "cache").rglob("*.nbc")}
    assert len(cached) > 10
    again = subprocess.run([*cli, "--quiet"], env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and again.stdout.count("\n") == 1
    assert {p.name for p in (tmp_path / "cache").rglob("*.nbc")} == cached


def test_messages_that_tell_the_truth(inputs: Path) -> None:
    """issue 25 (first list): `cost --dtype banana` exited 1; `--plot` into a missing
    directory failed only after the solve; `solve --quiet` that did not converge said
    nothing; the advice to use eps-scaling came after eps-scaling ran; `repr(result)` was
    33 KB at n = 1000."""
    from bigsink.cli import main

    assert_clean_error(bigsink_cli("cost", "x.npy", "y.npy", "--out", "C.zarr", "--dtype",
                                   "banana", cwd=inputs), 2, "dtype", "banana")
    np.save(inputs / "C.npy", np.random.default_rng(0).random((80, 60)))
    t0 = time.monotonic()
    assert_clean_error(bigsink_cli("solve", "C.npy", "--eps", "0.1", "--out", "R", "--plot",
                                   "nodir/conv.png", cwd=inputs), 2, "--plot", "nodir")
    assert not (inputs / "R").exists()
    quiet = bigsink_cli("solve", "C.npy", "--eps", "1e-4", "--max-iter", "3", "--out", "R",
                        "--quiet", cwd=inputs)
    assert quiet.returncode == 1 and quiet.stdout == ""
    assert "NOT converged in 3 iterations" in quiet.stderr and "--max-iter" in quiet.stderr
    assert time.monotonic() - t0 < 120
    C = np.load(inputs / "C.npy")
    with pytest.warns(bigsink.ConvergenceWarning, match=r"eps-scaling ran \(\d+ stages\)"):
        bigsink.solve(C, eps=1e-4, max_iter=20, progress=False)
    with pytest.warns(bigsink.ConvergenceWarning, match=r"eps_scaling=True"):
        bigsink.solve(C, eps=1e-4, max_iter=20, eps_scaling=False, progress=False)
    r = bigsink.solve(np.random.default_rng(1).random((1000, 1000)), eps=0.1, progress=False)
    text = repr(r)
    assert len(text) < 300 and "shape=(1000, 1000)" in text and "converged=True" in text
    assert main(["demo", "--n", "50", "--plot", str(inputs / "none" / "p.png"),
                 "--quiet"]) == 2


def test_a_sweep_table_is_csv_or_parquet_nothing_else(inputs: Path) -> None:
    """issue 25: `sweep --out s.json` wrote CSV; now refused before any work (exit 2)."""
    C = np.random.default_rng(0).random((10, 10))
    pairs = [(np.full(10, 0.1), np.full(10, 0.1))]
    with pytest.raises(bigsink.InputError, match=r"\.csv or \.parquet"):
        bigsink.sweep(C, pairs, [0.1], out=inputs / "s.json")
    with pytest.raises(bigsink.InputError, match=r"\.csv or \.parquet"):
        bigsink.SweepResults(()).save(inputs / "s.json")
    assert not (inputs / "s.json").exists()


def test_version_verbose_show_rho_eps_scaling_and_defaults(inputs: Path) -> None:
    """issue 25 item 4: `--version`; `-v` logs the library's decisions on stderr; `show`
    prints a saved result; `--rho` and `--eps-scaling` reach the solver; `--help` shows
    defaults."""
    version = bigsink_cli("--version", cwd=inputs)
    assert version.returncode == 0 and version.stdout.strip() == f"bigsink {bigsink.__version__}"
    C = np.random.default_rng(2).random((80, 60))
    np.save(inputs / "C.npy", C)
    p = bigsink_cli("-v", "solve", "C.npy", "--eps", "0.05", "--rho", "0.5",
                    "--no-eps-scaling", "--out", "R", "--quiet", cwd=inputs)
    assert p.returncode == 0, p.stderr
    for decision in ("executor: local", "eps schedule: 1 stage(s)", "eps-scaling off",
                     "placement: "):
        assert decision in p.stderr, p.stderr
    want = bigsink.solve(C, eps=0.05, rho=0.5, eps_scaling=False, progress=False)
    saved = bigsink.load_result(inputs / "R")
    assert saved.rho_a == 0.5 and len(saved.eps_stages) == 1
    np.testing.assert_allclose(saved.f, want.f, rtol=1e-12)
    quiet = bigsink_cli("solve", "C.npy", "--eps", "0.05", "--out", "R2", "--quiet", cwd=inputs)
    assert quiet.returncode == 0 and quiet.stderr == ""             # no -v: no log lines
    shown = bigsink_cli("show", "R", cwd=inputs)
    assert shown.returncode == 0 and shown.stdout.startswith("bigsink Sinkhorn: converged")
    js = json.loads(bigsink_cli("show", "R", "--json", cwd=inputs).stdout)
    assert js["transport_cost"] == saved.transport_cost and js["path"] == str(inputs / "R")
    assert_clean_error(bigsink_cli("show", "missing", cwd=inputs), 2, "missing")
    helptext = bigsink_cli("solve", "--help", cwd=inputs).stdout
    assert "(default: 1e-06)" in helptext and "(default: 10000)" in helptext
    assert bigsink_cli("solve", "C.npy", "--rho", "x", cwd=inputs).returncode == 2
