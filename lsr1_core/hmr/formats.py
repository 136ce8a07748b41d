"""Loaders for the real data formats users bring: SMPL-family pickles, AMASS ``.npz``, 3DPW ``.pkl``.

Why a restricted unpickler. A pickle is a program: unpickling calls whatever callables the file
names (``os.system`` included) and sets any state on the objects it builds, so the project never
opens a user-handed file with the plain ``pickle`` module. ``safe_load_pickle`` runs an
``Unpickler`` in which every opcode that calls, creates or mutates an object is checked here:

  * numpy arrays, scalars and dtypes (``_reconstruct`` / ``scalar`` / ``_frombuffer`` under their
    numpy 1 and 2 module names, ``numpy.ndarray``, ``numpy.dtype``) are *rebuilt* by this module,
    never handed to numpy's ``__setstate__``: only boolean, integer, float, complex and fixed-width
    string dtypes exist, and an array is the file's bytes (count checked) copied into such a dtype.
    No object dtype, structured dtype or pointer from the file can appear;
  * scipy.sparse CSC/CSR matrices and arrays (SMPL's ``J_regressor``), under their old
    (``scipy.sparse.csc``) and new (``scipy.sparse._csc``) module names, rebuilt through their
    validating constructor from the pickled ``data`` / ``indices`` / ``indptr`` / ``_shape``;
  * builtin containers (dict, list, tuple, set, frozenset, bytearray from bytes, complex, object),
    ``collections.OrderedDict``, ``copyreg._reconstructor`` restricted to the classes here, and
    ``_codecs.encode`` restricted to the latin-1/UTF-8/ASCII codecs (how Python 3 writes bytes at
    protocol ≤ 2);
  * chumpy objects, which official SMPL/MANO pickles contain and whose package no longer works
    with numpy ≥ 1.24 / Python ≥ 3.11. They are *not* imported: ``chumpy.*`` classes map onto
    ``ChumpyStandIn``, which only stores the pickled state. ``.r`` (and ``np.asarray``) evaluates
    the node types that hold data in official model files: ``Ch`` (its array ``x``),
    ``reordering.Select`` (``a.ravel()[idxs].reshape(preferred_shape)``, as chumpy computes it),
    ``reordering.transpose`` and ``reordering.Reshape``; other chumpy nodes load as opaque
    stand-ins whose ``.r`` raises. A cyclic or too deep graph raises ``DataFormatError``.

A BUILD (``__setstate__``) is allowed only on the objects above, never on a class, function or
module, so a file cannot change anything outside the objects it creates.
Every other global is refused with ``UnsafePickleError`` naming it, before anything is called.
Python-2 pickles (3DPW, SMPL v1.0) need ``encoding='latin1'``, the default here; it only affects
Python-2 ``str`` objects, so Python-3 pickles load the same.
"""
from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LSR1Error, NonFiniteError

__all__ = [
    "UnsafePickleError", "DataFormatError", "ChumpyStandIn", "safe_load_pickle", "safe_loads_pickle",
    "to_numpy", "load_amass_npz", "ThreeDPWSequence", "load_3dpw_sequence",
]


class UnsafePickleError(LSR1Error, pickle.UnpicklingError):
    """A pickle names a global that the restricted unpickler does not allow."""


class DataFormatError(LSR1Error):
    """A data file is unreadable or lacks the keys / shapes its format requires."""


