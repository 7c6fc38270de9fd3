"""Sphinx configuration of bigsink's documentation: ``make docs`` builds it (warnings are errors).

The API reference is generated from the docstrings (autosummary + autodoc + napoleon) for the
modules listed in ``api.rst``; the user guide is reStructuredText and MyST markdown; the gallery
runs ``examples/*.py --small`` through sphinx-gallery (hooks in ``gallery_hooks.py``).
Nothing here reaches the network: no intersphinx.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS))             # apigen; gallery_hooks, named by string below

os.environ.setdefault("MPLBACKEND", "Agg")   # the examples' plots draw off screen

import apigen  # noqa: E402  (after sys.path)

import bigsink  # noqa: E402

project = "bigsink"
author = "the bigsink authors"
copyright = "the bigsink authors"
release = bigsink.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
smartquotes_action = "qe"                 # quotes and ellipses; "--small" stays two hyphens
templates_path = ["_templates"]
exclude_patterns = ["_build"]

# -- API reference ---------------------------------------------------------------------------
# api.rst lists the documented modules, one line each; apigen writes each one's page
# (reference/<module>.rst) from its __all__, and autosummary generates a page for every name
# (reference/names/, with _templates/autosummary/class.rst for classes).
apigen.write_pages(DOCS)
autosummary_generate = True
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False                # "Returns: X" reads as prose, not a type to resolve
napoleon_use_ivar = True                  # "Attributes:" as fields: no second description of
                                          # a dataclass field that autodoc lists as a member
nitpicky = False                          # docstrings name numpy, zarr, dask types freely

# -- markdown pages (docs/design.md, benchmarks.md, security.md) ------------------------------
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3                  # their links use GitHub's #section-anchors

# -- gallery ---------------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "gallery",
    # run every example, each in its small mode (bench_sweep.py: ~12 s, mostly Ray's start)
    "filename_pattern": r"/[^/]*\.py$",
    "ignore_pattern": r"(^|/)_common\.py$",      # shared argument parsing, not an example
    "reset_argv": "gallery_hooks.reset_argv",    # --small --out docs/_build/example-outputs/X
    "image_scrapers": ("gallery_hooks.png_scraper",),   # PNGs an example wrote (bigsink.plot)
    "reset_modules": (),
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": False,          # report all failing examples, then fail
    "plot_gallery": "True",
    "show_memory": False,
    "show_signature": False,
    "capture_repr": (),
}

# -- HTML ------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"bigsink {release}"
html_static_path: list[str] = []


# -- hooks -----------------------------------------------------------------------------------
def _top_level_objects() -> dict[int, str]:
    """id -> name of the classes and functions in bigsink.__all__ (each has its page there)."""
    out = {}
    for name in bigsink.__all__:
        obj = getattr(bigsink, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            out[id(obj)] = name
    return out


_TOP = _top_level_objects()


def _lookup(dotted: str) -> Any:
    """The object a dotted name such as ``bigsink.costs.zarr.ZarrCost`` names, or None."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


def resolve_reexport(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve a Python reference to an object's defining path (``bigsink.costs.ZarrCost``,
    ``bigsink.result.SinkhornResult.plan``, as docstrings and type hints write them) to its
    page under the top-level name (``bigsink.ZarrCost``): apigen documents each re-exported
    object once, there."""
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("bigsink."):
        return None
    parts = target.split(".")
    for cut in range(len(parts), 1, -1):
        name = _TOP.get(id(_lookup(".".join(parts[:cut]))))
        if name is not None:
            alias = ".".join(["bigsink", name, *parts[cut:]])
            if alias == target:
                return None
            return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder,
                                                      node["reftype"], alias, node, contnode)
    return None


# Links from the markdown pages to repository files that are not part of this site, and the
# page of the site that stands for each (the user guide is derived from README.md).
REPO_LINKS = {"../README.md": "guide/getting-started.rst"}

_GALLERY_LABEL = re.compile(r"^\.\. _sphx_glr_\S+\.py:\n", re.MULTILINE)
_TITLED = re.compile(r"\s*\n[^\n]+\n([=\-~^\"'`#*+])\1{2,}[ \t]*\n")


def fix_sources(app: Any, docname: str, source: list[str]) -> None:
    """Two rewrites of sources as read, so that the pages can stay as they are elsewhere:

    * a gallery page whose example's docstring has no reST title (the examples' docstrings
      are plain text, also their ``--help``) gets the script's name as its title;
    * the markdown pages' links to repository files outside docs/ (``REPO_LINKS``) point at
      the page of this site that stands for them.
    """
    text = source[0]
    if docname.startswith("gallery/") and (label := _GALLERY_LABEL.search(text)):
        if not _TITLED.match(text[label.end():]):
            title = docname.rsplit("/", 1)[-1] + ".py"
            text = f"{text[:label.end()]}\n{title}\n{'=' * len(title)}\n{text[label.end():]}"
    if Path(app.env.doc2path(docname)).suffix == ".md":
        for repo_path, page in REPO_LINKS.items():
            text = text.replace(f"]({repo_path})", f"]({page})")
    source[0] = text


def setup(app: Any) -> None:
    app.connect("missing-reference", resolve_reexport)
    app.connect("source-read", fix_sources)
