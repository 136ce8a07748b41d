"""Data-parallel meta-training: two gloo processes must equal one process on the same global batch."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lsr1_core.meta import Trainer, preset

ARGS = ["--preset", "quadratic", "--iterations", "6", "--no-progress", "--set", "batch=16", "--set", "unroll=4",
        "--set", "model.hidden=8", "--set", "val_every=3", "--set", "ckpt_every=3"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_match_a_single_process(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node=2", "--nnodes=1", f"--master_port={_free_port()}",
           "--master_addr=127.0.0.1", "-m", "lsr1_core.train", "--distributed", "--run-dir", str(tmp_path / "ddp"),
           "--dump-final-params", str(tmp_path / "dump"), *ARGS]
    env = dict(os.environ, OMP_NUM_THREADS="1", LSR1_NO_PROGRESS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    r0 = load_file(str(tmp_path / "dump" / "rank0.safetensors"))
    r1 = load_file(str(tmp_path / "dump" / "rank1.safetensors"))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks disagree on {k}"
    cfg = preset("quadratic", iterations=6, batch=16, unroll=4, val_every=3, ckpt_every=3, model={"hidden": 8})
    single = Trainer(cfg, tmp_path / "single")
    single.fit(progress=False)
    sd = single.net.state_dict()
    # Adam turns float32 reduction-order noise in near-zero gradient entries into steps of up to lr each,
    # so parameters agree to about 2·lr·iterations; the losses must agree much more tightly.
    for k, v in r0.items():
        if k.endswith("num_batches_tracked"):
            continue
        assert torch.allclose(v.double(), sd[k].double(), atol=2 * 1e-4 * 6 + 1e-5, rtol=1e-3), k
    import json
    ddp = [json.loads(l) for l in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    one = [json.loads(l) for l in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    ddp_loss = [m["meta_loss"] for m in ddp if "meta_loss" in m]
    one_loss = [m["meta_loss"] for m in one if "meta_loss" in m]
    assert len(ddp_loss) == len(one_loss) == 6
    assert abs(ddp_loss[0] - one_loss[0]) < 1e-5 * max(1.0, abs(one_loss[0]))  # identical model, same batch
    for a, b in zip(ddp_loss, one_loss):
        assert abs(a - b) < 1e-3 * max(1.0, abs(b)), (ddp_loss, one_loss)
    assert (tmp_path / "ddp" / "latest.json").exists() and (tmp_path / "ddp" / "metrics.jsonl").exists()
