"""The one atomic writer (bigsink._fs): concurrent writers of one path take turns, and
nothing partial or temporary is left behind (issue 24, item 9)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import bigsink
from bigsink._fs import atomic_path

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.fault
def test_threads_replacing_one_directory_all_succeed(tmp_path: Path) -> None:
    target = tmp_path / "out"
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            for _ in range(20):
                with atomic_path(target) as tmp:
                    os.mkdir(tmp)
                    (Path(tmp) / "who").write_text(str(k))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (target / "who").read_text() in {"0", "1", "2", "3"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]      # no tmp-, no old-


@pytest.mark.fault
def test_two_processes_saving_one_result_and_sharing_a_checkpoint(tmp_path: Path) -> None:
    """Two processes: each solves with the same checkpoint directory and saves its result
    to the same path (overwrite=True), twice; both finish, and a whole result is there."""
    script = tmp_path / "w.py"
    script.write_text(
        "import sys, numpy as np, bigsink\n"
        "C = np.random.default_rng(0).random((60, 50))\n"
        "for _ in range(2):\n"
        "    r = bigsink.solve(C, eps=0.05, progress=False, checkpoint=sys.argv[1],\n"
        "                      checkpoint_every=1)\n"
        "    r.save(sys.argv[2], overwrite=True)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "ck"),
                               str(tmp_path / "r.zarr")], env=env, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    r = bigsink.load_result(tmp_path / "r.zarr")
    C = np.random.default_rng(0).random((60, 50))
    assert r.converged and r.transport_cost == bigsink.solve(C, eps=0.05,
                                                             progress=False).transport_cost
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "r.zarr", "w.py"]


@pytest.mark.fault
def test_a_full_disk_names_the_output_and_leaves_nothing(tmp_path: Path) -> None:
    """A file-size limit (as a full disk): the error names the output the user asked for,
    and neither it nor a temporary copy is left (issue 24, item 12)."""
    script = tmp_path / "w.py"
    script.write_text(
        "import resource, signal, sys, numpy as np, bigsink\n"
        "r = bigsink.solve(np.random.default_rng(0).random((400, 300)), eps=0.05,\n"
        "                  progress=False)\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))\n"
        "try:\n"
        "    r.save(sys.argv[1])\n"
        "except OSError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n")
    out = tmp_path / "r.zarr"
    p = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert p.returncode == 3, p.stderr
    assert f"File too large while writing {str(out)!r}" in p.stdout, p.stdout
    assert sorted(q.name for q in tmp_path.iterdir()) == ["w.py"]


def test_overwrite_replaces_only_what_bigsink_wrote(tmp_path: Path) -> None:
    """issue 24: an output is replaced only when it carries bigsink's format marker and
    overwrite was asked for; a user's directory, file or link survives overwrite=True."""
    from bigsink.cli import main

    C = np.random.default_rng(0).random((6, 5))
    r = bigsink.solve(C, eps=0.1, progress=False)
    mine, note, link = tmp_path / "mine", tmp_path / "note.txt", tmp_path / "link"
    mine.mkdir()
    (mine / "data.txt").write_text("mine")
    note.write_text("mine")
    link.symlink_to(mine)
    for target in (mine, note, link):
        with pytest.raises(bigsink.InputError, match="not an output of bigsink"):
            r.save(target, overwrite=True)
        with pytest.raises(bigsink.InputError, match="not an output of bigsink"):
            bigsink.write_cost(C[:, :2], C[:, :2], target, overwrite=True, progress=False)
    np.save(tmp_path / "C.npy", C)
    assert main(["solve", str(tmp_path / "C.npy"), "--eps", "0.1", "--out", str(mine),
                 "--overwrite", "--quiet"]) == 2
    assert (mine / "data.txt").read_text() == "mine" and note.read_text() == "mine"
    r.save(tmp_path / "R")
    r.save(tmp_path / "R", overwrite=True)                   # bigsink's own: replaced
    assert bigsink.load_result(tmp_path / "R").eps == r.eps
