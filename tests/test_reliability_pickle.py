"""Issue 14, items 1 and 3 (+ the cyclic chumpy graph): the restricted unpickler builds plain data only.

Each test below failed before the fix: the pickle of item 1 came back as an object array whose element
pointers were the file's bytes (reading or freeing it crashed the process), and the pickle of item 3
replaced ``scipy.sparse.csc_matrix.toarray`` for the whole process.
"""
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp

from lsr1_core.errors import LSR1Error
from lsr1_core.hmr.formats import load_3dpw_sequence
from lsr1_core.safe_unpickle import DataFormatError, UnsafePickleError, chumpy, rebuild, safe_load_pickle, \
    safe_loads_pickle, unpickler

_MA = "numpy.core.multiarray" if np.__version__ < "2" else "numpy._core.multiarray"


class _Reduce:
    """An object that pickles as an arbitrary (callable, args[, state]) triple."""

    def __init__(self, *rv):
        self.rv = rv

    def __reduce__(self):
        return self.rv


def _object_dtype_array_pickle(pointer: int = 0) -> bytes:
    """Item 1's reproducer: ``_reconstruct`` of an ndarray whose dtype is 'V8' carrying the state of
    ``np.dtype([('a', 'O')])`` with flags 0, and 8 raw bytes that numpy would read as a PyObject*."""
    state = list(np.dtype([("a", "O")]).__reduce__()[2])
    state[7] = 0  # flags
    dt = _Reduce(np.dtype, ("V8", False, True), tuple(state))
    arr = _Reduce(np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct,
                  (np.ndarray, (0,), b"b"), (1, (1,), dt, False, pointer.to_bytes(8, "little")))
    return pickle.dumps({"poses": arr}, protocol=2)


def test_object_dtype_from_crafted_dtype_state_is_refused():
    raw = _object_dtype_array_pickle(0)  # a NULL pointer: safe to hold even if a regression lets it through
    with pytest.raises(UnsafePickleError, match="dtype"):
        safe_loads_pickle(raw)


