"""Which device to run on: picked from what torch sees, never assumed."""

from __future__ import annotations

import torch

from ssd.errors import UserError


def torch_has_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX) for PyTorch's oneDNN kernels. (oneDNN's
    own `_is_mkldnn_bf16_supported` is true on any AVX512 CPU, where bf16 is emulated and slow.)"""
    checks = (
        getattr(torch.cpu, "_is_avx512_bf16_supported", None),
        getattr(torch.cpu, "_is_amx_tile_supported", None),
    )
    return any(bool(check()) for check in checks if check is not None)


def choose_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto`: the GPU when torch sees one, else Apple's MPS, else the CPU; a named device is checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UserError(f"--device {name!r} is not a device torch knows (cpu, cuda, cuda:N, mps)") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} was asked for, but torch sees no CUDA GPU")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps was asked for, but this torch has no MPS support here")
    return device
