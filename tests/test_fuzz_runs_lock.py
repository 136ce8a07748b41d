"""Property-based fuzzing (hypothesis) of the run files read under the runs root's lock (issue 24, item 2):
whatever each of status.json, config.json, metrics.jsonl, log.txt and best.json is — bytes, a FIFO, a
directory, a link to a device or to nothing, a file larger than any run file should be — scheduling,
listing, showing, cancelling and resuming runs, reading metrics and the model catalog return (or raise an
``LSR1Error``) within seconds, never another exception, and the lock is free afterwards.

A watchdog (SIGALRM) turns a blocked call into a test failure instead of a hung suite; before the fix a FIFO
named status.json blocked ``list()`` forever while it held the lock."""
import fcntl
import json
import os
import signal
import time
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsr1_core.errors import LSR1Error
from lsr1_core.meta import preset
from lsr1_core.meta.train import check_latest_present, read_run_config
from lsr1_core.runs import RunManager, read_metrics
from lsr1_core.runs.catalog import available_models, hmr_models
from lsr1_core.runs.manager import STATES

FUZZ = settings(max_examples=50, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
CFG = preset("quadratic", iterations=3, batch=8, unroll=2, model={"hidden": 8})
FILES = ("status.json", "config.json", "metrics.jsonl", "log.txt", "best.json")

kinds = st.one_of(
    st.just(("absent", None)), st.just(("fifo", None)), st.just(("dir", None)), st.just(("devzero", None)),
    st.just(("dangling", None)), st.just(("big", None)),
    st.tuples(st.just("bytes"), st.binary(max_size=120)),
    st.tuples(st.just("json"), st.sampled_from([b'{"state": "running", "pid": 1}', b'{"state": "queued"}',
                                                b'{"iteration": 1}\n[1]\n\xff\n', b"[]", b"{}"])),
)


class Blocked(Exception):
    pass


@contextmanager
def watchdog(seconds: int = 20):
    def fire(signum, frame):
        raise Blocked(f"a call on the runs root blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _make(path, kind, data):
    if path.is_dir() and not path.is_symlink():
        os.rmdir(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "devzero":
        os.symlink("/dev/zero", path)
    elif kind == "dangling":
        os.symlink(path.parent / "nowhere", path)
    elif kind == "big":
        with open(path, "wb") as fh:
            fh.truncate(20 << 20)  # sparse: larger than a JSON run file may be (16 MB)
    elif kind in ("bytes", "json"):
        path.write_bytes(data)


def _lock_is_free(root) -> bool:
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "fakepython"
    script.write_text('#!/bin/sh\nexit 0\n')  # a worker that ends at once (never trains)
    script.chmod(0o755)
    return str(script)


@FUZZ
@given(files=st.fixed_dictionaries({name: kinds for name in FILES}))
def test_no_run_file_blocks_the_lock_or_raises(tmp_path_factory, fake, files):
    root = tmp_path_factory.mktemp("jobs")
    mgr = RunManager(root, python=fake)
    mgr.start(CFG, run_id="good", launch=False)
    mgr.cancel("good")
    mgr.start(CFG, run_id="bad", launch=False)
    for name, (kind, data) in files.items():
        _make(root / "bad" / name, kind, data)
    t0 = time.time()
    with watchdog():
        mgr.schedule()
        assert _lock_is_free(root)
        runs = {r.run_id: r for r in mgr.list()}
        assert "good" in runs and runs["good"].state == "cancelled"
        for r in runs.values():
            assert r.state in STATES and isinstance(r.iteration, int)
        for call in (lambda: mgr.info("bad"), lambda: mgr.cancel("bad"), lambda: mgr.resume("bad"),
                     lambda: read_run_config(root / "bad"), lambda: check_latest_present(root / "bad")):
            try:
                call()
            except LSR1Error:
                pass
            assert _lock_is_free(root)
        for m in read_metrics(root / "bad"):
            assert isinstance(m["iteration"], int)
        available_models(root)
        hmr_models([str(root)])
    assert time.time() - t0 < 20
    assert json.loads((root / "good" / "status.json").read_text())["state"] == "cancelled"