def test_object_dtype_pickle_does_not_crash_the_process(tmp_path):
    """With a real pointer value the old loader segfaulted; now the process reports the refusal."""
    p = tmp_path / "seq.pkl"
    p.write_bytes(_object_dtype_array_pickle(0x4141414141414141))
    code = textwrap.dedent(f"""
        from lsr1_core.hmr.formats import load_3dpw_sequence
        from lsr1_core.safe_unpickle import safe_load_pickle, UnsafePickleError
        for f in (safe_load_pickle, load_3dpw_sequence):
            try:
                f({str(p)!r})
            except UnsafePickleError as e:
                print("refused:", e)
            else:
                raise SystemExit("loaded!")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("refused:") == 2


@pytest.mark.parametrize("spec", ["O8", "O4", "V8", "M8", "m8", "f8,i4"])
def test_object_void_datetime_and_structured_dtype_specs_are_refused(spec):
    raw = pickle.dumps(_Reduce(np.dtype, (spec, False, True), (3, "|", None, None, None, -1, -1, 0)), 2)
    with pytest.raises(UnsafePickleError):
        safe_loads_pickle(raw)
    # and genuine numpy pickles of such dtypes / arrays
    for obj in (np.array([None, 1], dtype=object), np.zeros(2, dtype=[("a", "f8"), ("b", "O")]),
                np.zeros(2, dtype="V8"), np.zeros(2, dtype="M8[s]"), np.dtype("O")):
        for proto in (0, 2, 5):
            with pytest.raises(LSR1Error):
                safe_loads_pickle(pickle.dumps(obj, protocol=proto))


def test_dtype_state_with_fields_or_subarray_is_refused():
    for state in [(3, "|", (np.dtype("f8"), (2,)), None, None, 16, 8, 0),
                  (3, "|", None, ("a",), {"a": (np.dtype("f8"), 0)}, 8, 8, 0),
                  (3, "<", None, None, None, -1, -1, 0, {"meta": 1})]:
        raw = pickle.dumps(_Reduce(np.dtype, ("f8", False, True), state), 2)
        with pytest.raises(UnsafePickleError):
            safe_loads_pickle(raw)


def test_array_byte_count_must_match_shape():
    arr = _Reduce(np.core.multiarray._reconstruct if not hasattr(np, "_core") else np._core.multiarray._reconstruct,
                  (np.ndarray, (0,), b"b"), (1, (1000, 1000), np.dtype("f8"), False, b"\0" * 16))
    with pytest.raises(DataFormatError, match="bytes"):
        safe_loads_pickle(pickle.dumps(arr, 2))


def test_real_arrays_keep_values_byte_order_and_layout():
    data = {"be": np.arange(5, dtype=">i4"), "f": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
            "s": np.array([b"ab", b"c"]), "u": np.array(["héllo", "x"]), "c": np.array([1 + 2j], dtype="c8"),
            "b": np.array([True, False]), "e": np.zeros((0, 3)), "h": np.float16(1.5), "sc": np.int8(-3)}
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        out = safe_loads_pickle(pickle.dumps(data, protocol=proto))
        for k, v in data.items():
            np.testing.assert_array_equal(out[k], v)
            assert np.asarray(out[k]).dtype == np.asarray(v).dtype, (k, proto)
            assert type(out[k]) is type(v)
        assert out["f"].flags.f_contiguous and out["f"].flags.writeable and out["be"].flags.writeable


def _build_on(global_ref: bytes, state_pickle: bytes) -> bytes:
    """protocol-2 bytes: push GLOBAL, push state, BUILD, STOP."""
    return b"\x80\x02c" + global_ref + b"\n" + state_pickle + b"b."


@pytest.mark.parametrize("target, attr", [
    (b"scipy.sparse\ncsc_matrix", "toarray"),
    (b"scipy.sparse._csr\ncsr_matrix", "toarray"),
    (b"chumpy.ch\nCh", "_compute"),
    (b"chumpy.reordering\nSelect", "_compute"),
    (b"_codecs\nencode", "__defaults__"),
    (b"copy_reg\n_reconstructor", "__defaults__"),
    (b"numpy\ndtype", "__defaults__"),
    (b"collections\nOrderedDict", "keys"),
])
def test_build_never_sets_attributes_on_classes_or_functions(target, attr):
    """Item 3: ``BUILD`` with slot state (None, {attr: list}) on an allowed class used to setattr it."""
    before = {}
    import scipy.sparse
    objs = [scipy.sparse.csc_matrix, scipy.sparse.csr_matrix, chumpy._ChCh, chumpy._ChSelect,
            rebuild._safe_encode, unpickler._safe_reconstructor, rebuild._safe_dtype, chumpy.ChumpyStandIn]
    for o in objs:
        before[o] = dict(vars(o))
    state = b"N}X" + len(attr).to_bytes(4, "little") + attr.encode() + b"c__builtin__\nlist\ns\x86"
    try:
        with pytest.raises(UnsafePickleError, match="state"):
            safe_loads_pickle(_build_on(target, state))
        # the dict form of the state as well
        with pytest.raises(UnsafePickleError):
            safe_loads_pickle(_build_on(target, state[1:-1]))
        for o in objs:
            assert dict(vars(o)) == before[o], o
        np.testing.assert_array_equal(safe_loads_pickle(pickle.dumps(sp.csc_matrix(np.eye(2)), 2)).toarray(),
                                      np.eye(2))
    finally:  # never leave a poisoned class behind for the rest of the suite
        for o in objs:
            for k in set(vars(o)) - set(before[o]):
                try:
                    delattr(o, k)
                except (AttributeError, TypeError):
                    pass
            for k, v in before[o].items():
                if vars(o).get(k) is not v:
                    try:
                        setattr(o, k, v)
                    except (AttributeError, TypeError):
                        pass


def test_sparse_state_is_validated():
    good = sp.csc_matrix(np.eye(3))
    import copyreg
    state = good.__reduce_ex__(2)[2]
    make = (copyreg._reconstructor, (sp.csc_matrix, object, None))
    np.testing.assert_array_equal(safe_loads_pickle(pickle.dumps(_Reduce(*make, state), 2)).toarray(), np.eye(3))
    bad = dict(state, indices=np.array([0, 7, 1], dtype=np.int32))
    with pytest.raises(DataFormatError):
        safe_loads_pickle(pickle.dumps(_Reduce(*make, bad), 2))
    with pytest.raises(DataFormatError):
        safe_loads_pickle(pickle.dumps(_Reduce(*make, {"data": 1}), 2))
    with pytest.raises(LSR1Error):
        safe_loads_pickle(pickle.dumps(_Reduce(*make, dict(state, data=np.array([None] * 3))), 2))


def test_no_global_state_changes_during_loads():
    """Opaque chumpy classes are made per load (the old loader kept a module-level cache a file could grow)."""
    raw = b"\x80\x02cchumpy.ch_ops\nadd\nq\x00)\x81q\x01}q\x02X\x01\x00\x00\x00aq\x03K\x01sb."
    snapshot = {(m.__name__, k): v for m in (chumpy, rebuild, unpickler) for k, v in vars(m).items()}
    import copyreg
    ext = dict(copyreg._extension_cache)
    for _ in range(3):
        safe_loads_pickle(raw)
    assert {(m.__name__, k): v for m in (chumpy, rebuild, unpickler) for k, v in vars(m).items()} == snapshot
    with pytest.raises(UnsafePickleError, match="EXT"):
        safe_loads_pickle(b"\x80\x02\x82\x01.")
    assert copyreg._extension_cache == ext


def test_bytearray_of_a_huge_size_is_refused():
    with pytest.raises(UnsafePickleError):
        safe_loads_pickle(b"\x80\x02c__builtin__\nbytearray\nJ\x00\x00\x00\x7f\x85R.")


def test_cyclic_and_deep_chumpy_graphs_give_a_clear_error():
    from smpl_fixture import fake_chumpy_modules
    with fake_chumpy_modules() as (Ch, Select):
        a = Select(Ch(np.zeros(3)), np.arange(3), (3,))
        b = Select(a, np.arange(3), (3,))
        a.a = b  # a cycle: a → b → a
        out = safe_loads_pickle(pickle.dumps(a, protocol=2))
        with pytest.raises(DataFormatError, match="cyclic"):
            out.r
    node = chumpy._ChCh()
    node.state = {"x": np.arange(3.0)}
    for _ in range(20000):  # far deeper than the recursion limit
        nxt = chumpy._ChSelect()
        nxt.state = {"a": node, "idxs": np.arange(3), "preferred_shape": (3,)}
        node = nxt
    with pytest.raises(DataFormatError, match="deep"):
        node.r


def test_load_3dpw_rejects_crafted_files_with_project_errors(tmp_path):
    p = tmp_path / "x.pkl"
    for raw in (b"", b"\x80\x02.", b"\x80\x02}q\x00.", b"\x80\x05\x95" + b"\xff" * 8, b"(" * 100000 + b"."):
        p.write_bytes(raw)
        with pytest.raises(LSR1Error):
            load_3dpw_sequence(p)
    with pytest.raises(DataFormatError):
        safe_load_pickle(tmp_path)  # a directory


def test_complex_amass_poses_are_refused_not_cut_to_their_real_part(tmp_path):
    from lsr1_core.hmr.formats import load_amass_npz
    T = 4
    rng = np.random.default_rng(0)
    good = {"poses": rng.normal(size=(T, 156)), "trans": rng.normal(size=(T, 3)), "betas": rng.normal(size=16),
            "mocap_framerate": np.array(120.0)}
    np.savez(tmp_path / "ok.npz", **good)
    assert load_amass_npz(tmp_path / "ok.npz")["n_frames"] == T
    for key in ("poses", "trans", "betas"):
        np.savez(tmp_path / "c.npz", **dict(good, **{key: good[key] + 1j}))
        with pytest.raises(DataFormatError, match="complex"):
            load_amass_npz(tmp_path / "c.npz")


def test_deeply_nested_tuples_are_refused_without_crashing():
    """A dict keyed by a tuple nested 10⁶ deep crashed CPython (its tuple hash recurses in C)."""
    code = textwrap.dedent("""
        from lsr1_core.safe_unpickle import safe_loads_pickle, DataFormatError
        raw = b"\\x80\\x02}" + b")" + b"\\x85" * 1_000_000 + b"K\\x01s."
        try:
            safe_loads_pickle(raw)
        except DataFormatError as e:
            print("refused:", e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert out.returncode == 0, out.stderr[-500:]
    assert "nests tuples" in out.stdout
    shallow = safe_loads_pickle(pickle.dumps({((1, (2, (3,))),): np.zeros(2)}, 2))
    assert list(shallow) == [((1, (2, (3,))),)]


def test_a_huge_sparse_matrix_is_not_made_dense():
    from lsr1_core.safe_unpickle import to_numpy
    m = safe_loads_pickle(pickle.dumps(sp.csc_matrix((10**6, 10**6)), 2))
    with pytest.raises(DataFormatError, match="too large"):
        to_numpy(m)
