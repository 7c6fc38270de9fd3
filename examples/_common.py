"""What every example shares: ``--small`` (the CI size) and ``--out DIR`` (its outputs)."""

from __future__ import annotations

import argparse
from pathlib import Path


def example_args(doc: str | None) -> argparse.Namespace:
    """Parse ``--small`` and ``--out DIR`` (created if missing) for an example script."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--small", action="store_true", help="a CI-sized problem")
    parser.add_argument("--out", type=Path, default=Path("."), help="where to write outputs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    return args
