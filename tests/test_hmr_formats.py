"""Real data formats: the restricted unpickler, AMASS .npz and 3DPW .pkl loaders."""
import os
import pickle
import struct

import numpy as np
import pytest
import scipy.sparse as sp

from lsr1_core.errors import NonFiniteError
from lsr1_core.hmr.formats import ThreeDPWSequence, load_3dpw_sequence, load_amass_npz
from lsr1_core.safe_unpickle import (ChumpyStandIn, DataFormatError, UnsafePickleError, safe_load_pickle,
                                     safe_loads_pickle, to_numpy)


class Py2Pickler(pickle._Pickler):
    """Writes bytes and ASCII str the way Python 2 wrote its ``str`` (SHORT_BINSTRING /
    BINSTRING), so the file reads like a Python-2 pickle: numpy's raw array data comes back as a
    latin-1 decoded ``str``, which only ``encoding='latin1'`` handles."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _py2_str(self, raw: bytes, obj):
        n = len(raw)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + raw)
        self.memoize(obj)

    def save_bytes(self, obj):
        self._py2_str(obj, obj)

    def save_str(self, obj):
        if obj.isascii():
            self._py2_str(obj.encode("ascii"), obj)
        else:
            pickle._Pickler.save_str(self, obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def dump_py2(obj, path):
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


# -- restricted unpickler ----------------------------------------------------------------------
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_safe_unpickler_refuses_code_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"poses": np.zeros(3), "x": _Evil(marker)}, protocol=2)
    p = tmp_path / "evil.pkl"
    p.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match=r"(posix|os|nt)\.system"):
        safe_load_pickle(p)
    assert not marker.exists()
    # the same for other protocols and other dangerous globals
    for proto in (0, 4, 5):
        with pytest.raises(UnsafePickleError):
            safe_loads_pickle(pickle.dumps(_Evil(marker), protocol=proto))
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        safe_loads_pickle(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(UnsafePickleError, match="__builtin__.getattr|builtins.getattr"):
        safe_loads_pickle(b"c__builtin__\ngetattr\n(S'x'\nS'y'\ntR.")
    with pytest.raises(UnsafePickleError, match="codec"):
        safe_loads_pickle(b"c_codecs\nencode\n(S'x'\nS'zlib_codec'\ntR.")
    assert not marker.exists()
    assert issubclass(UnsafePickleError, pickle.UnpicklingError) and issubclass(UnsafePickleError, ValueError)


def test_safe_unpickler_loads_plain_data_of_all_protocols(tmp_path):
    data = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "i": np.int64(7), "f": np.float64(0.5),
            "s": sp.csc_matrix(np.eye(3)), "r": sp.csr_matrix(np.ones((2, 2))), "set": {1, 2},
            "t": (1, "x", b"raw"), "l": [np.array(["m", "f"])], "dt": np.dtype("<f8"), "c": 1 + 2j,
            "fs": frozenset({3})}
    for proto in range(0, pickle.HIGHEST_PROTOCOL + 1):
        out = safe_loads_pickle(pickle.dumps(data, protocol=proto))
        np.testing.assert_array_equal(out["a"], data["a"])
        assert out["a"].dtype == np.float32
        assert out["i"] == 7 and out["f"] == 0.5 and out["set"] == {1, 2} and out["t"] == (1, "x", b"raw")
        np.testing.assert_array_equal(out["s"].toarray(), np.eye(3))
        assert sp.issparse(out["r"]) and out["dt"] == np.float64 and out["c"] == 1 + 2j
        assert list(out["l"][0]) == ["m", "f"] and out["fs"] == frozenset({3})
    # a Python-2 style pickle (str data) needs latin1, the default
    p = tmp_path / "py2.pkl"
    dump_py2({"a": np.linspace(0, 1, 300), "name": "seq"}, p)
    out = safe_load_pickle(p)
    np.testing.assert_array_equal(out["a"], np.linspace(0, 1, 300))
    assert out["name"] == "seq"
    with pytest.raises(DataFormatError, match="py2.pkl"):  # proves the file really holds Python-2 str data
        safe_load_pickle(p, encoding="ascii")


def test_chumpy_nodes_become_arrays(tmp_path):
    from smpl_fixture import fake_chumpy_modules
    x = np.arange(24.0).reshape(2, 3, 4)
    with fake_chumpy_modules() as (Ch, Select):
        idxs = np.arange(24).reshape(2, 3, 4)[:, :, :2].ravel()
        obj = {"ch": Ch(x), "sel": Select(Ch(x), idxs, (2, 3, 2))}
        for proto in (0, 2):
            raw = pickle.dumps(obj, protocol=proto)
            out = safe_loads_pickle(raw)
            assert isinstance(out["ch"], ChumpyStandIn)
            np.testing.assert_array_equal(out["ch"].r, x)
            np.testing.assert_array_equal(np.asarray(out["sel"]), x[:, :, :2])
            np.testing.assert_array_equal(to_numpy(out["sel"]), x[:, :, :2])
        assert b"chumpy.ch" in raw
    # an unsupported chumpy node loads (the file stays usable) but cannot be evaluated
    out = safe_loads_pickle(b"\x80\x02cchumpy.ch_ops\nadd\nq\x00)\x81q\x01}q\x02X\x01\x00\x00\x00aq\x03K\x01sb.")
    with pytest.raises(DataFormatError, match="chumpy.ch_ops.add"):
        out.r
    # re-pickling a stand-in yields plain numpy, never a chumpy reference
    again = pickle.dumps(safe_loads_pickle(pickle.dumps({"x": 1}, 2)) | {"c": _standin(x)}, protocol=2)
    assert b"chumpy" not in again
    np.testing.assert_array_equal(safe_loads_pickle(again)["c"], x)


def _standin(x):
    from smpl_fixture import fake_chumpy_modules
    with fake_chumpy_modules() as (Ch, _):
        return safe_loads_pickle(pickle.dumps(Ch(x), protocol=2))


def test_safe_load_pickle_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        safe_load_pickle(tmp_path / "nope.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"this is not a pickle")
    with pytest.raises(DataFormatError, match="junk.pkl"):
        safe_load_pickle(tmp_path / "junk.pkl")


# -- AMASS -------------------------------------------------------------------------------------
def write_amass(path, T=7, D=156, **over):
    rng = np.random.default_rng(0)
    d = {"poses": rng.normal(size=(T, D)), "trans": rng.normal(size=(T, 3)), "betas": rng.normal(size=16),
         "gender": np.array("female"), "mocap_framerate": np.array(120.0), "dmpls": np.zeros((T, 8))}
    d.update(over)
    d = {k: v for k, v in d.items() if v is not None}
    np.savez(path, **d)
    return d


def test_load_amass_smplh(tmp_path):
    d = write_amass(tmp_path / "a.npz")
    m = load_amass_npz(tmp_path / "a.npz")
    assert m["poses"].shape == (7, 72) and m["source_pose_dim"] == 156 and m["n_frames"] == 7
    np.testing.assert_array_equal(m["root_orient"], d["poses"][:, :3])
    np.testing.assert_array_equal(m["body_pose"], d["poses"][:, 3:66])
    np.testing.assert_array_equal(m["poses"][:, :66], d["poses"][:, :66])
    np.testing.assert_array_equal(m["poses"][:, 66:], 0.0)  # SMPL's hand joints: not the finger poses
    np.testing.assert_array_equal(m["trans"], d["trans"])
    np.testing.assert_array_equal(m["betas"], d["betas"])
    assert m["gender"] == "female" and m["fps"] == 120.0


def test_load_amass_variants(tmp_path):
    # SMPL-wide poses keep their hand joints; the other frame-rate key; bytes gender
    d = write_amass(tmp_path / "b.npz", D=72, mocap_framerate=None, mocap_frame_rate=np.array(60),
                    gender=np.array(b"male"))
    m = load_amass_npz(tmp_path / "b.npz")
    np.testing.assert_array_equal(m["poses"], d["poses"])
    assert m["fps"] == 60.0 and m["gender"] == "male"
    write_amass(tmp_path / "c.npz", D=165, gender=None)  # SMPL-X layout, no gender
    m = load_amass_npz(tmp_path / "c.npz")
    assert m["poses"].shape == (7, 72) and m["gender"] == "neutral" and m["source_pose_dim"] == 165


def test_load_amass_errors(tmp_path):
    write_amass(tmp_path / "nofps.npz", mocap_framerate=None)
    with pytest.raises(DataFormatError, match="mocap_framerate.*mocap_frame_rate"):
        load_amass_npz(tmp_path / "nofps.npz")
    np.savez(tmp_path / "shape.npz", betas=np.zeros(16), gender=np.array("male"))
    with pytest.raises(DataFormatError, match=r"missing AMASS key\(s\) \['poses', 'trans'\].*shape.npz"):
        load_amass_npz(tmp_path / "shape.npz")
    write_amass(tmp_path / "wide.npz", D=100)
    with pytest.raises(DataFormatError, match=r"'poses' must be \(T, D\).*\(7, 100\)"):
        load_amass_npz(tmp_path / "wide.npz")
    write_amass(tmp_path / "trans.npz", trans=np.zeros((6, 3)))
    with pytest.raises(DataFormatError, match=r"'trans' must be \(T, 3\) = \(7, 3\)"):
        load_amass_npz(tmp_path / "trans.npz")
    poses = np.zeros((7, 156))
    poses[3, 5] = np.nan
    write_amass(tmp_path / "nan.npz", poses=poses)
    with pytest.raises(NonFiniteError, match="poses"):
        load_amass_npz(tmp_path / "nan.npz")
    np.savez(tmp_path / "obj.npz", poses=np.array([{"a": 1}], dtype=object), trans=np.zeros((1, 3)),
             betas=np.zeros(16), mocap_framerate=np.array(30.0))
    with pytest.raises(DataFormatError, match="pickle"):
        load_amass_npz(tmp_path / "obj.npz")
    (tmp_path / "x.npz").write_bytes(b"garbage")
    with pytest.raises(DataFormatError, match="not an .npz"):
        load_amass_npz(tmp_path / "x.npz")
    with pytest.raises(FileNotFoundError):
        load_amass_npz(tmp_path / "missing.npz")


# -- 3DPW --------------------------------------------------------------------------------------
def make_3dpw(N=5, actors=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "sequence": "downtown_walking_00",
        "betas": [rng.normal(size=10) for _ in range(actors)],
        "betas_clothed": [rng.normal(size=10) for _ in range(actors)],
        "poses": [rng.normal(size=(N, 72)) for _ in range(actors)],
        "trans": [rng.normal(size=(N, 3)) for _ in range(actors)],
        "poses_60Hz": [rng.normal(size=(2 * N, 72)) for _ in range(actors)],
        "jointPositions": [rng.normal(size=(N, 72)) for _ in range(actors)],
        "poses2d": [rng.normal(size=(N, 3, 18)) for _ in range(actors)],
        "campose_valid": [rng.integers(0, 2, size=N).astype(bool) for _ in range(actors)],
        "genders": ["m", "f"][:actors],
        "cam_poses": rng.normal(size=(N, 4, 4)),
        "cam_intrinsics": np.array([[1961.9, 0.0, 540.0], [0.0, 1969.2, 960.0], [0.0, 0.0, 1.0]]),
        "img_frame_ids": np.arange(N, dtype=np.int64),
    }


def test_load_3dpw_python2_pickle(tmp_path):
    d = make_3dpw()
    p = tmp_path / "downtown_walking_00.pkl"
    dump_py2(d, p)
    assert p.read_bytes()[:2] == b"\x80\x02"
    s = load_3dpw_sequence(p)
    assert isinstance(s, ThreeDPWSequence)
    assert s.sequence == "downtown_walking_00" and s.genders == ["m", "f"]
    assert s.n_actors == 2 and s.n_frames == 5
    for i in range(2):
        np.testing.assert_array_equal(s.poses[i], d["poses"][i])
        np.testing.assert_array_equal(s.betas[i], d["betas"][i])
        np.testing.assert_array_equal(s.trans[i], d["trans"][i])
        assert s.joints3d[i].shape == (5, 24, 3)
        np.testing.assert_array_equal(s.joints3d[i][:, 7], d["jointPositions"][i][:, 21:24])
        assert s.poses2d[i].shape == (5, 18, 3)
        # keypoint k of frame n is (x, y, conf) = poses2d[n, :, k]
        np.testing.assert_array_equal(s.poses2d[i][3, 11], d["poses2d"][i][3, :, 11])
        assert s.campose_valid[i].dtype == bool
        np.testing.assert_array_equal(s.campose_valid[i], d["campose_valid"][i])
    np.testing.assert_array_equal(s.cam_poses, d["cam_poses"])
    np.testing.assert_array_equal(s.cam_intrinsics, d["cam_intrinsics"])
    np.testing.assert_array_equal(s.img_frame_ids, np.arange(5))
    assert "poses_60Hz" in s.extra_keys


def test_load_3dpw_python3_protocol2_and_errors(tmp_path):
    d = make_3dpw(actors=1)
    p = tmp_path / "seq.pkl"
    with open(p, "wb") as f:
        pickle.dump(d, f, protocol=2)
    assert load_3dpw_sequence(p).n_actors == 1
    bad = dict(d)
    del bad["cam_poses"]
    with open(p, "wb") as f:
        pickle.dump(bad, f, protocol=2)
    with pytest.raises(DataFormatError, match=r"missing 3DPW key\(s\) \['cam_poses'\]"):
        load_3dpw_sequence(p)
    bad = dict(d, poses2d=[np.zeros((5, 2, 18))])
    with open(p, "wb") as f:
        pickle.dump(bad, f, protocol=2)
    with pytest.raises(DataFormatError, match=r"actor 0 'poses2d' must have shape \(5, 3, 18\)"):
        load_3dpw_sequence(p)
    bad = dict(d, genders=["m", "f"])
    with open(p, "wb") as f:
        pickle.dump(bad, f, protocol=2)
    with pytest.raises(DataFormatError, match="number of actors"):
        load_3dpw_sequence(p)
    with open(p, "wb") as f:
        pickle.dump(dict(d, sequence=_Evil(tmp_path / "m")), f, protocol=2)
    with pytest.raises(UnsafePickleError):
        load_3dpw_sequence(p)
    assert not (tmp_path / "m").exists()