# -- chumpy stand-ins --------------------------------------------------------------------------
class ChumpyStandIn:
    """What a pickled chumpy node becomes: its state, without chumpy.

    ``chumpy_class`` is the pickled class path (e.g. ``"chumpy.ch.Ch"``); ``state`` the pickled
    ``__dict__``. ``.r`` is the node's value as a numpy array (for the node types listed in the
    module docstring), ``.x`` the raw array of a plain ``Ch``.
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


# -- the restricted unpickler ------------------------------------------------------------------
# Design (see docs/reliability.md). The loader runs on the pure-Python ``pickle._Unpickler`` so that
# every opcode that creates or mutates an object goes through code here:
#   * ``find_class`` never hands out a real numpy or scipy callable. ``numpy.dtype``,
#     ``numpy.core.multiarray._reconstruct`` / ``scalar``, ``numpy.core.numeric._frombuffer`` and the
#     scipy sparse classes resolve to functions and markers of this module that record what the file
#     asks for (``_DTypeProxy``, ``_ArrayProxy``, ``_SparseProxy``).
#   * BUILD (``__setstate__``) is allowed on those proxies and on chumpy stand-in *instances* only; it
#     never reaches ``np.dtype.__setstate__`` / ``np.ndarray.__setstate__`` (whose state can make an
#     object dtype out of raw bytes: pointers read from the file) and never sets an attribute on a
#     class, a function or a module (a pickle could otherwise rewrite ``csc_matrix.toarray``).
#   * A dtype is rebuilt from scratch from its kind and size: booleans, integers, floats and complex
#     numbers of the usual sizes and fixed-width byte/unicode strings, in either byte order. No object,
#     structured, sub-array, void or datetime dtype can be made. An array is ``np.frombuffer`` of the
#     file's bytes in such a dtype, copied, after checking that the byte count equals shape × item
#     size. A sparse matrix is rebuilt through its constructor, which validates its index arrays.
#   * On BUILD the proxy is replaced by the real value on the stack and in the memo, so later
#     references to it get the array itself.
#   * Nothing global changes during a load: opaque chumpy classes are made per load, EXT opcodes
#     (which fill ``copyreg``'s cache) are refused.
# Every failure is an ``UnsafePickleError`` (a refused global or operation) or a ``DataFormatError``.
_SAFE_CODECS = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1", "utf-8", "utf8", "ascii"}


def _safe_encode(obj, encoding="utf-8", errors="strict"):
    if not isinstance(obj, str):
        raise UnsafePickleError(f"pickle asks _codecs.encode to encode a {type(obj).__name__}; only str is allowed")
    if str(encoding).lower().replace("_", "-") not in _SAFE_CODECS or errors != "strict":
        raise UnsafePickleError(f"pickle asks for _codecs.encode with codec {encoding!r} ({errors!r}); "
                                "only latin-1, UTF-8 and ASCII (strict) are allowed")
    return codecs.encode(obj, encoding, errors)


def _safe_bytearray(*args):
    """``bytearray(str, encoding)`` / ``bytearray(bytes)`` as protocol ≤ 4 pickles write it; never
    ``bytearray(n)`` (a file could ask for terabytes of zeros)."""
    if not args:
        return bytearray()
    if isinstance(args[0], (bytes, bytearray)) and len(args) == 1:
        return bytearray(args[0])
    if isinstance(args[0], str) and len(args) == 2:
        return bytearray(_safe_encode(args[0], args[1]))
    raise UnsafePickleError("pickle calls bytearray with arguments other than bytes or (str, codec)")


def _safe_bytes(*args):
    """``bytes()`` (how protocol ≤ 2 writes b"") or a copy of bytes; never ``bytes(n)``."""
    if not args:
        return b""
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytes(args[0])
    raise UnsafePickleError("pickle calls bytes with arguments other than bytes")


# dtypes a data file may hold: kind letter → allowed item sizes (None: any positive size)
_DTYPE_SIZES = {"b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (2, 4, 8, 12, 16),
                "c": (8, 16, 24, 32), "S": None, "U": None}
_MAX_STR_ITEMSIZE = 1 << 24
_MAX_TUPLE_DEPTH = 100
_MAX_DENSE_ELEMENTS = 1 << 28  # a sparse matrix made dense (to_numpy) may hold at most this many entries


def _check_dtype(dt) -> np.dtype:
    """``dt`` if it is a plain numeric / boolean / string dtype, else ``UnsafePickleError``."""
    if (not isinstance(dt, np.dtype) or dt.hasobject or dt.fields is not None or dt.subdtype is not None
            or dt.kind not in _DTYPE_SIZES or dt.itemsize <= 0
            or (_DTYPE_SIZES[dt.kind] is not None and dt.itemsize not in _DTYPE_SIZES[dt.kind])):
        raise UnsafePickleError(f"refusing dtype {dt!r}: data files may only hold booleans, integers, floats, "
                                "complex numbers and fixed-width strings")
    return dt


class _Proxy:
    """Stands for a numpy/scipy object until its BUILD; replaced by ``value`` on the stack and in the memo."""

    value = None

    def __init__(self):
        self.memo_keys: list = []

    def __setstate__(self, state):  # never reached through pickle (BUILD is handled in the unpickler)
        raise UnsafePickleError("internal: proxy state set outside the restricted unpickler")

    def resolved(self):
        if self.value is None:
            raise DataFormatError(f"pickle uses a {self.what} before its state was set")
        return self.value

    def __array__(self, dtype=None, copy=None):  # a proxy that escaped into a container behaves as its value
        v = np.asarray(self.resolved())
        return v.astype(dtype) if dtype is not None else v

    def __repr__(self):
        return f"<{type(self).__name__}>"


class _DTypeProxy(_Proxy):
    what = "numpy dtype"

    def __init__(self, spec):
        super().__init__()
        if not isinstance(spec, str):
            raise UnsafePickleError(f"refusing numpy.dtype({type(spec).__name__}): only simple type codes "
                                    "(e.g. 'f8', 'i4', 'U20') are allowed, never structured or object dtypes")
        self.spec = spec
        self.value = self._make(spec, None, None)

    @staticmethod
    def _make(spec, byteorder, elsize):
        m = re.fullmatch(r"([biufcSU])(\d{1,9})?", spec)
        if m is None:
            raise UnsafePickleError(f"refusing numpy dtype {spec!r}: data files may only hold booleans, integers, "
                                    "floats, complex numbers and fixed-width strings (never objects)")
        kind, digits = m.group(1), m.group(2)
        if kind in "SU":
            # the type code counts characters ('U5'), the state's elsize bytes (20)
            size = elsize if elsize not in (None, -1, 0) else int(digits or 0) * (4 if kind == "U" else 1)
            if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= _MAX_STR_ITEMSIZE \
                    or (kind == "U" and size % 4):
                raise UnsafePickleError(f"refusing string dtype {spec!r} of item size {size!r}")
            dt = np.dtype(f"S{size}" if kind == "S" else f"U{size // 4}")
        else:
            if digits is None:
                raise UnsafePickleError(f"refusing numpy dtype {spec!r} without an item size")
            dt = np.dtype(f"{kind}{digits}")
            if elsize not in (None, -1, dt.itemsize):
                raise UnsafePickleError(f"refusing dtype {spec!r} with item size {elsize!r}")
        if byteorder in ("<", ">") and dt.itemsize > 1 and kind != "S":
            dt = dt.newbyteorder(byteorder)
        elif byteorder not in (None, "<", ">", "|", "="):
            raise UnsafePickleError(f"refusing dtype {spec!r} with byte order {byteorder!r}")
        return _check_dtype(dt)

    def build(self, state):
        if not isinstance(state, tuple) or not 5 <= len(state) <= 9:
            raise UnsafePickleError("refusing a numpy dtype state that is not numpy's (a tuple of 5 to 9 items)")
        if len(state) == 5:        # version 0: (endian, subarray, fields, elsize, alignment)
            endian, rest, elsize = state[0], (state[1], state[2]), state[3]
        elif len(state) == 6:      # (version, endian, subarray, fields, elsize, alignment)
            endian, rest, elsize = state[1], (state[2], state[3]), state[4]
        else:                      # (version, endian, subarray, names, fields, elsize, alignment[, flags[, metadata]])
            endian, rest, elsize = state[1], (state[2], state[3], state[4]), state[5]
            if len(state) == 9 and state[8] not in (None, {}):
                raise UnsafePickleError("refusing a numpy dtype with metadata")
        if any(r is not None for r in rest):
            raise UnsafePickleError(f"refusing numpy dtype {self.spec!r} with fields or a sub-array: data files may "
                                    "only hold plain numeric and string arrays")
        self.value = self._make(self.spec, endian, elsize)
        return self.value


def _dtype_arg(d) -> np.dtype:
    if isinstance(d, _DTypeProxy):
        return d.value
    if isinstance(d, np.dtype):   # only ever one this module rebuilt (find_class never gives out numpy.dtype)
        return _check_dtype(d)
    raise UnsafePickleError(f"expected a numpy dtype, got {type(d).__name__}")


def _raw_bytes(raw) -> bytes | bytearray | memoryview:
    if isinstance(raw, str):  # a Python-2 str, decoded with latin1 (numpy does the same)
        return raw.encode("latin1")
    if isinstance(raw, (bytes, bytearray)):
        return raw
    if isinstance(raw, pickle.PickleBuffer):
        return raw.raw()
    raise UnsafePickleError(f"refusing array data of type {type(raw).__name__} (object arrays are not allowed)")


def _shape_arg(shape) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if (not isinstance(shape, (tuple, list)) or len(shape) > 32
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise DataFormatError(f"invalid array shape {shape!r} in pickle")
    return tuple(shape)


def _array_from(raw, dt: np.dtype, shape, order: str = "C") -> np.ndarray:
    shape = _shape_arg(shape)
    buf = _raw_bytes(raw)
    n = 1
    for s in shape:
        n *= s
    if n * dt.itemsize != len(buf):
        raise DataFormatError(f"array of shape {shape} and dtype {dt} needs {n * dt.itemsize} bytes, "
                              f"the pickle holds {len(buf)}")
    if order not in ("C", "F"):
        raise DataFormatError(f"invalid array order {order!r} in pickle")
    if n == 0:
        return np.empty(shape, dtype=dt, order=order)
    if dt.kind == "U":  # UCS-4 code units beyond U+10FFFF would break every later read of the array
        units = np.frombuffer(buf, dtype=np.dtype("u4").newbyteorder(dt.byteorder if dt.byteorder in "<>" else "="))
        if units.size and int(units.max()) > 0x10FFFF:
            raise DataFormatError("string array holds invalid Unicode code points")
    return np.frombuffer(buf, dtype=dt).reshape(shape, order=order).copy(order="K")


class _ArrayProxy(_Proxy):
    what = "numpy array"

    def build(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise UnsafePickleError("refusing a numpy array state that is not numpy's (version, shape, dtype, "
                                    "fortran, data)")
        shape, dt, fortran, raw = state[-4:]
        if not isinstance(fortran, (bool, int)):
            raise DataFormatError("invalid array order flag in pickle")
        self.value = _array_from(raw, _dtype_arg(dt), shape, "F" if fortran else "C")
        return self.value


class _NDArrayMarker:
    """What ``numpy.ndarray`` resolves to: only a tag for ``_reconstruct``."""

    def __repr__(self):
        return "<numpy.ndarray (restricted)>"


_NDARRAY = _NDArrayMarker()


def _safe_reconstruct(subtype, shape=(0,), dtype=b"b"):
    if subtype is not _NDARRAY:
        raise UnsafePickleError(f"refusing numpy _reconstruct of {subtype!r}: only plain numpy.ndarray")
    return _ArrayProxy()


def _safe_scalar(dtype, data=None):
    dt = _dtype_arg(dtype)
    if data is None:
        raise DataFormatError("numpy scalar without data in pickle")
    return _array_from(data, dt, ())[()]


def _safe_frombuffer(buf, dtype, shape, order="C"):
    return _array_from(buf, _dtype_arg(dtype), shape, order)


def _safe_dtype(spec, align=False, copy=False):
    return _DTypeProxy(spec)


_SPARSE_NAMES = ("csc_matrix", "csr_matrix", "csc_array", "csr_array")
_SPARSE_MODULES = ("scipy.sparse", "scipy.sparse.csc", "scipy.sparse.csr", "scipy.sparse._csc",
                   "scipy.sparse._csr", "scipy.sparse._arrays", "scipy.sparse.compressed",
                   "scipy.sparse._compressed")


class _SparseSpec:
    """What a scipy.sparse class name resolves to: calling / instantiating it gives a proxy."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __call__(self, *args, **kwargs):
        if args or kwargs:
            raise UnsafePickleError(f"refusing to call scipy.sparse.{self.name} with arguments from a pickle")
        return _SparseProxy(self.name)

    def __repr__(self):
        return f"<scipy.sparse.{self.name} (restricted)>"


