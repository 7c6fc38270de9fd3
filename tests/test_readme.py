"""Every command shown in README.md runs, so the README cannot drift from the code.

Conventions (also stated at the end of README.md):

* The fenced blocks are walked in document order in one temporary directory (the cwd).
* Every ```python block is executed in one shared namespace (later blocks use names that
  earlier ones defined). ConvergenceWarnings are errors: a README example must converge.
* Every line of a ```sh block that starts with ``bigsink `` is run as
  ``python -m bigsink.cli ...`` and must exit 0 (the outputs of earlier lines are there).
  Lines starting with ``make `` must name a target of the Makefile (they are not run), and
  lines starting with ``pip install`` must name extras that pyproject.toml defines. Any other
  command in a ```sh block is an error: show it in a ```text block, or add support here.
* The placeholder scheduler address ``tcp://127.0.0.1:8786`` is replaced by the address of
  the session ``dask_client`` fixture's scheduler (in Python and in shell lines).
* A block preceded by ``<!-- no-test: REASON -->`` is skipped; such markers must give a
  reason and stay few (at most ``MAX_NO_TEST``).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import bigsink

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PLACEHOLDER = "tcp://127.0.0.1:8786"
MAX_NO_TEST = 2

_FENCE = re.compile(
    r"(?P<marker><!--\s*no-test:(?P<reason>[^>]*)-->\s*\n)?```(?P<lang>\w*)\n(?P<body>.*?)```",
    re.S,
)


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README."""

    lang: str
    body: str
    skip_reason: str | None
    line: int


def blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text`` in order, with their no-test markers."""
    out = []
    for m in _FENCE.finditer(text):
        reason = m.group("reason").strip() if m.group("marker") else None
        out.append(Block(m.group("lang"), m.group("body"), reason,
                         text.count("\n", 0, m.start("body")) + 1))
    return out


def shell_lines(body: str) -> list[str]:
    """Commands of a sh block: comments stripped, ``\\`` continuations joined."""
    lines, cur = [], ""
    for raw in body.splitlines():
        cur += raw.rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        cmd = cur.split(" #")[0].strip() if not cur.lstrip().startswith("#") else ""
        if cmd:
            lines.append(cmd)
        cur = ""
    return lines


def make_targets() -> set[str]:
    """Targets defined in the Makefile."""
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.M))


def extras() -> set[str]:
    """Optional-dependency groups of pyproject.toml."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(data["project"]["optional-dependencies"])


def test_readme_structure() -> None:
    text = README.read_text()
    first = blocks(text)[0]
    assert first.lang == "sh"
    assert shell_lines(first.body)[:2] == ["make demo", "make test"]
    marked = [b for b in blocks(text) if b.skip_reason is not None]
    assert len(marked) <= MAX_NO_TEST, [b.line for b in marked]
    for b in marked:
        assert len(b.skip_reason or "") >= 10, f"line {b.line}: explain why the block is skipped"
    assert "<!-- BENCH TABLE -->" in text or "| n |" in text


def _run_cli(cmd: str, cwd: Path, address: str) -> None:
    argv = shlex.split(cmd.replace(PLACEHOLDER, address))
    assert argv[0] == "bigsink"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "bigsink.cli", *argv[1:]], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{cmd}\n{out.stdout}\n{out.stderr}"


def test_readme_blocks_run(tmp_path: Path, dask_client: Any, ray_session: Any,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    address = dask_client.scheduler.address
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    ran = {"python": 0, "bigsink": 0}
    try:
        _walk(namespace, ran, address, tmp_path)
    finally:  # clients the README opened: close them before the session cluster goes away
        from distributed import Client

        for value in namespace.values():
            if isinstance(value, Client) and value is not dask_client:
                value.close()
    assert ran["python"] >= 5 and ran["bigsink"] >= 5, ran


def _walk(namespace: dict[str, Any], ran: dict[str, int], address: str, tmp_path: Path) -> None:
    """Run the README's blocks in order (see the module docstring)."""
    targets, groups = make_targets(), extras()
    for b in blocks(README.read_text()):
        if b.skip_reason is not None:
            continue
        where = f"README.md line {b.line}"
        if b.lang == "python":
            source = "\n" * (b.line - 1) + b.body.replace(PLACEHOLDER, address)
            code = compile(source, str(README), "exec")  # tracebacks show README line numbers
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("error", bigsink.ConvergenceWarning)
                exec(code, namespace)
            print(f"{time.perf_counter() - t0:6.1f} s  {where}")
            ran["python"] += 1
        elif b.lang == "sh":
            for cmd in shell_lines(b.body):
                if cmd.startswith("make "):
                    assert cmd.split()[1] in targets, f"{where}: no Makefile target in {cmd!r}"
                elif cmd.startswith("pip install"):
                    names = re.findall(r"\[([\w,]+)\]", cmd)
                    assert names, f"{where}: {cmd!r} names no extra"
                    for name in ",".join(names).split(","):
                        assert name in groups, f"{where}: no extra {name!r} in pyproject.toml"
                elif cmd.startswith("bigsink "):
                    t0 = time.perf_counter()
                    _run_cli(cmd, tmp_path, address)
                    print(f"{time.perf_counter() - t0:6.1f} s  {cmd}")
                    ran["bigsink"] += 1
                else:
                    pytest.fail(f"{where}: untested command {cmd!r} in a sh block")
