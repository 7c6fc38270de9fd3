"""sphinx-gallery hooks for bigsink's examples, named by string in ``conf.py`` (a config value
holding functions could not be pickled with the environment).

Every example takes ``--small`` (its CI size) and ``--out DIR`` (where it writes its files);
``reset_argv`` gives it both, with ``DIR`` = ``docs/_build/example-outputs/<example>``, wiped
first. The examples draw with :mod:`bigsink.plot`, which saves a plain matplotlib ``Figure``
to a PNG (no pyplot figure for sphinx-gallery's own scraper to find): ``png_scraper`` puts the
PNGs an example wrote into its gallery page, in the order they were written.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from sphinx_gallery.scrapers import figure_rst

OUTPUTS = Path(__file__).resolve().parent / "_build" / "example-outputs"

_seen: dict[str, set[Path]] = {}      # example -> the PNGs already put on its page


def out_dir(src_file: str | Path) -> Path:
    """Where the example ``src_file`` writes its outputs during the docs build."""
    return OUTPUTS / Path(src_file).stem


def reset_argv(gallery_conf: dict[str, Any], script_vars: dict[str, Any]) -> list[str]:
    """The command line of an example in the gallery: its small size, its own output folder."""
    out = out_dir(script_vars["src_file"])
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _seen[str(out)] = set()
    # relative to the example's folder, where sphinx-gallery runs it: the paths the example
    # prints into its page name no machine's directories
    return ["--small", "--out", os.path.relpath(out, Path(script_vars["src_file"]).parent)]


def png_scraper(block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any]) -> str:
    """Copy the PNGs the example wrote since the last block into the gallery's images."""
    out = out_dir(block_vars["src_file"])
    if not out.is_dir():
        return ""
    seen = _seen.setdefault(str(out), set())
    new = sorted((p for p in out.rglob("*.png") if p not in seen),
                 key=lambda p: (p.stat().st_mtime_ns, p.name))
    images = []
    for png, target in zip(new, block_vars["image_path_iterator"], strict=False):
        shutil.copyfile(png, target)
        seen.add(png)
        images.append(target)
    if not images:
        return ""
    return figure_rst(images, gallery_conf["src_dir"])
