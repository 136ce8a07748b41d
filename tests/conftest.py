import os

import pytest
import torch

os.environ.setdefault("LSR1_NO_PROGRESS", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
