"""Torch devices by name, with one-line messages when the asked device cannot exist on this install.

torch's own error for `cuda:0` on a CPU-only build ("Torch not compiled with CUDA enabled") surfaces deep in a
traceback, after minutes of preparation; checking the name first turns it into one line that says what to
install or what to pass instead.
"""

from __future__ import annotations

import os

import torch

from augmenter.errors import UserError

# Where the pip command for a CUDA build of torch is listed (it depends on the machine's CUDA version).
TORCH_INSTALL_PAGE = "https://pytorch.org/get-started/locally/"


def cpu_only_message(device: str) -> str:
    """The line for a CUDA device asked of a torch built without CUDA."""
    return (
        f"--device {device}: this torch {torch.__version__} is a CPU-only build; install a CUDA build of "
        "torch into this environment (.venv/bin/pip install torch with the index URL for your CUDA version "
        f"from {TORCH_INSTALL_PAGE}) or pass --device cpu"
    )


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" → CUDA when present, else CPU; anything else as torch names it, refused in one line
    (UserError) when this install or machine cannot provide it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(
            f"--device {device}: not a torch device name; use auto, cpu, cuda or cuda:N"
        ) from None
    if resolved.type == "cuda":
        if torch.version.cuda is None:
            raise UserError(cpu_only_message(str(device)))
        if not torch.cuda.is_available():
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
            raise UserError(
                f"--device {device}: torch {torch.__version__} has CUDA but sees no GPU{hint}; check the "
                "driver with nvidia-smi or pass --device cpu"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise UserError(
                f"--device {device}: only {count} GPU(s) visible (cuda:0..cuda:{count - 1}); pick one of them"
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {device}: this torch or machine has no MPS support; pass --device cpu")
    return resolved
