"""Costs in object storage (issue 23, item 5): a Zarr cost in S3, written by `bigsink cost`,
solved in process and on a 2-worker LocalCluster, swept on Ray, against a real local S3
server (moto in server mode on 127.0.0.1, with IAM credentials enforced)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bigsink
from bigsink import InputError

pytest.importorskip("s3fs")


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    """A moto S3 server process on 127.0.0.1 that checks credentials; yields the
    storage_options of a user allowed everything on S3, with a bucket ``bigsink``."""
    pytest.importorskip("moto.server")
    import boto3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the first four requests (the user, its policy, its key) go unchecked; then every
    # request needs a key the server issued
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="4")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.2)
        url = f"http://127.0.0.1:{port}"
        plain = dict(endpoint_url=url, region_name="us-east-1")
        iam = boto3.client("iam", aws_access_key_id="x", aws_secret_access_key="x", **plain)
        iam.create_user(UserName="bigsink")
        iam.put_user_policy(UserName="bigsink", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="bigsink")["AccessKey"]
        boto3.client("s3", aws_access_key_id=key["AccessKeyId"],
                     aws_secret_access_key=key["SecretAccessKey"], **plain
                     ).create_bucket(Bucket="bigsink")
        yield {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"],
               "client_kwargs": plain}
    finally:
        server.terminate()
        server.wait(20)


def clouds(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((300, 2)), rng.random((200, 2))


def test_an_s3_cost_is_written_solved_and_swept_as_a_local_one(
        s3: dict[str, Any], tmp_path: Path, dask_client: Any, ray_session: Any) -> None:
    x, y = clouds()
    local = bigsink.write_cost(x, y, tmp_path / "C.zarr", chunks=(100, 100), dtype="float64",
                               progress=False)
    cost = bigsink.write_cost(x, y, "s3://bigsink/C.zarr", chunks=(100, 100), dtype="float64",
                              storage_options=s3, progress=False)
    assert cost.path == "s3://bigsink/C.zarr" and cost.attrs["complete"] is True
    np.testing.assert_array_equal(cost.rows(0, 300), local.rows(0, 300))
    ref = bigsink.solve(local, eps=0.01, progress=False)
    here = bigsink.solve(cost, eps=0.01, progress=False)
    there = bigsink.solve(cost, eps=0.01, client=dask_client, progress=False)   # workers read S3
    for r in (here, there):
        assert r.converged
        np.testing.assert_allclose(r.f, ref.f, rtol=1e-12, atol=1e-14)
    assert there.executor.startswith("dask:")
    rng = np.random.default_rng(1)
    pairs = [(w / w.sum(), v / v.sum()) for w, v in
             ((rng.random(300) + 0.1, rng.random(200) + 0.1) for _ in range(3))]
    swept = bigsink.sweep(cost, pairs, [0.1, 0.05], tol=1e-9, progress=False)
    want = bigsink.sweep(local, pairs, [0.1, 0.05], tol=1e-9, progress=False)
    assert not swept.errors
    np.testing.assert_allclose(swept.column("transport_cost"), want.column("transport_cost"),
                               rtol=1e-12)


def test_a_url_with_storage_options_and_an_open_zarr_array_are_costs(
        s3: dict[str, Any], tmp_path: Path) -> None:
    """solve takes a URL with storage_options, and an open zarr.Array of an S3 store (its
    URL and credentials are recovered, so strips are streamed, as for a path)."""
    import zarr

    x, y = clouds(2)
    bigsink.write_cost(x, y, "s3://bigsink/D.zarr", chunks=(100, 100), dtype="float64",
                       storage_options=s3, progress=False)
    ref = bigsink.solve(bigsink.PointCloudCost(x, y), eps=0.01, progress=False)
    arr = zarr.open_array("s3://bigsink/D.zarr", mode="r", storage_options=s3)
    for cost, kw in (("s3://bigsink/D.zarr", {"storage_options": s3}), (arr, {})):
        r = bigsink.solve(cost, eps=0.01, progress=False, **kw)
        assert isinstance(r.cost, bigsink.ZarrCost) and r.cost.path == "s3://bigsink/D.zarr"
        np.testing.assert_allclose(r.f, ref.f, rtol=1e-10, atol=1e-12)


def test_the_command_line_writes_and_solves_an_s3_cost(s3: dict[str, Any],
                                                       tmp_path: Path) -> None:
    from bigsink.cli import main

    x, y = clouds(2)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    options = json.dumps(s3)
    url = "s3://bigsink/cli.zarr"
    assert main(["cost", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--out", url,
                 "--chunks", "100,100", "--storage-options", options, "--quiet"]) == 0
    assert main(["cost", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--out", url,
                 "--storage-options", options, "--quiet"]) == 2            # exists
    assert main(["solve", url, "--eps", "0.01", "--storage-options", options, "--out",
                 str(tmp_path / "r"), "--quiet"]) == 0
    r = bigsink.load_result(tmp_path / "r")
    ref = bigsink.solve(bigsink.PointCloudCost(x, y), eps=0.01, progress=False)
    assert r.transport_cost == pytest.approx(ref.transport_cost, rel=1e-6)    # float32 store
    assert main(["solve", url, "--eps", "0.01", "--out", str(tmp_path / "r2"),
                 "--storage-options", "{not json", "--quiet"]) == 2


def test_wrong_credentials_are_a_clear_error(s3: dict[str, Any]) -> None:
    x, y = clouds()
    bigsink.write_cost(x, y, "s3://bigsink/creds.zarr", storage_options=s3, progress=False)
    bad = dict(s3, secret="wrong")
    with pytest.raises(InputError, match=r"s3://bigsink/creds\.zarr.*Forbidden.*credentials"):
        bigsink.ZarrCost("s3://bigsink/creds.zarr", bad)
    with pytest.raises(InputError, match=r"cannot reach 's3://bigsink/new\.zarr'.*credentials"):
        bigsink.write_cost(x, y, "s3://bigsink/new.zarr", storage_options=bad, progress=False)
    with pytest.raises(InputError, match=r"the bucket 'nobucket' of 's3://nobucket/C\.zarr' "
                                         r"does not exist"):
        bigsink.write_cost(x, y, "s3://nobucket/C.zarr", storage_options=s3, progress=False)


def test_a_store_that_disappears_mid_solve_is_named(s3: dict[str, Any]) -> None:
    import s3fs

    x, y = clouds(3)
    cost = bigsink.write_cost(x, y, "s3://bigsink/gone.zarr", chunks=(100, 100),
                              storage_options=s3, progress=False)
    fs = s3fs.S3FileSystem(**s3)

    def delete(n_iter: int, err: float) -> None:
        if n_iter == 3:
            fs.rm("bigsink/gone.zarr/c", recursive=True)              # every chunk
    with pytest.raises(InputError, match=r"chunk \(0, 0\) of the Zarr array at "
                                         r"'s3://bigsink/gone\.zarr' is missing"):
        bigsink.solve(cost, eps=1e-3, resident_kernel=False, truncate=False, callback=delete,
                      progress=False)


def test_an_interrupted_write_is_refused(s3: dict[str, Any]) -> None:
    import zarr

    x, y = clouds(4)
    bigsink.write_cost(x, y, "s3://bigsink/half.zarr", storage_options=s3, progress=False)
    zarr.open_array("s3://bigsink/half.zarr", mode="r+", storage_options=s3).attrs[
        "complete"] = False                                     # as a write that stopped
    with pytest.raises(InputError, match="is incomplete: writing it was interrupted"):
        bigsink.ZarrCost("s3://bigsink/half.zarr", s3)
