"""The two ways a data pickle is refused: a global or operation the unpickler does not allow, or a file that is not
readable data."""
from __future__ import annotations

import pickle

from ..errors import LSR1Error

__all__ = ["UnsafePickleError", "DataFormatError"]


class UnsafePickleError(LSR1Error, pickle.UnpicklingError):
    """A pickle names a global that the restricted unpickler does not allow."""


class DataFormatError(LSR1Error):
    """A data file is unreadable or lacks the keys / shapes its format requires."""
