"""Meta-training tasks: a seeded stream of training problems and a fixed validation set."""
from __future__ import annotations

import torch

from ..objectives import Rastrigin, Rosenbrock, family_starts, quadratic_split, random_quadratics
from ..objectives.transforms import Scaled
from .presets import TrainConfig

VAL_SEED = 424242


class MetaTask:
    def __init__(self, cfg: TrainConfig, device, dtype):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        self.generator = torch.Generator().manual_seed(cfg.seed)

    def sample(self):
        """A fresh training batch (objective, x0), rescaled per problem when ``scale_range`` > 0:
        f̃(y) = c·f(y/s) with log10 c and log10 s uniform in ±scale_range, started at y0 = s·x0."""
        obj, x0 = self._sample()
        r = self.cfg.scale_range
        if r > 0:
            B = x0.shape[0]
            c = 10 ** ((torch.rand(B, generator=self.generator, dtype=torch.float64) * 2 - 1) * r)
            s = 10 ** ((torch.rand(B, generator=self.generator, dtype=torch.float64) * 2 - 1) * r)
            obj, x0 = Scaled(obj, c, s), x0 * s.to(x0).view(-1, 1)
        return obj, x0

    def _sample(self):
        c = self.cfg
        if c.task == "random_quadratic":
            return random_quadratics(c.n, c.batch, generator=self.generator, max_cond=None,
                                     dtype=self.dtype, device=self.device)
        obj = Rosenbrock(c.n) if c.task == "rosenbrock" else Rastrigin(c.n)
        fam = c.task
        x0 = family_starts(fam, c.n, c.batch, self.generator).to(device=self.device, dtype=self.dtype)
        return obj, x0

    def validation(self):
        """The fixed validation set (same for every run of this task and N)."""
        c = self.cfg
        if c.task == "random_quadratic":
            return quadratic_split("validation", n=c.n, size=c.val_size, dtype=self.dtype, device=self.device)
        g = torch.Generator().manual_seed(VAL_SEED + c.n)
        obj = Rosenbrock(c.n) if c.task == "rosenbrock" else Rastrigin(c.n)
        return obj, family_starts(c.task, c.n, c.val_size, g).to(device=self.device, dtype=self.dtype)

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, st):
        self.generator.set_state(st["generator"])
