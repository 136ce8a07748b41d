"""Property-based fuzzing (hypothesis) of the loaders that read user-handed files (issue 14).

Any byte string given to the 3DPW/SMPL pickle loader, the model-card/safetensors reader or ``load_model``
yields a valid result or the project's own error (``lsr1_core.errors.LSR1Error``): never another exception,
a crash, a hang (each example must finish in seconds) or a changed global (classes, functions and module
state are fingerprinted before and after every example).
"""
import copyreg
import hashlib
import json
import pickle
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsr1_core.checkpoints import (load_tensors_and_card, read_safetensors_header)
from lsr1_core.learned.io import load_model, save_model
from lsr1_core.errors import LSR1Error
from lsr1_core.hmr.formats import load_3dpw_sequence
from lsr1_core.safe_unpickle import chumpy, rebuild, safe_loads_pickle, to_numpy, unpickler
from lsr1_core.learned.model import LSR1Config, LSR1Net

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MAX_SECONDS = 10.0  # CPU seconds of this process (wall time depends on the machine's load)


def _fingerprint():
    """What a malicious pickle could try to change in this process."""
    objs = [sp.csc_matrix, sp.csr_matrix, chumpy.ChumpyStandIn, chumpy._ChCh, chumpy._ChSelect,
            chumpy._ChTranspose, chumpy._ChReshape, unpickler.SafeUnpickler]
    fp = {o: dict(vars(o)) for o in objs}
    fp["module"] = {m.__name__: dict(vars(m)) for m in (chumpy, rebuild, unpickler)}
    fp["funcs"] = {f: (f.__defaults__, f.__kwdefaults__, dict(f.__dict__)) for f in
                   (rebuild._safe_encode, unpickler._safe_reconstructor, rebuild._safe_dtype, rebuild._safe_scalar,
                    rebuild._safe_reconstruct, rebuild._safe_frombuffer, rebuild._safe_bytearray)}
    fp["copyreg"] = (dict(copyreg._extension_cache), dict(copyreg._inverted_registry))
    fp["f8"] = (np.dtype("f8").str, np.dtype("f8").hasobject, np.dtype("O").str)
    fp["dispatch"] = dict(unpickler.SafeUnpickler.dispatch)
    return fp


def _samples():
    """Valid pickles of the kinds of data the loaders meet: arrays of every allowed dtype, sparse
    matrices, chumpy-like nodes, a 3DPW-like dict; in every protocol."""
    from smpl_fixture import fake_chumpy_modules
    N = 2
    seq = {"sequence": "s", "genders": ["m"], "betas": [np.zeros(10)], "poses": [np.zeros((N, 72))],
           "trans": [np.zeros((N, 3))], "jointPositions": [np.zeros((N, 72))], "poses2d": [np.zeros((N, 3, 18))],
           "campose_valid": [np.ones(N, dtype=bool)], "cam_poses": np.tile(np.eye(4), (N, 1, 1)),
           "cam_intrinsics": np.eye(3), "img_frame_ids": np.arange(N)}
    data = [seq, {"a": np.arange(6, dtype=">i4").reshape(2, 3), "s": sp.csc_matrix(np.eye(3)),
                  "u": np.array(["ab", "c"]), "f": np.float32(2.5), "c": np.array([1j])}]
    out = [pickle.dumps(d, protocol=p) for d in data for p in (0, 2, 4, 5)]
    with fake_chumpy_modules() as (Ch, Select):
        x = np.arange(6.0)
        out.append(pickle.dumps({"ch": Ch(x), "sel": Select(Ch(x), np.arange(3), (3,))}, protocol=2))
    return out


SAMPLES = _samples()


def _mutate(data: bytes, edits) -> bytes:
    b = bytearray(data)
    for kind, pos, val in edits:
        if not b:
            break
        i = pos % len(b)
        if kind == 0:
            b[i] = val
        elif kind == 1:
            del b[i:i + 1 + val % 8]
        elif kind == 2:
            b[i:i] = bytes([val]) * (1 + val % 4)
        else:
            b = b[:i]
    return bytes(b)


edits = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 30), st.integers(0, 255)), min_size=1, max_size=6)