class _SparseProxy(_Proxy):
    what = "scipy sparse matrix"

    def __init__(self, name):
        super().__init__()
        self.name = name

    def build(self, state):
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]
        if not isinstance(state, dict):
            raise UnsafePickleError(f"refusing scipy.sparse.{self.name} state of type {type(state).__name__}")
        try:
            import scipy.sparse  # heavy (0.2-0.4 s on the HMR page's first visit) and needed only for SMPL files
            cls = getattr(scipy.sparse, self.name)
            parts = [np.asarray(state[k]) for k in ("data", "indices", "indptr")]
            shape = _shape_arg(state.get("_shape", state.get("shape")))
            if len(shape) != 2:
                raise DataFormatError(f"sparse matrix shape must have 2 entries, got {shape}")
            for a in parts:
                _check_dtype(a.dtype)
            self.value = cls(tuple(parts), shape=shape)
            self.value.check_format(full_check=True)
        except KeyError as e:
            raise DataFormatError(f"pickled scipy.sparse.{self.name} lacks {e}") from None
        except (ValueError, TypeError, IndexError, OverflowError) as e:
            if isinstance(e, LSR1Error):
                raise
            raise DataFormatError(f"pickled scipy.sparse.{self.name} is inconsistent: {e}") from None
        return self.value


