"""The learned SR1 optimizer: element-wise MLPs, the model, solver and torch.optim wrapper."""
from .io import load_model, save_model
from .mlp import BasicBlock, ElementwiseMLP
from .model import FEATURES, LSR1Config, LSR1Net, LSR1Operator, LSR1State, init_state, lsr1_step
from .optim import LSR1Optimizer
from .solver import LSR1Solver, inference_mode

__all__ = ["BasicBlock", "ElementwiseMLP", "FEATURES", "LSR1Config", "LSR1Net", "LSR1Operator", "LSR1State",
           "init_state", "lsr1_step", "LSR1Optimizer", "LSR1Solver", "inference_mode", "load_model", "save_model"]
