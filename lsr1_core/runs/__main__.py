"""python -m lsr1_core.runs start|list|show|cancel|resume — the job runner's command line.

``--backend slurm`` (start, resume) submits the run as a SLURM job through submitit instead of a local
process; ``--slurm-partition``, ``--slurm-time`` (minutes), ``--slurm-cpus``, ``--slurm-gpus`` set the job."""
from __future__ import annotations

import argparse
import json

from ..errors import run_cli
from ..train import parse_overrides
from .backends import BACKENDS, make_backend
from .manager import RunManager, preset_config, worker
from .root import runs_root


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lsr1_core.runs")
    ap.add_argument("--root", default=None, help="directory holding the runs (default: $LSR1_RUNS_ROOT, else "
                    "runs/jobs: lsr1_core.runs.root.runs_root)")
    ap.add_argument("--max-concurrent", type=int, default=1)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="queue a new run and start it when a slot is free")
    s.add_argument("--preset", required=True)
    s.add_argument("--name", help="run id (default: time stamp and preset)")
    s.add_argument("--iterations", type=int)
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--wait", action="store_true", help="block until the run ends")
    _backend_args(s)
    sub.add_parser("list")
    sh = sub.add_parser("show")
    sh.add_argument("run_id")
    c = sub.add_parser("cancel")
    c.add_argument("run_id")
    r = sub.add_parser("resume")
    r.add_argument("run_id")
    r.add_argument("--iterations", type=int)
    _backend_args(r, default=None)
    w = sub.add_parser("_worker", help=argparse.SUPPRESS)
    w.add_argument("run_dir")
    args = ap.parse_args(argv)
    args.root = args.root or str(runs_root())
    if args.cmd == "_worker":
        return worker(args.run_dir, args.root, args.max_concurrent)
    return run_cli(lambda: _command(args))


def _backend_args(p, default="local") -> None:
    p.add_argument("--backend", choices=sorted(BACKENDS), default=default,
                   help="where the worker runs: local (a process here, the default) or slurm (a SLURM job "
                        "through submitit; needs the submitit package and the SLURM commands)"
                        + ("" if default else "; default: the backend the run was started on"))
    p.add_argument("--slurm-partition", default=None)
    p.add_argument("--slurm-time", type=int, default=24 * 60, metavar="MINUTES", help="the job's time limit")
    p.add_argument("--slurm-cpus", type=int, default=1, metavar="N", help="CPUs per task")
    p.add_argument("--slurm-gpus", type=int, default=0, metavar="N", help="GPUs per node")


def _backend(args):
    if getattr(args, "backend", None) != "slurm":
        return getattr(args, "backend", None)
    return make_backend("slurm", {"partition": args.slurm_partition, "time_min": args.slurm_time,
                                  "cpus_per_task": args.slurm_cpus, "gpus_per_node": args.slurm_gpus})


def _command(args) -> int:
    mgr = RunManager(args.root, max_concurrent=args.max_concurrent,
                     backend=_backend(args) if args.cmd == "start" else None)
    if args.cmd == "start":
        overrides = parse_overrides(args.set)
        if args.iterations is not None:
            overrides["iterations"] = args.iterations
        rid = mgr.start(preset_config(args.preset, overrides), preset_name=args.preset, run_id=args.name)
        print(rid)
        if args.wait:
            info = mgr.wait(rid, timeout=10**9)
            print(info.state)
            return 0 if info.state == "finished" else 1
        return 0
    if args.cmd == "list":
        mgr.schedule()
        for r in mgr.list():
            print(f"{r.run_id:40s} {r.state:11s} {r.iteration:>7d}/{r.total:<7d} best_val={r.best_val}"
                  + (f"  error: {r.error}" if r.error else ""))
        return 0
    if args.cmd == "show":
        info = mgr.info(args.run_id)
        print(json.dumps({**info.__dict__, "path": str(info.path)}, indent=2, default=str))
        return 0
    if args.cmd == "cancel":
        print(mgr.cancel(args.run_id, wait=30))
        return 0
    if args.cmd == "resume":
        print(mgr.resume(args.run_id, iterations=args.iterations, backend=_backend(args)))
        return 0
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
