"""The learned SR1 optimizer: element-wise MLPs, the model, its update rules, solver and torch.optim wrapper."""
from .io import load_model, save_model
from .mlp import BasicBlock, ElementwiseMLP
from .model import FEATURES, LSR1Config, LSR1Net, LSR1Operator, LSR1State, init_state
from .optim import LSR1Optimizer
from .paper import PaperRule, lsr1_step
from .qn import QNRule
from .rules import StepOut, UpdateRule, rule_for
from .solver import LSR1Solver, inference_mode

__all__ = ["BasicBlock", "ElementwiseMLP", "FEATURES", "LSR1Config", "LSR1Net", "LSR1Operator", "LSR1State",
           "init_state", "lsr1_step", "LSR1Optimizer", "LSR1Solver", "inference_mode", "load_model", "save_model",
           "PaperRule", "QNRule", "StepOut", "UpdateRule", "rule_for"]
