"""Data-parallel training over several processes (`torchrun`): NCCL on CUDA, Gloo on CPU.

What makes two processes with half the batch each give the same weights as one process with the whole batch:
- `ShardedBatchSampler` cuts every global batch of the single-process order into one slice per process, with
  each picture's augmentation seed unchanged;
- `use_global_normaliser` makes the loss divide by the number of positives of the *global* batch, as one
  process would (DDP then averages the gradients, so each process's loss is scaled by the world size);
- `DistributedBatchNorm2d` (for `--sync-bn` on CPU, where torch's SyncBatchNorm does not run) takes the
  BatchNorm statistics over the global batch.
Only rank 0 writes files and prints.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Sampler

from ssd.device import choose_device


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> DistributedContext:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); otherwise a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(device=choose_device(device_name))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = choose_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, local_rank, device)


def cleanup_distributed(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: Tensor, context: DistributedContext) -> Tensor:
    """Sum over processes, in place. NCCL reduces only GPU tensors, so CPU ones travel to the device."""
    if context.enabled:
        if tensor.device != context.device:
            on_device = tensor.to(context.device)
            dist.all_reduce(on_device)
            tensor.copy_(on_device)
        else:
            dist.all_reduce(tensor)
    return tensor


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


# BatchNorm needs two values per channel; on the 1x1 maps of the last extra layers that is two pictures.
MIN_BATCH = 2


class ShardedBatchSampler(Sampler):
    """Batches of `(index, sample_seed)` for one process: global batch k of the single-process order is
    `order[k*G:(k+1)*G]` (G = batch_size * world_size) and this process takes its `rank`-th slice.

    The order and seeds come from `sampler` (the data package's `SeededSampler`), so with one process this is
    exactly the single-process loader. With several, the order is padded by wrapping around to a multiple of
    the world size so every process makes the same number of steps. A last batch of a single picture per
    process is dropped (the next epoch's order differs, so no picture is left out for good).

    `skip_batches(n)` makes the next pass start at batch n of its epoch: a run resumed mid-epoch sees exactly
    the batches an unbroken run would have seen next.
    """

    def __init__(self, sampler: Sampler, batch_size: int, rank: int = 0, world_size: int = 1):
        self.sampler, self.batch_size, self.rank, self.world_size = sampler, batch_size, rank, world_size
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def skip_batches(self, count: int) -> None:
        """The next pass leaves out its first `count` batches (one pass only)."""
        self._skip = count

    def _padded_size(self) -> int:
        size = len(self.sampler)
        return -(-size // self.world_size) * self.world_size

    def __len__(self) -> int:
        per_process = self._padded_size() // self.world_size
        full, rest = divmod(per_process, self.batch_size)
        return full + (rest > 0 and (rest >= MIN_BATCH or full == 0))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        items = list(iter(self.sampler))
        padded = self._padded_size()
        items += items[: padded - len(items)]
        global_batch = self.batch_size * self.world_size
        skip, self._skip = self._skip, 0
        for start in range(skip * global_batch, padded, global_batch):
            chunk = items[start : start + global_batch]
            share = len(chunk) // self.world_size
            if share < min(MIN_BATCH, self.batch_size) and start > 0:
                return  # a last batch of one picture: BatchNorm cannot train on it (1x1 maps)
            yield chunk[self.rank * share : (self.rank + 1) * share]


def use_global_normaliser(criterion: nn.Module, context: DistributedContext) -> None:
    """Make `MultiBoxLoss` divide by the global batch's normaliser (positives, summed over processes).

    The loss's own normaliser counts one process's positives; the mean over processes of such losses is not
    the loss of the whole batch. Here the counts are summed over processes first and the result divided by
    the world size, because DDP averages the gradients.
    """
    if not context.enabled:
        return
    local_normaliser = criterion._normaliser

    def global_normaliser(num_positives: Tensor, num_mined: Tensor) -> Tensor:
        counts = torch.stack([num_positives.float(), num_mined.float()]).detach()
        dist.all_reduce(counts)
        return local_normaliser(counts[0], counts[1]) / context.world_size

    criterion._normaliser = global_normaliser


# BatchNorm's sums travel in a process group of their own: in the default group they would interleave with
# DDP's asynchronous gradient all-reduces during the backward pass.
_BATCHNORM_GROUP = None


class _AllReduceSum(torch.autograd.Function):
    """A sum over processes that gradients flow through: the gradient of a sum is the sum of gradients."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        total = tensor.clone()
        dist.all_reduce(total, group=_BATCHNORM_GROUP)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        total = grad.clone()
        dist.all_reduce(total, group=_BATCHNORM_GROUP)
        return total


class DistributedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose batch statistics cover every process's pictures, on any device (torch's
    SyncBatchNorm runs only on GPUs). Gradients flow through the all-reduce, as in SyncBatchNorm."""

    def forward(self, x: Tensor) -> Tensor:
        if not (
            self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        ):
            return super().forward(x)
        channels = x.shape[1]
        count = x.new_tensor([x.numel() / channels])
        flat = x.transpose(0, 1).reshape(channels, -1).float()
        moments = _AllReduceSum.apply(torch.cat([flat.sum(1), (flat * flat).sum(1), count]))
        total = moments[-1]
        mean = moments[:channels] / total
        var = (moments[channels : 2 * channels] / total - mean * mean).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (
                    self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                )
                unbiased = var * total / (total - 1).clamp(min=1)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.detach(), alpha=momentum)
        shape = (1, channels, 1, 1)
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight
        y = (x.float() - mean.view(shape)) * scale.view(shape)
        if self.affine:
            y = y + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """torch's SyncBatchNorm on CUDA; `DistributedBatchNorm2d` elsewhere."""
    global _BATCHNORM_GROUP
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if _BATCHNORM_GROUP is None and dist.is_initialized():
        _BATCHNORM_GROUP = dist.new_group()  # every process calls this, in the same order
    return _replace_batchnorm(model)


def _replace_batchnorm(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        replacement = DistributedBatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        replacement.load_state_dict(module.state_dict())
        replacement.train(module.training)
        return replacement.to(next(module.buffers(), torch.empty(0)).device)
    for name, child in module.named_children():
        setattr(module, name, _replace_batchnorm(child))
    return module
