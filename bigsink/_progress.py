"""The one progress-bar factory (tqdm): solves, sweeps, and passes that write stores."""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar"]


def progress_bar(desc: str, unit: str, enabled: bool | None, total: int | None = None) -> Any:
    """A tqdm bar that leaves no line behind; ``enabled`` None shows it only on a terminal,
    False never, True always."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False,
                disable=None if enabled is None else not enabled)
