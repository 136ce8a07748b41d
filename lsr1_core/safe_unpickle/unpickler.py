"""The restricted unpickler: :class:`SafeUnpickler`, :func:`safe_load_pickle` and :func:`safe_loads_pickle`."""
from __future__ import annotations

import collections
import io
import os
import pickle
from pathlib import Path
from typing import Any

from ..errors import LSR1Error
from .chumpy import _CHUMPY_CLASSES, ChumpyStandIn
from .errors import DataFormatError, UnsafePickleError
from .rebuild import (_MAX_TUPLE_DEPTH, _NDARRAY, _SPARSE_MODULES, _SPARSE_NAMES, _ArrayProxy, _DTypeProxy, _Proxy,
                      _safe_bytearray, _safe_bytes, _safe_dtype, _safe_encode, _safe_frombuffer, _safe_reconstruct,
                      _safe_scalar, _SparseProxy, _SparseSpec)

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
    """An unpickler that builds plain data only (see the package docstring and the design note above)."""

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