_BUILTINS = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset,
             "bytearray": _safe_bytearray, "bytes": _safe_bytes, "complex": complex, "object": object}
_NEW_OK = (dict, list, tuple, set, frozenset, object, collections.OrderedDict)
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")


def _is_standin_class(cls) -> bool:
    return isinstance(cls, type) and issubclass(cls, ChumpyStandIn)


def _safe_reconstructor(cls, base, state=None):
    """``copyreg._reconstructor`` (protocol 0/1 object pickles) for chumpy stand-ins and sparse matrices."""
    if base is not object or state is not None:
        raise UnsafePickleError(f"copyreg._reconstructor refused for {cls!r} with base {base!r}")
    if _is_standin_class(cls):
        return cls.__new__(cls)
    if isinstance(cls, _SparseSpec):
        return cls()
    raise UnsafePickleError(f"copyreg._reconstructor refused for {cls!r}")


class SafeUnpickler(pickle._Unpickler):
    """An unpickler that builds plain data only (see the module docstring and the design note above)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, *, encoding: str = "latin1"):
        super().__init__(file, encoding=encoding)
        self.memo = _ProxyMemo()
        self._opaque: dict[tuple[str, str], type] = {}
        self._tuple_depth: dict[int, tuple[tuple, int]] = {}

    def find_class(self, module: str, name: str):
        module = _PY2_MODULES.get(module, module)
        if module in _MULTIARRAY and name == "_reconstruct":
            return _safe_reconstruct
        if module in _MULTIARRAY and name == "scalar":
            return _safe_scalar
        if module in _NUMERIC and name == "_frombuffer":
            return _safe_frombuffer
        if module == "numpy" and name == "ndarray":
            return _NDARRAY
        if module == "numpy" and name == "dtype":
            return _safe_dtype
        if module in _SPARSE_MODULES and name in _SPARSE_NAMES:
            return _SparseSpec(name)
        if module == "builtins" and name in _BUILTINS:
            return _BUILTINS[name]
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "copyreg" and name == "_reconstructor":
            return _safe_reconstructor
        if module == "_codecs" and name == "encode":
            return _safe_encode
        if module == "chumpy" or module.startswith("chumpy."):
            cls = _CHUMPY_CLASSES.get((module, name))
            if cls is None:  # one opaque stand-in class per chumpy class name, made for this load only
                if len(self._opaque) > 256:
                    raise UnsafePickleError("pickle names more than 256 chumpy classes")
                cls = self._opaque.get((module, name))
                if cls is None:
                    cls = self._opaque[(module, name)] = type(
                        f"_Chumpy_{name}", (ChumpyStandIn,), {"chumpy_class": f"{module}.{name}"})
            return cls
        raise UnsafePickleError(
            f"refusing to unpickle global '{module}.{name}': only numpy arrays, scipy sparse "
            "matrices, builtin containers and chumpy data nodes are allowed in data files "
            "(a pickle can run arbitrary code, so anything else is refused)")

    # -- the opcodes that create or mutate objects ----------------------------------------------
    def _instantiate(self, klass, args):  # INST / OBJ (protocol 0/1)
        if _is_standin_class(klass) and not args:
            value = klass.__new__(klass)
        elif isinstance(klass, _SparseSpec):
            value = klass(*args)
        elif klass in _NEW_OK:
            value = klass(*args)
        else:
            raise UnsafePickleError(f"refusing to instantiate {klass!r} from a pickle")
        self.append(value)

    def _new(self, cls, args, kwargs):
        if _is_standin_class(cls) and not args and not kwargs:
            return cls.__new__(cls)
        if isinstance(cls, _SparseSpec) and not args and not kwargs:
            return cls()
        if cls in _NEW_OK and isinstance(args, tuple) and not kwargs:
            return cls.__new__(cls, *args)
        raise UnsafePickleError(f"refusing to create {cls!r} with __new__ from a pickle")

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, None))

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, kwargs))

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, (_DTypeProxy, _ArrayProxy, _SparseProxy)):
            value = inst.build(state)
            self.stack[-1] = value
            for key in inst.memo_keys:
                if self.memo.get(key) is inst:
                    self.memo[key] = value
            return
        if isinstance(inst, ChumpyStandIn) and not isinstance(inst, type):
            if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
                state = state[0]
            inst.__setstate__(state)
            return
        raise UnsafePickleError(f"refusing to set the state of {type(inst).__name__} object {inst!r}: a data pickle "
                                "may only set the state of numpy arrays, sparse matrices and chumpy nodes")

    def load_ext(self):
        raise UnsafePickleError("refusing a pickle that uses the copyreg extension registry (EXT opcodes)")

    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build
    for _op in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_op[0]] = load_ext
    del _op

    # Tuples nested a million deep crash CPython when hashed (a dict key, a set element): its tuple hash
    # recurses in C without a depth check. Every opcode's result is looked at; a tuple deeper than
    # _MAX_TUPLE_DEPTH is refused before anything can hash it.
    def _note_tuple(self, t: tuple) -> None:
        seen = self._tuple_depth.get(id(t))
        if seen is not None and seen[0] is t:
            return
        depth = 1
        for item in t:
            if type(item) is tuple:
                known = self._tuple_depth.get(id(item))
                if known is None or known[0] is not item:
                    self._note_tuple(item)  # only reached for tuples made outside an opcode's result
                    known = self._tuple_depth[id(item)]
                depth = max(depth, known[1] + 1)
        if depth > _MAX_TUPLE_DEPTH:
            raise DataFormatError(f"pickle nests tuples more than {_MAX_TUPLE_DEPTH} deep")
        self._tuple_depth[id(t)] = (t, depth)  # keeps t alive for the load, so its id is never reused



def _tuple_checked(op):
    def run(self):
        op(self)
        stack = self.stack
        if stack and type(stack[-1]) is tuple:
            self._note_tuple(stack[-1])
    return run


SafeUnpickler.dispatch = {_k: _tuple_checked(_f) for _k, _f in SafeUnpickler.dispatch.items()}


class _ProxyMemo(dict):
    """The unpickler's memo; remembers under which keys each proxy was stored (to swap in its value)."""

    def __setitem__(self, key, value):
        if isinstance(value, _Proxy):
            value.memo_keys.append(key)
        super().__setitem__(key, value)


