"""Models that fail on purpose, loaded as a plugin by the fault-tolerance tests."""

import os
import signal

import torch
from torch import nn

from ssmbench.models import MODELS, register

# Text that rich would read as markup: a closing tag, a style, and a bracketed word it drops.
MARKUP = 'expected [/B, T] got [bold]x; pip install "ssmbench[cuda]"'


class Fault(nn.Module):
    """Identity until training starts, then fails the way its name says."""

    def __init__(self, d_model: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.scale = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.kind == "raise":
            raise RuntimeError("injected failure")
        if self.training and self.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.training and self.kind == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        if self.training and self.kind == "markup":
            raise RuntimeError(MARKUP)
        if self.training and self.kind == "nan":
            return x * float("nan")
        return x * self.scale


for kind in ("raise", "nan", "kill", "oom", "markup"):
    if f"fault-{kind}" not in MODELS:
        register(f"fault-{kind}", lambda d_model, d_state, kind=kind: [Fault(d_model, kind)])
