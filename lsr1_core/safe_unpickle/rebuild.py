"""What the restricted unpickler builds data with (see ``unpickler``'s design note): bytes from the latin-1, UTF-8
and ASCII codecs only, numpy dtypes rebuilt from kind and size, arrays copied from the file's bytes (count
checked), scipy sparse matrices through their validating constructor. Never a real numpy or scipy callable, and
never numpy's ``__setstate__``."""
from __future__ import annotations

import codecs
import pickle
import re

import numpy as np

from ..errors import LSR1Error
from .errors import DataFormatError, UnsafePickleError

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
