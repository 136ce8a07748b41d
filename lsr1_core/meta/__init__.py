"""Meta-training: presets, tasks, the unrolled meta-loss and the trainer."""
from .presets import PRESETS, TEST_MEMORY, TrainConfig, preset
from .train import LSR1Problem, MetaProblem, Trainer, TrainResult, evaluate, unroll

__all__ = ["PRESETS", "TEST_MEMORY", "TrainConfig", "preset", "Trainer", "TrainResult", "MetaProblem", "LSR1Problem",
           "evaluate", "unroll"]
