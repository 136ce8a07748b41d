"""A restricted unpickler for the data pickles users bring (SMPL-family model files, 3DPW sequences): plain data
in, never code run.

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

Modules: ``unpickler`` (the loader and :func:`safe_load_pickle`), ``rebuild`` (what it builds numpy dtypes and
arrays, scipy sparse matrices and bytes with), ``chumpy`` (the stand-ins), ``errors``. Used by ``hmr.smpl`` (SMPL
model files) and ``hmr.formats`` (3DPW); nothing here knows about bodies.
"""
from .chumpy import ChumpyStandIn, to_numpy
from .errors import DataFormatError, UnsafePickleError
from .unpickler import SafeUnpickler, safe_load_pickle, safe_loads_pickle

__all__ = ["UnsafePickleError", "DataFormatError", "ChumpyStandIn", "SafeUnpickler", "safe_load_pickle",
           "safe_loads_pickle", "to_numpy"]
