"""Element-wise MLPs of the paper's Tables 5-6.

Each module maps per-coordinate feature rows ``(B·N, d_in)`` to ``(B·N, d_out)``, so the same
weights serve any dimension N: a model trained at N = 2 runs at N = 10 000.
"""
from __future__ import annotations

import torch
from torch import nn


class PReLU(nn.Module):
    """PReLU with one shared slope (same parameters as ``nn.PReLU()``), written as
    relu(x) − a·relu(−x): its backward is several times faster on the CPU than the fused kernel
    for the small per-coordinate batches of meta-training."""

    def __init__(self, init: float = 0.25):
        super().__init__()
        self.weight = nn.Parameter(torch.full((1,), init))

    def forward(self, x):
        if not torch.is_grad_enabled():  # inference: the fused kernel is one pass over memory instead of four
            return torch.nn.functional.prelu(x, self.weight)
        return torch.relu(x) - self.weight * torch.relu(-x)


_SYNC_GROUP = None  # set by meta-training under torch.distributed: BatchNorm then uses global statistics


def set_batchnorm_sync(group) -> None:
    """Make every :class:`GlobalBatchNorm1d` in training mode normalise with statistics over all
    processes of ``group`` (``None`` switches it off). Used for data-parallel meta-training, so that
    two processes on half the batch compute exactly what one process computes on the whole batch."""
    global _SYNC_GROUP
    _SYNC_GROUP = group


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d (same parameters and state) that can use cross-process batch statistics."""

    def forward(self, x):
        if _SYNC_GROUP is None or not self.training:
            return super().forward(x)
        # only with synchronised BatchNorm; torch.distributed.nn is absent where torch has no distributed support
        import torch.distributed.nn.functional as dfn

        n = torch.tensor([float(x.shape[0])], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(0), (x * x).sum(0), n])
        stats = dfn.all_reduce(stats, group=_SYNC_GROUP)
        C = x.shape[1]
        total = stats[-1]
        mean = stats[:C] / total
        var = (stats[C:2 * C] / total - mean * mean).clamp_min(0)
        if self.track_running_stats and self.momentum:
            with torch.no_grad():
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * total / (total - 1).clamp_min(1))
                self.num_batches_tracked.add_(1)
        y = (x - mean) / torch.sqrt(var + self.eps)
        return y * self.weight + self.bias if self.affine else y


def _norm(width: int, batchnorm: bool) -> nn.Module:
    # Without BatchNorm every problem (row) is processed independently of the others in the batch,
    # which the scale-free form needs: its inputs are already normalised per problem.
    return GlobalBatchNorm1d(width) if batchnorm else nn.Identity()


class BasicBlock(nn.Module):
    """Table 6: Linear, BN, PReLU, Dropout, Linear, BN, Dropout — with a residual connection.

    The table lists no skip; we add one (as in ResNet-style "basic blocks" and in LGD's MLPs)
    so that two stacked blocks start close to the identity and train stably.
    """

    def __init__(self, width: int, dropout: float, batchnorm: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.bn1 = _norm(width, batchnorm)
        self.prelu = PReLU()
        self.do1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(width, width)
        self.bn2 = _norm(width, batchnorm)
        self.do2 = nn.Dropout(dropout)

    def forward(self, h):
        y = self.do1(self.prelu(self.bn1(self.fc1(h))))
        y = self.do2(self.bn2(self.fc2(y)))
        return h + y


class ElementwiseMLP(nn.Module):
    """Table 5: Linear, BN, PReLU, Dropout, two basic blocks, Linear."""

    def __init__(self, d_in: int, d_out: int, width: int = 128, dropout: float = 0.0, batchnorm: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(d_in, width)
        self.bn1 = _norm(width, batchnorm)
        self.prelu = PReLU()
        self.do1 = nn.Dropout(dropout)
        self.mlp1 = BasicBlock(width, dropout, batchnorm)
        self.mlp2 = BasicBlock(width, dropout, batchnorm)
        self.fc2 = nn.Linear(width, d_out)

    def forward(self, z):
        h = self.do1(self.prelu(self.bn1(self.fc1(z))))
        return self.fc2(self.mlp2(self.mlp1(h)))
