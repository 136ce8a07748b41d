"""Exceptions raised by lsr1_core.

Every error names what was wrong and, where possible, what to do about it.
They subclass ValueError so code that catches ValueError keeps working.
"""
import sys
from typing import Callable


class LSR1Error(ValueError):
    """Base class for the library's input and state errors."""


class ShapeError(LSR1Error):
    """A tensor has the wrong number of dimensions or the wrong size."""


class NonFiniteError(LSR1Error):
    """A starting point or parameter contains NaN or infinity."""


class NonFiniteMetaGradient(LSR1Error):
    """Meta-training produced a non-finite meta-gradient: training stops at that iteration (the parameters were not
    updated, so the last checkpoint stays good). ``iteration`` and ``terms`` (the meta-loss terms whose own gradient
    was not finite) say where and what."""

    def __init__(self, message: str, iteration: int | None = None, terms: tuple[str, ...] = ()):
        super().__init__(message)
        self.iteration, self.terms = iteration, tuple(terms)


class UnknownNameError(LSR1Error, KeyError):
    """An unknown solver, objective or preset name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else ""


class CheckpointError(LSR1Error):
    """A checkpoint file is missing, truncated, foreign or does not fit the model."""


def check_memory(memory, what: str = "buffer size L (memory)") -> int:
    """The one check of a buffer size (L-SR1's L, L-BFGS's and SR1's m): a positive integer, not a bool."""
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
        raise LSR1Error(f"{what} must be a positive integer, got {memory!r}")
    return memory


def run_cli(command: Callable[[], int]) -> int:
    """Run a command line's action: an ``LSR1Error`` is printed as ``error: …`` on stderr, exit status 2."""
    try:
        return command()
    except LSR1Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
