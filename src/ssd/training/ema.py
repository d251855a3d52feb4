"""An exponential moving average of the weights: a smoother model to evaluate and ship than the last step's.

Every float entry of the state dict (parameters and BatchNorm statistics) is averaged; integer counters are
copied. The decay ramps up as `min(decay, (1 + n) / (10 + n))` after n updates, so early on, while the
weights move fast, the average does not drag a long tail of the random initialisation behind it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.9998):
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        self.updates += 1
        current = model.state_dict()
        for name, average in self.module.state_dict().items():
            value = current[name].detach()
            if average.dtype.is_floating_point:
                average.mul_(decay).add_(value.to(average.dtype), alpha=1 - decay)
            else:
                average.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, shaped like the model's: a checkpoint's `ema` entry loads as a model."""
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, weights: dict[str, torch.Tensor], updates: int) -> None:
        self.module.load_state_dict(weights)
        self.updates = int(updates)
