"""A small ``bigsink bench`` run end to end (POT included, capped)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bigsink
from bigsink import bench
from bigsink.cli import main
from bigsink.errors import InputError


def test_bench_cli_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    rc = main(["bench", "--n", "120", "--eps", "5e-2", "--dtype", "float64,float32",
               "--max-iter", "2000", "--pot-max-seconds", "2", "--json", str(out), "--quiet"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert set(report) == {"machine", "config", "runs"}
    assert report["config"]["rho"] is None                  # balanced; strict JSON
    json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert report["machine"]["read_bytes_per_s"] > 0 and report["machine"]["exp_per_s"] > 0
    assert len(report["runs"]) == 2
    for run in report["runs"]:
        assert run["bound_s"] > 0
        names = [r["solver"] for r in run["solvers"]]
        assert names == ["bigsink", "pot.sinkhorn", "pot.sinkhorn_log", "pot.sinkhorn_stabilized"]
        for r in run["solvers"]:
            for key in ("n_iter", "s_per_iter", "time_to_tol", "row_err", "col_err", "pc",
                        "pc_rel_diff", "failure", "capped", "ratio_s_per_iter_vs_bigsink"):
                assert key in r, key
        big, pot = run["solvers"][0], run["solvers"][1]
        assert big["failure"] is None and big["time_to_tol"] is not None
        assert max(big["row_err"], big["col_err"]) <= 1e-6
        assert big["per_iter_over_bound"] > 0
        # bigsink and POT solve the same problem: same <P, C> (against a tighter reference)
        tol_pc = 1e-5 if run["dtype"] == "float64" else 1e-4
        assert big["pc_rel_diff"] < tol_pc and pot["pc_rel_diff"] < tol_pc
    assert "pot.sinkhorn_log" in capsys.readouterr().out


def test_bench_unbalanced_against_pot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    rc = main(["bench", "--n", "100", "--eps", "5e-2", "--rho", "2", "--max-iter", "5000",
               "--pot-max-seconds", "2", "--json", str(out), "--quiet"])
    assert rc == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert run["rho"] == 2.0
    names = [r["solver"] for r in run["solvers"]]
    assert names == ["bigsink", *(f"pot.{m}" for m in bench.POT_UNBALANCED_METHODS)]
    ref = bigsink.solve(bench.make_problem(100), eps=5e-2, rho=2.0, tol=1e-12)
    assert run["reference_pc"] == pytest.approx(ref.transport_cost, rel=1e-7)
    for r in run["solvers"]:                   # all solve the same unbalanced problem
        assert r["failure"] is None and r["stopped"] and r["pc_rel_diff"] < 1e-5, r
        assert r["time_to_tol"] == (r["seconds"] if r["pc_rel_diff"] <= 1e-6 else None)
        assert r["n_iter"] >= 2
    big = run["solvers"][0]
    assert big["time_to_tol"] is not None
    assert big["row_err"] > 1e-3               # the plan's deviation from a: unbalanced
    assert "unbalanced, rho 2" in capsys.readouterr().out


@pytest.mark.parametrize("executor", ["zarr", pytest.param("dask-zarr", marks=pytest.mark.dask)])
def test_bench_zarr_executor(tmp_path: Path, executor: str) -> None:
    """A store streamed in process, or by the workers of a LocalCluster."""
    cfg = bench.BenchConfig(sizes=(80,), eps=(0.1,), executor=executor, pot=False,
                            reference=False)
    report = bench.run_bench(cfg)
    run = report["runs"][0]
    assert run["store_read_once_s"] > 0 and run["per_iter_over_read_once"] > 0
    assert run["zarr_read_once_s"] > 0 and run["per_iter_over_zarr_read"] > 0
    assert run["per_iter_over_in_process"] > 0         # against the same iterations in memory
    assert run["log_per_iter_over_read_once"] > 0      # and the log domain streaming C
    assert run["solvers"][0]["failure"] is None
    bench.write_json(report, tmp_path / "z.json")
    table = bench.format_table(report)
    assert "bigsink" in table and "reading the store once" in table


def test_make_problem_matches_definition() -> None:
    C = bench.make_problem(50, "float32", seed=3)
    rng = np.random.default_rng(3)
    x, y = rng.random((50, 2)), rng.random((50, 2))
    D = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    assert C.dtype == np.float32
    np.testing.assert_allclose(C, D / D.max(), rtol=1e-6, atol=1e-7)


def test_bad_bench_options() -> None:
    with pytest.raises(InputError, match="executor"):
        bench.BenchConfig(executor="ray")
    with pytest.raises(InputError, match="dtype"):
        bench.BenchConfig(dtypes=("float16",))
    with pytest.raises(InputError, match="rho must be positive"):
        bench.BenchConfig(rho=0.0)
    with pytest.raises(InputError, match="POT method must be one of"):
        bench.BenchConfig(rho=1.0, methods=("sinkhorn_log",))
    with pytest.raises(InputError, match="GPU bench runs balanced"):
        bench.BenchConfig(rho=1.0, device="gpu")
    assert main(["bench", "--n", "x"]) == 2


def test_table_reports_time_per_element_across_sizes() -> None:
    def run(n: int, s_per_iter: float) -> dict:
        return {"n": n, "eps": 0.01, "dtype": "float64", "executor": "local",
                "solvers": [{"solver": "bigsink", "s_per_iter": s_per_iter}]}

    report = {"runs": [run(1000, 1e-4), run(2000, 6e-4)],
              "machine": {"threads": 2, "read_bytes_per_s": 3e10, "exp_per_s": 1e9}}
    table = bench.format_table(report)
    assert ("bigsink ns per element and iteration (eps 0.01, float64, local): "
            "1000: 0.100, 2000: 0.150; max/min 1.50x") in table


def test_steady_times_round_robin_over_sizes() -> None:
    """Several sizes: every run gets its steady time per iteration (measured round-robin
    over the sizes), and the table reports their time per element."""
    cfg = bench.BenchConfig(sizes=(60, 90), eps=(0.1,), pot=False, reference=False)
    report = bench.run_bench(cfg)
    assert [r["n"] for r in report["runs"]] == [60, 90]
    for run in report["runs"]:
        big = run["solvers"][0]
        assert big["s_per_iter"] > 0 and big["per_iter_over_bound"] > 0
        assert big["ratio_s_per_iter_vs_bigsink"] == 1.0
        there = run["machine_at_best"]                       # bound from the best run's phase
        assert run["bound_s"] == pytest.approx(
            run["n"] ** 2 * run["kernel_itemsize"] / there["read_bytes_per_s"])
    assert "60: " in bench.format_table(report) and "max/min" in bench.format_table(report)


def test_bench_cloud_reports_the_fused_pass_beside_the_materialised_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "cloud.json"
    assert main(["bench", "--cloud", "--n", "300", "--dims", "2,64", "--dtype",
                 "float32,float64", "--eps", "1e-3", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["exp_f32_per_s"] > 0
    rows = report["cloud"]
    assert [(r["d"], r["dtype"]) for r in rows] == [
        (2, "float32"), (64, "float32"), (2, "float64"), (64, "float64")]
    for r in rows:
        assert r["ns_per_element"] > 0 and r["materialised_ns_per_element"] > 0
        assert r["elements_per_s"] == pytest.approx(300 * 300 / r["pass_s"])
        assert r["placement"].startswith("resident: ")             # 0.3 MB fits in memory
    table = capsys.readouterr().out
    assert "mat ns" in table and "recomputing the cloud's costs" in table


@pytest.mark.parametrize("executor", ["local", "zarr"])
def test_bench_truncate_puts_truncated_and_dense_solves_side_by_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], executor: str,
) -> None:
    out = tmp_path / "truncate.json"
    assert main(["bench", "--truncate", "--n", "2000", "--dims", "2", "--eps", "1e-4",
                 "--dtype", "float64", "--executor", executor, "--json", str(out),
                 "--quiet"]) == 0
    rec = json.loads(out.read_text())["truncate"][0]
    assert rec["truncated"]["converged"] and rec["dense"]["converged"]
    assert rec["rel_diff"] < 1e-6                            # the same <P, C>
    assert 0 < rec["active_last"] < 1 and rec["truncation_bound"] <= 1e-7
    assert sum(k for _, k, _, _ in rec["stages"]) == rec["truncated"]["n_iter"]
    assert sum(t for *_, t in rec["stages"]) <= rec["truncated"]["seconds"]
    assert ("store_gb" in rec) == (executor == "zarr")
    table = capsys.readouterr().out
    assert "trunc s" in table and "it at" in table


def test_bench_multiscale_reports_levels_beside_the_capped_dense_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "multiscale.json"
    assert main(["bench", "--multiscale", "--n", "3000", "--dims", "2", "--eps", "1e-4",
                 "--dtype", "float32", "--json", str(out), "--quiet"]) == 0
    rec = json.loads(out.read_text())["truncate"][0]
    assert rec["truncated"]["converged"] and rec["levels"]          # clusters ran first
    assert rec["dense"]["estimated"] and rec["dense_iteration_s"] > 0
    assert rec["dense"]["n_iter"] == rec["truncated"]["n_iter"]
    assert rec["speedup"] == pytest.approx(rec["dense"]["seconds"] / rec["truncated"]["seconds"])
    table = capsys.readouterr().out
    assert "clusters: eps" in table and "per iteration over 4 iterations" in table
