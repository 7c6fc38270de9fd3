"""Every public name is reachable from the API reference's source, without building the docs.

CI builds the site with ``make docs``; this only reads ``docs/api.rst`` (the one list of
documented modules) and the module pages ``docs/apigen.py`` writes from it, so a module left
out of the list, or a name of ``bigsink.__all__`` (or ``bigsink.ot.__all__``) that its
module's page neither gives a page nor links to one, fails here in a second.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

import bigsink

DOCS = Path(__file__).resolve().parent.parent / "docs"

#: The modules users touch: each must have a page in the API reference.
REQUIRED = ["bigsink", "bigsink.ot", "bigsink.plot", "bigsink.costs", "bigsink.executors",
            "bigsink.solver", "bigsink.sweep", "bigsink.toolbox", "bigsink.autodiff",
            "bigsink.errors"]


def _apigen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bigsink_docs_apigen", DOCS / "apigen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


apigen = _apigen()


def page_entries(page: str) -> tuple[set[str], set[str]]:
    """(names given a page, top-level names linked to) in a module page's autosummary tables."""
    own: set[str] = set()
    linked: set[str] = set()
    for table in re.split(r"^\.\. ", page, flags=re.MULTILINE):
        if not table.startswith("autosummary::"):
            continue
        body = table.split("\n\n", 1)[1] if "\n\n" in table else ""
        rows = [line.strip() for line in body.splitlines() if line.startswith("   ")]
        if ":toctree:" in table.split("\n\n", 1)[0]:
            own.update(rows)
        else:
            linked.update(r.removeprefix("~").removeprefix("bigsink.") for r in rows)
    return own, linked


def unreachable(modname: str, listed: list[str]) -> list[str]:
    """The names of ``modname.__all__`` that the API reference, listing ``listed``, misses."""
    names = list(importlib.import_module(modname).__all__)
    if modname not in listed:
        return names
    own, linked = page_entries(apigen.module_page(modname))
    top_own = page_entries(apigen.module_page("bigsink"))[0] if "bigsink" in listed else set()
    return [n for n in names if n not in own and not (n in linked and n in top_own)]


def _modules_under_test() -> list[str]:
    mods = ["bigsink"]
    try:
        importlib.import_module("bigsink.ot")
    except ModuleNotFoundError:
        pass
    else:
        mods.append("bigsink.ot")
    return mods


def test_api_lists_the_modules_users_touch() -> None:
    listed = apigen.documented_modules()
    assert [m for m in REQUIRED if m not in listed] == []
    assert len(listed) == len(set(listed)), "a module listed twice in docs/api.rst"
    for modname in listed:
        assert (DOCS / "api.rst").read_text().count(f"reference/{modname}\n") == 1


@pytest.mark.parametrize("modname", _modules_under_test())
def test_every_public_name_has_a_page(modname: str) -> None:
    assert unreachable(modname, apigen.documented_modules()) == []


def test_reexports_link_to_the_top_level_page() -> None:
    own, linked = page_entries(apigen.module_page("bigsink.costs"))
    assert "DenseCost" in linked and "DenseCost" not in own        # one page per object
    assert "MappedCost" in own                                     # not exported at the top


def test_the_check_can_fail() -> None:
    listed = apigen.documented_modules()
    assert set(unreachable("bigsink", [m for m in listed if m != "bigsink"])) == \
        set(bigsink.__all__)
    # a re-export whose top-level page is missing is not reachable either
    assert "DenseCost" in unreachable("bigsink.costs", [m for m in listed if m != "bigsink"])


def test_every_listed_module_defines_all() -> None:
    for modname in apigen.documented_modules():
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError:
            pytest.fail(f"docs/api.rst lists {modname}, which does not import")
        assert isinstance(getattr(module, "__all__", None), list | tuple), modname
