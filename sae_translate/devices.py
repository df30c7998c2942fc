"""The one place a `--device` option is read: `auto` means CUDA when present, else CPU."""

from __future__ import annotations

import torch

from sae_translate.errors import UserError


def resolve_device(device: str = "auto") -> str:
    """`auto` -> cuda or cpu; a name torch does not know, or an explicit CUDA device without a GPU,
    is a one-line error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but no CUDA GPU is visible; use --device cpu")
    return device
