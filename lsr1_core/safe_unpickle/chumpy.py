"""Chumpy stand-ins: what a pickled chumpy node becomes (its state, without chumpy), and :func:`to_numpy`."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import LSR1Error
from .errors import DataFormatError, UnsafePickleError

_MAX_DENSE_ELEMENTS = 1 << 28  # a sparse matrix made dense (to_numpy) may hold at most this many entries


class ChumpyStandIn:
    """What a pickled chumpy node becomes: its state, without chumpy.

    ``chumpy_class`` is the pickled class path (e.g. ``"chumpy.ch.Ch"``); ``state`` the pickled
    ``__dict__``. ``.r`` is the node's value as a numpy array (for the node types listed in the
    docstring of ``lsr1_core.safe_unpickle``), ``.x`` the raw array of a plain ``Ch``.
    """

    chumpy_class = "chumpy"

    def __init__(self, *args, **kwargs):  # chumpy's own pickles never call this; be permissive
        self.state: dict = {}
        if args:
            self.state["x"] = args[0]
        self.state.update(kwargs)

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise UnsafePickleError(f"{self.chumpy_class}: unexpected pickled state of type "
                                    f"{type(state).__name__} (expected a dict)")
        self.state = state

    def __reduce__(self):  # re-pickling a stand-in gives a plain array, never a chumpy reference
        return self.r.__reduce__()

    # value ---------------------------------------------------------------------------------
    def _compute(self) -> np.ndarray:
        raise DataFormatError(f"cannot evaluate a pickled {self.chumpy_class} node without chumpy "
                              "(only Ch, reordering.Select, reordering.transpose and "
                              "reordering.Reshape are supported)")

    @property
    def r(self) -> np.ndarray:
        cached = self.__dict__.get("_r")
        if cached is None:
            if self.__dict__.get("_evaluating"):
                raise DataFormatError(f"pickled chumpy graph is cyclic: {self.chumpy_class} depends on itself")
            self.__dict__["_evaluating"] = True
            try:
                cached = np.asarray(self._compute())
            except RecursionError:
                raise DataFormatError("pickled chumpy graph is too deeply nested to evaluate") from None
            except (IndexError, ValueError, TypeError, OverflowError, MemoryError) as e:
                if isinstance(e, LSR1Error):
                    raise
                raise DataFormatError(f"pickled {self.chumpy_class} node cannot be evaluated "
                                      f"({type(e).__name__}: {e})") from None
            finally:
                self.__dict__["_evaluating"] = False
            if cached.dtype.hasobject:
                raise DataFormatError(f"pickled {self.chumpy_class} node does not evaluate to a numeric array")
            self.__dict__["_r"] = cached
        return cached

    def _term(self, name: str):
        if name not in self.state:
            raise DataFormatError(f"pickled {self.chumpy_class} node lacks its '{name}' term")
        return self.state[name]

    @property
    def x(self):
        return to_numpy(self._term("x"))

    @property
    def shape(self):
        return self.r.shape

    @property
    def ndim(self):
        return self.r.ndim

    def __array__(self, dtype=None, copy=None):
        r = self.r
        return r.astype(dtype) if dtype is not None else r

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.chumpy_class}>"


class _ChCh(ChumpyStandIn):
    chumpy_class = "chumpy.ch.Ch"

    def _compute(self):
        return to_numpy(self._term("x"))


class _ChSelect(ChumpyStandIn):
    chumpy_class = "chumpy.reordering.Select"

    def _compute(self):
        a = to_numpy(self._term("a"))
        out = np.asarray(a).ravel()[np.asarray(to_numpy(self._term("idxs")))].copy()
        if "preferred_shape" in self.state:
            out = out.reshape(tuple(self.state["preferred_shape"]))
        return out


class _ChTranspose(ChumpyStandIn):
    chumpy_class = "chumpy.reordering.transpose"

    def _compute(self):
        axes = self.state.get("axes")
        return np.ascontiguousarray(np.transpose(to_numpy(self._term("a")), axes=axes))


class _ChReshape(ChumpyStandIn):
    chumpy_class = "chumpy.reordering.Reshape"

    def _compute(self):
        return to_numpy(self._term("a")).reshape(self._term("newshape"))


_CHUMPY_CLASSES = {
    ("chumpy.ch", "Ch"): _ChCh, ("chumpy", "Ch"): _ChCh,
    ("chumpy.reordering", "Select"): _ChSelect,
    ("chumpy.reordering", "transpose"): _ChTranspose,
    ("chumpy.reordering", "Reshape"): _ChReshape,
}
def to_numpy(value: Any) -> Any:
    """A chumpy stand-in as its numpy value, a scipy sparse matrix as a dense array, a numpy
    array unchanged; anything else through ``np.asarray``."""
    if isinstance(value, ChumpyStandIn):
        return value.r
    if hasattr(value, "toarray") and "scipy.sparse" in type(value).__module__:
        rows, cols = value.shape
        if rows * cols > _MAX_DENSE_ELEMENTS:
            raise DataFormatError(f"sparse matrix of shape {value.shape} is too large to make dense")
        return value.toarray()
    return np.asarray(value)
