"""The API reference's module pages, written from the module list in ``api.rst`` and each
module's ``__all__`` (``conf.py`` calls :func:`write_pages` before autosummary runs).

``api.rst`` lists one module per line, as ``reference/<module>`` in its toctree. For each,
:func:`module_page` writes ``reference/<module>.rst``: the module's docstring, then every
name in its ``__all__`` in an autosummary table. A name of the module's own gets a page of
its own (autosummary generates ``reference/names/<module>.<name>.rst``); a name that is the
very object of a top-level ``bigsink.<name>`` (a re-export) links to that page instead, so
each object is described once and a short name in a docstring resolves to one target.

No Sphinx import here: ``tests/test_docs.py`` checks the pages statically.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from types import ModuleType

DOCS = Path(__file__).resolve().parent
API_RST = DOCS / "api.rst"
PAGES = "reference"                 # module pages: docs/reference/<module>.rst
NAMES = "names"                     # their names' pages: docs/reference/names/<module>.<name>.rst
TOP = "bigsink"

_ENTRY = re.compile(rf"^\s+{PAGES}/({TOP}(?:\.\w+)*)\s*$")
KINDS = ("Classes", "Functions", "Exceptions and warnings", "Data")


def documented_modules(api_rst: Path = API_RST) -> list[str]:
    """The modules ``api.rst`` lists (its ``reference/<module>`` toctree lines), in order."""
    return [m.group(1) for line in api_rst.read_text().splitlines()
            if (m := _ENTRY.match(line))]


def kind_of(obj: object) -> str:
    """The heading a public object is listed under."""
    if inspect.isclass(obj):
        return KINDS[2] if issubclass(obj, BaseException) else KINDS[0]
    if inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.ismethod(obj):
        return KINDS[1]
    return KINDS[3]


def public_names(module: ModuleType) -> list[str]:
    """The module's ``__all__`` (a documented module must define one)."""
    names = getattr(module, "__all__", None)
    if names is None:
        raise ValueError(f"{module.__name__} has no __all__: the API reference documents "
                         "exactly a module's __all__")
    return list(names)


def top_level_alias(modname: str, name: str, obj: object) -> str | None:
    """``bigsink.<name>`` when ``obj`` is that top-level object (a re-export), else None."""
    if modname == TOP:
        return None
    top = importlib.import_module(TOP)
    if name in getattr(top, "__all__", ()) and getattr(top, name, None) is obj:
        return f"{TOP}.{name}"
    return None


def _shadowed(modname: str, module: ModuleType) -> bool:
    """Whether the parent package's attribute of this name is something else (``bigsink.sweep``
    is the function, not the module): the module then takes no index entry, so that the one
    name ``bigsink.sweep`` describes the function only."""
    parent, _, last = modname.rpartition(".")
    return bool(parent) and getattr(importlib.import_module(parent), last, None) is not module


def _table(rows: list[str], toctree: bool) -> list[str]:
    head = [".. autosummary::"] + ([f"   :toctree: {NAMES}"] if toctree else [])
    return head + ["   :nosignatures:", ""] + [f"   {r}" for r in rows] + [""]


def module_page(modname: str) -> str:
    """The reStructuredText of one module's page."""
    title = [modname, "=" * len(modname), ""]
    try:
        module = importlib.import_module(modname)
    except ImportError:
        # autodoc then reports the failed import: a listed module must exist
        return "\n".join([*title, f".. automodule:: {modname}", ""])
    lines = [*title, f".. automodule:: {modname}", "   :no-members:"]
    if _shadowed(modname, module):
        lines.append("   :no-index:")
    lines += ["", f".. currentmodule:: {modname}", ""]
    own: dict[str, list[str]] = {k: [] for k in KINDS}
    linked: dict[str, list[str]] = {k: [] for k in KINDS}
    for name in public_names(module):
        obj = getattr(module, name)
        alias = top_level_alias(modname, name, obj)
        if alias is None:
            own[kind_of(obj)].append(name)
        else:
            linked[kind_of(obj)].append(f"~{alias}")
    for kind in KINDS:
        if own[kind] or linked[kind]:
            lines += [f".. rubric:: {kind}", ""]
            if own[kind]:
                lines += _table(own[kind], toctree=True)
            if linked[kind]:
                lines += _table(linked[kind], toctree=False)
    return "\n".join(lines)


def write_pages(docs: Path = DOCS) -> list[Path]:
    """Write ``reference/<module>.rst`` for every module ``api.rst`` lists; a page whose text
    is unchanged is left alone (Sphinx then does not reread it)."""
    out = docs / PAGES
    out.mkdir(exist_ok=True)
    written = []
    for modname in documented_modules(docs / "api.rst"):
        path = out / f"{modname}.rst"
        text = module_page(modname)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written