def safe_loads_pickle(data: bytes, encoding: str = "latin1", *, source: str = "pickle") -> Any:
    """``safe_load_pickle`` for bytes already in memory."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DataFormatError(f"{source}: expected bytes, got {type(data).__name__}")
    try:
        return SafeUnpickler(io.BytesIO(data), encoding=encoding).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{source}: {e}") from None
    except LSR1Error as e:
        raise DataFormatError(f"{source}: {e}") from None
    except (MemoryError, RecursionError) as e:
        raise DataFormatError(f"{source} is too large or too deeply nested to load ({type(e).__name__})") from None
    except Exception as e:  # any other failure of a crafted or damaged byte stream
        raise DataFormatError(f"{source} is not a readable pickle ({type(e).__name__}: {e})") from None


def safe_load_pickle(path: str | os.PathLike, encoding: str = "latin1") -> Any:
    """Load a data pickle without executing code from it.

    Raises ``UnsafePickleError`` (a ``pickle.UnpicklingError`` and ``ValueError``) naming the first
    refused global or operation, ``FileNotFoundError`` for a missing file, and ``DataFormatError`` for
    a file that is not a readable data pickle.
    """
    p = Path(path)
    if p.exists() and not p.is_file():
        raise DataFormatError(f"{p} is not a regular file (a directory or a device); give a .pkl file")
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {p}")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise DataFormatError(f"cannot read {p}: {e.strerror or e}") from None
    return safe_loads_pickle(data, encoding=encoding, source=str(p))


# -- AMASS -------------------------------------------------------------------------------------
_AMASS_POSE_DIMS = {72: "SMPL", 66: "SMPL body without hands", 156: "SMPL+H", 165: "SMPL-X"}


def _str_of(value) -> str:
    a = np.asarray(value)
    v = a.item() if a.ndim == 0 else (a.ravel()[0] if a.size == 1 else a)
    if isinstance(v, bytes):
        v = v.decode("latin1")
    if not isinstance(v, str):
        raise DataFormatError(f"expected a string, got {a.dtype} array of shape {a.shape}")
    return v


def load_amass_npz(path: str | os.PathLike) -> dict:
    """Load one AMASS motion ``.npz`` (never unpickling: ``allow_pickle=False``).

    Accepts poses of width 156 (SMPL+H: root 0:3, body 3:66, hands 66:156), 165 (SMPL-X: …,
    jaw/eyes 66:75, hands 75:165), 72 (SMPL) or 66. Returns a dict:
      * ``poses`` (T, 72) float64 in SMPL layout: root (3), the 21 body joints (63), and SMPL's two
        hand joints (6), which are the file's own for 72-wide input and zeros otherwise;
      * ``root_orient`` (T, 3) and ``body_pose`` (T, 63): the SMPL-body part;
      * ``trans`` (T, 3); ``betas`` (K,) float64; ``gender`` ('male'/'female'/'neutral'; 'neutral'
        when the file has none); ``fps`` (from ``mocap_framerate`` or ``mocap_frame_rate``);
      * ``n_frames``; ``source_pose_dim`` (the file's pose width).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such AMASS file: {p}")
    if not zipfile.is_zipfile(p):
        raise DataFormatError(f"{p} is not an .npz archive (AMASS motions are .npz files)")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.files)

            def get(k):
                try:
                    return z[k]
                except ValueError as e:  # object arrays need pickle: refused
                    raise DataFormatError(f"{p}: key '{k}' holds Python objects (pickled); "
                                          "refusing to load it with allow_pickle=False") from e
            missing = [k for k in ("poses", "trans", "betas") if k not in keys]
            if missing:
                hint = (" (this looks like an AMASS shape.npz, which holds only the subject's betas "
                        "and gender; pick a motion file)") if "poses" not in keys and "betas" in keys else ""
                raise DataFormatError(f"{p}: missing AMASS key(s) {missing}; found {sorted(keys)}{hint}")
            fps_key = next((k for k in ("mocap_framerate", "mocap_frame_rate") if k in keys), None)
            if fps_key is None:
                raise DataFormatError(f"{p}: no frame rate: expected 'mocap_framerate' or "
                                      f"'mocap_frame_rate'; found {sorted(keys)}")
            poses, trans, betas, fps = get("poses"), get("trans"), get("betas"), get(fps_key)
            gender = _str_of(get("gender")) if "gender" in keys else "neutral"
    except zipfile.BadZipFile as e:
        raise DataFormatError(f"{p} is a damaged .npz archive ({e})") from e

    for k, a in (("poses", poses), ("trans", trans), ("betas", betas), (fps_key, fps)):
        dt = np.asarray(a).dtype
        if not np.issubdtype(dt, np.number) or np.issubdtype(dt, np.complexfloating):
            raise DataFormatError(f"{p}: '{k}' must hold real numbers, got dtype {dt}"
                                  + (" (complex values would lose their imaginary part)"
                                     if np.issubdtype(dt, np.complexfloating) else ""))
    poses = np.asarray(poses, dtype=np.float64)
    trans = np.asarray(trans, dtype=np.float64)
    betas = np.asarray(betas, dtype=np.float64)
    if poses.ndim != 2 or poses.shape[1] not in _AMASS_POSE_DIMS:
        raise DataFormatError(f"{p}: 'poses' must be (T, D) with D one of {sorted(_AMASS_POSE_DIMS)} "
                              f"({', '.join(f'{d}: {n}' for d, n in _AMASS_POSE_DIMS.items())}); "
                              f"got {poses.shape}")
    T = poses.shape[0]
    if T == 0:
        raise DataFormatError(f"{p}: 'poses' has no frames")
    if trans.shape != (T, 3):
        raise DataFormatError(f"{p}: 'trans' must be (T, 3) = ({T}, 3) to match 'poses', got {trans.shape}")
    if betas.ndim == 2 and betas.shape[0] == 1:
        betas = betas[0]
    if betas.ndim != 1 or betas.size == 0:
        raise DataFormatError(f"{p}: 'betas' must be a vector (K,), got {betas.shape}")
    if np.asarray(fps).size != 1:
        raise DataFormatError(f"{p}: '{fps_key}' must be one number, got shape {np.asarray(fps).shape}")
    fps = float(np.asarray(fps).ravel()[0])
    if not np.isfinite(fps) or fps <= 0:
        raise DataFormatError(f"{p}: frame rate '{fps_key}' must be positive, got {fps}")
    for k, a in (("poses", poses), ("trans", trans), ("betas", betas)):
        if not np.isfinite(a).all():
            raise NonFiniteError(f"{p}: '{k}' contains NaN or infinity")
    gender = gender.strip().lower()
    gender = {"m": "male", "f": "female", "n": "neutral"}.get(gender, gender)
    if gender not in ("male", "female", "neutral"):
        raise DataFormatError(f"{p}: unknown gender {gender!r} (expected male, female or neutral)")
    D = poses.shape[1]
    hands = poses[:, 66:72] if D == 72 else np.zeros((T, 6))
    return {
        "poses": np.concatenate([poses[:, :66], hands], 1),
        "root_orient": poses[:, :3].copy(),
        "body_pose": poses[:, 3:66].copy(),
        "trans": trans,
        "betas": betas,
        "gender": gender,
        "fps": fps,
        "n_frames": T,
        "source_pose_dim": D,
    }


