"""``cluster/gpu/workers.sh`` started for real (no GPU needed: it only sets the environment).

One worker per listed GPU id, one thread each, ``CUDA_VISIBLE_DEVICES`` set to its GPU and a
``GPU=1`` resource; SIGTERM stops the scheduler and the workers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.dask
def test_gpu_workers_script(tmp_path: Path) -> None:
    from distributed import Client

    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if shutil.which("dask", path=path) is None:
        pytest.skip("the `dask` command is not installed")
    env = {**os.environ, "PATH": path, "PORT": "0", "GPUS": "0,1",
           "LOGDIR": str(tmp_path / "logs")}
    proc = subprocess.Popen(["bash", str(ROOT / "cluster" / "gpu" / "workers.sh")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address.startswith("tcp://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        with Client(address, timeout=10) as client:
            info = client.scheduler_info(n_workers=-1)["workers"].values()
            assert sorted(w["name"] for w in info) == ["gpu-0", "gpu-1"]
            assert all(w["nthreads"] == 1 and w["resources"] == {"GPU": 1} for w in info)
            seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
            assert sorted(seen.values()) == ["0", "1"]
        proc.terminate()
        assert proc.wait(timeout=40) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