def _check_pickle_bytes(raw: bytes):
    before = _fingerprint()
    t0 = time.process_time()
    try:
        out = safe_loads_pickle(raw)
        # whatever came back is plain data: reading it never crashes and never hides an object dtype
        for v in (out.values() if isinstance(out, dict) else [out]):
            if isinstance(v, np.ndarray):
                assert not v.dtype.hasobject
            try:
                a = to_numpy(v)
                if isinstance(a, np.ndarray) and not a.dtype.hasobject:
                    a.sum() if a.dtype.kind in "biufc" else a.tolist()
            except LSR1Error:
                pass
            except (TypeError, ValueError):
                pass  # an ordinary Python value that is not array-like
    except LSR1Error:
        pass
    assert time.process_time() - t0 < MAX_SECONDS
    assert _fingerprint() == before


@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_pickle_loader_random_bytes(raw):
    _check_pickle_bytes(raw)


@FUZZ
@given(st.sampled_from(range(len(SAMPLES))), edits)
def test_fuzz_pickle_loader_mutated_valid_pickles(i, ed):
    _check_pickle_bytes(_mutate(SAMPLES[i], ed))


@FUZZ
@given(st.sampled_from(range(len(SAMPLES))), edits)
def test_fuzz_3dpw_loader(tmp_path_factory, i, ed):
    p = tmp_path_factory.mktemp("f") / "seq.pkl"
    p.write_bytes(_mutate(SAMPLES[i], ed))
    before = _fingerprint()
    try:
        load_3dpw_sequence(p)
    except LSR1Error:
        pass
    assert _fingerprint() == before


# -- model cards and safetensors -----------------------------------------------------------------
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    save_model(d / "m", LSR1Net(LSR1Config(hidden=4, memory=2)))
    return d / "m"


def _fresh(good_ckpt, tmp_path_factory):
    d = tmp_path_factory.mktemp("c")
    card = json.loads(good_ckpt.with_suffix(".json").read_text())
    w = good_ckpt.with_suffix(".safetensors").read_bytes()
    return d, card, w


def _try_load(path):
    t0 = time.process_time()
    try:
        net, card = load_model(path)
        assert isinstance(net, LSR1Net) and isinstance(card, dict)
    except LSR1Error:
        pass
    assert time.process_time() - t0 < MAX_SECONDS


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_card_random_bytes(tmp_path_factory, good_ckpt, raw):
    d, card, w = _fresh(good_ckpt, tmp_path_factory)
    (d / "m.safetensors").write_bytes(w)
    (d / "m.json").write_bytes(raw)
    _try_load(d / "m")


@FUZZ
@given(st.sampled_from(["format", "format_version", "kind", "config", "weights_file", "weights_sha256",
                        "config.hidden", "config.memory", "config.features", "config.dropout", "config.lr_clamp"]),
       json_values)
def test_fuzz_card_fields(tmp_path_factory, good_ckpt, key, value):
    d, card, w = _fresh(good_ckpt, tmp_path_factory)
    (d / "m.safetensors").write_bytes(w)
    if key.startswith("config."):
        card["config"][key[7:]] = value
    else:
        card[key] = value
    (d / "m.json").write_text(json.dumps(card))
    _try_load(d / "m")


@FUZZ
@given(edits)
def test_fuzz_safetensors_bytes_with_a_matching_hash(tmp_path_factory, good_ckpt, ed):
    """The card names the mutated file's true SHA-256, so the header parser and the shape check are
    reached with arbitrary bytes."""
    d, card, w = _fresh(good_ckpt, tmp_path_factory)
    bad = _mutate(w, ed)
    (d / "m.safetensors").write_bytes(bad)
    card["weights_sha256"] = hashlib.sha256(bad).hexdigest()
    (d / "m.json").write_text(json.dumps(card))
    _try_load(d / "m")
    try:
        read_safetensors_header(d / "m.safetensors")
    except LSR1Error:
        pass


@FUZZ
@given(json_values)
def test_fuzz_safetensors_header_json(tmp_path_factory, good_ckpt, header):
    d, card, w = _fresh(good_ckpt, tmp_path_factory)
    hb = json.dumps(header).encode()
    bad = len(hb).to_bytes(8, "little") + hb + b"\0" * 64
    (d / "m.safetensors").write_bytes(bad)
    card["weights_sha256"] = hashlib.sha256(bad).hexdigest()
    (d / "m.json").write_text(json.dumps(card))
    _try_load(d / "m")
    try:
        load_tensors_and_card(d / "m")
    except LSR1Error:
        pass
