"""Background meta-training jobs: each run is a directory and a separate OS process.

    mgr = RunManager("runs/jobs", max_concurrent=1)
    run_id = mgr.start(preset("quadratic", iterations=2000))
    mgr.list(); mgr.cancel(run_id); mgr.resume(run_id)

Also a command line: ``python -m lsr1_core.runs start|list|show|cancel|resume``. A run's problem kind comes
from ``lsr1_core.meta.registry``; ``RunManager(..., backend="slurm")`` (``--backend slurm``) submits it as a
SLURM job through submitit instead of a local process (``backends.py``); every run writes TensorBoard event
files beside its metrics (``tensorboard --logdir runs/jobs``).
"""
from .manager import RunInfo, RunManager, read_metrics

__all__ = ["RunManager", "RunInfo", "read_metrics"]
