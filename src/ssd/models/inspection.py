"""Looking inside the network: one pass with hooks on chosen kinds of layer (FLOPs, BatchNorm folding)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn


class HeaderNetwork(nn.Module):
    """The network proper as a module of its own: a normalised batch in, the header outputs out (no pre- or
    post-processing), so hooks see exactly the layers that run on a picture."""

    def __init__(self, ssd: nn.Module):
        super().__init__()
        self.ssd = ssd

    def forward(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        return self.ssd.head_outputs(batch)


def run_with_hooks(
    model: nn.Module,
    batch: Tensor,
    after: Mapping[type[nn.Module], Callable] | None = None,
    before: Mapping[type[nn.Module], Callable] | None = None,
) -> None:
    """Run `batch` through `model` once, in eval mode and without gradients, with `after[kind]` as a forward
    hook and `before[kind]` as a forward pre-hook on every layer of that kind; hooks and mode are restored."""
    handles = []
    for module in model.modules():
        for kind, hook in (after or {}).items():
            if isinstance(module, kind):
                handles.append(module.register_forward_hook(hook))
        for kind, hook in (before or {}).items():
            if isinstance(module, kind):
                handles.append(module.register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(batch)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
