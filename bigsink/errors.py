"""Exceptions raised by bigsink."""

from __future__ import annotations

__all__ = ["ClusterError", "ConvergenceWarning", "InputError", "NumericalError",
           "PrecisionWarning"]


class InputError(ValueError):
    """Bad input, found before any work starts. The message names the argument, what was
    received, and how to fix it."""


class NumericalError(RuntimeError):
    """A solve produced non-finite potentials or a plan whose mass vanished. bigsink raises
    this instead of returning such a result."""


class ClusterError(RuntimeError):
    """The cluster a solve ran on was lost mid-solve (its Dask scheduler). The message names
    it and how to go on: start it again and resume from the checkpoint."""


class ConvergenceWarning(UserWarning):
    """A solve stopped at ``max_iter`` before reaching ``tol``; the message names the error."""


class PrecisionWarning(UserWarning):
    """``tol`` is below what the cost's dtype can resolve (float32 costs)."""