# -- 3DPW --------------------------------------------------------------------------------------
@dataclass
class ThreeDPWSequence:
    """One 3DPW sequence; per-actor lists hold one entry per actor, N frames each.

    poses (N, 72) SMPL axis-angle; betas (10,); trans (N, 3); joints3d (N, 24, 3) SMPL joints in
    world coordinates (from ``jointPositions``); poses2d (N, 18, 3) OpenPose COCO-18 (x, y, conf)
    in pixels; campose_valid (N,) bool. cam_poses (N, 4, 4) world→camera; cam_intrinsics (3, 3);
    img_frame_ids (N,) image indices; genders 'm'/'f' per actor.
    """

    sequence: str
    genders: list[str]
    poses: list[np.ndarray]
    betas: list[np.ndarray]
    trans: list[np.ndarray]
    joints3d: list[np.ndarray]
    poses2d: list[np.ndarray]
    campose_valid: list[np.ndarray]
    cam_poses: np.ndarray
    cam_intrinsics: np.ndarray
    img_frame_ids: np.ndarray
    extra_keys: list[str] = field(default_factory=list)

    @property
    def n_actors(self) -> int:
        return len(self.poses)

    @property
    def n_frames(self) -> int:
        return int(self.cam_poses.shape[0])


_3DPW_ACTOR_KEYS = ("betas", "poses", "trans", "jointPositions", "poses2d", "campose_valid", "genders")
_3DPW_KEYS = _3DPW_ACTOR_KEYS + ("sequence", "cam_poses", "cam_intrinsics", "img_frame_ids")


