"""TensorBoard event files beside a run's metrics.jsonl: ``tensorboard --logdir runs/jobs`` shows every run.

:class:`EventLog` is the Trainer's ``log`` callback in the runs manager's worker: each metric line becomes
scalars at ``step = iteration`` — ``train/<key>`` for the training meta-iteration's numbers (meta_loss,
grad_norm, the secant statistics), ``val/<key>`` for the validation ones (``val_loss`` → ``val/loss``),
``time/elapsed_s``. Writing them never breaks a run: any failure (tensorboard not installed, a full disk) is
reported once on stderr (the run's log.txt) and in :attr:`EventLog.error`, and logging stops; the run goes on.

A resumed run redoes the iterations after its latest checkpoint; its new event file starts with a
``SessionLog.START`` at the first redone step (``purge_step``), so TensorBoard drops the old file's values of
those steps, as the trainer drops their metric lines."""
from __future__ import annotations

import sys
from pathlib import Path


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a metric line's key."""
    if key.startswith("val_"):
        return "val/" + key[len("val_"):]
    if key == "elapsed_s":
        return "time/elapsed_s"
    return "train/" + key


def scalars(rec: dict) -> dict[str, float]:
    """tag → value of a metric line's numbers (not the iteration, flags such as ``best`` or missing values)."""
    out = {}
    for key, v in rec.items():
        if key == "iteration" or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[scalar_tag(key)] = float(v)
    return out


class EventLog:
    """Writes metric lines to TensorBoard event files in ``run_dir``; see the module docstring."""

    def __init__(self, run_dir: str | Path, purge_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.purge_step = purge_step
        self.error: str | None = None
        self._writer = None

    def _fail(self, what: str, e: BaseException) -> None:
        self.error = f"{what}: {type(e).__name__}: {e}"
        print(f"warning: TensorBoard event files are no longer written ({self.error}); the run goes on",
              file=sys.stderr, flush=True)
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass

    def __call__(self, rec: dict) -> None:
        if self.error is not None:
            return
        try:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package
                self._writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=self.purge_step)
            step = int(rec["iteration"])
            for tag, v in scalars(rec).items():
                self._writer.add_scalar(tag, v, global_step=step)
            self._writer.flush()
        except Exception as e:  # never fatal: the metrics are in metrics.jsonl anyway
            self._fail("cannot write TensorBoard event files", e)

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception as e:
                self._fail("cannot close the TensorBoard event file", e)
            self._writer = None
