"""What every example shares: ``--small`` (the CI size) and ``--out DIR`` (its outputs)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def example_parser(doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``--small`` and ``--out DIR``, for an example to add its own options."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().split("\n")[0] or None)
    parser.add_argument("--small", action="store_true", help="a CI-sized problem")
    parser.add_argument("--out", type=Path, default=Path("."), help="where to write outputs")
    return parser


def example_args(doc: str | None, parser: argparse.ArgumentParser | None = None,
                 argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``--small`` and ``--out DIR`` (created if missing), and the options an example
    added to ``parser`` (from :func:`example_parser`), for an example script."""
    args = (parser or example_parser(doc)).parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return args