def load_3dpw_sequence(path: str | os.PathLike) -> ThreeDPWSequence:
    """Load a 3DPW sequence ``.pkl`` (a Python-2 pickle) through the restricted unpickler."""
    p = Path(path)
    data = safe_load_pickle(p, encoding="latin1")
    try:
        return _3dpw_from(p, data)
    except (RecursionError, MemoryError, TypeError, ValueError, OverflowError) as e:
        if isinstance(e, LSR1Error):
            raise
        raise DataFormatError(f"{p}: not a 3DPW sequence ({type(e).__name__}: {e})") from None


def _3dpw_from(p: Path, data) -> ThreeDPWSequence:
    if not isinstance(data, dict):
        raise DataFormatError(f"{p}: a 3DPW sequence pickle holds a dict, got {type(data).__name__}")
    missing = [k for k in _3DPW_KEYS if k not in data]
    if missing:
        raise DataFormatError(f"{p}: missing 3DPW key(s) {missing}; found {sorted(map(str, data))}")
    cam_poses = np.asarray(to_numpy(data["cam_poses"]), dtype=np.float64)
    if cam_poses.ndim != 3 or cam_poses.shape[1:] != (4, 4):
        raise DataFormatError(f"{p}: 'cam_poses' must be (N, 4, 4), got {cam_poses.shape}")
    N = cam_poses.shape[0]
    K = np.asarray(to_numpy(data["cam_intrinsics"]), dtype=np.float64)
    if K.shape != (3, 3):
        raise DataFormatError(f"{p}: 'cam_intrinsics' must be (3, 3), got {K.shape}")
    frames = np.asarray(to_numpy(data["img_frame_ids"]))
    if frames.shape != (N,) or not np.issubdtype(frames.dtype, np.integer):
        raise DataFormatError(f"{p}: 'img_frame_ids' must be ({N},) integers, got {frames.shape} {frames.dtype}")
    lists = {}
    for k in _3DPW_ACTOR_KEYS:
        v = data[k]
        if not isinstance(v, (list, tuple)):
            raise DataFormatError(f"{p}: '{k}' must be a per-actor list, got {type(v).__name__}")
        lists[k] = list(v)
    n_act = {k: len(v) for k, v in lists.items()}
    if len(set(n_act.values())) != 1 or n_act["poses"] == 0:
        raise DataFormatError(f"{p}: per-actor lists disagree on the number of actors (or are empty): {n_act}")

    def arr(k, i, shape, dtype=np.float64):
        a = np.asarray(to_numpy(lists[k][i]), dtype=dtype)
        if a.shape != shape:
            raise DataFormatError(f"{p}: actor {i} '{k}' must have shape {shape}, got {a.shape}")
        return a

    poses, betas, trans, joints, kp2d, valid, genders = [], [], [], [], [], [], []
    for i in range(n_act["poses"]):
        poses.append(arr("poses", i, (N, 72)))
        b = np.asarray(to_numpy(lists["betas"][i]), dtype=np.float64)
        if b.ndim != 1 or b.size == 0:
            raise DataFormatError(f"{p}: actor {i} 'betas' must be a vector, got {b.shape}")
        betas.append(b)
        trans.append(arr("trans", i, (N, 3)))
        joints.append(arr("jointPositions", i, (N, 72)).reshape(N, 24, 3))
        kp2d.append(np.ascontiguousarray(arr("poses2d", i, (N, 3, 18)).transpose(0, 2, 1)))
        valid.append(arr("campose_valid", i, (N,)).astype(bool))
        g = lists["genders"][i]
        genders.append(g.decode("latin1") if isinstance(g, bytes) else str(g))
    seq = data["sequence"]
    seq = seq.decode("latin1") if isinstance(seq, bytes) else str(seq)
    return ThreeDPWSequence(sequence=seq, genders=genders, poses=poses, betas=betas, trans=trans,
                            joints3d=joints, poses2d=kp2d, campose_valid=valid, cam_poses=cam_poses,
                            cam_intrinsics=K, img_frame_ids=frames,
                            extra_keys=sorted(str(k) for k in data if k not in _3DPW_KEYS))
