"""The label stage: labels per feature from every registered method (baselines, the describer
on corpus evidence, the translator).

Importing the package is light (its config, for the command line); the first use of any other
name here imports every method module, so ``LABELERS`` is complete in a fresh process.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sae_translate.label.config import BASELINES, LabelConfig

if TYPE_CHECKING:
    from sae_translate.label.base import (
        LABELERS,
        Label,
        LabelContext,
        LabelResult,
        get_labeler,
        register_labeler,
    )
    from sae_translate.label.stage import label_run

_LAZY = {
    "LABELERS": "base",
    "Label": "base",
    "LabelContext": "base",
    "LabelResult": "base",
    "get_labeler": "base",
    "register_labeler": "base",
    "label_run": "stage",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from sae_translate.label.base import load_methods

    load_methods()
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = [
    "BASELINES",
    "LABELERS",
    "Label",
    "LabelConfig",
    "LabelContext",
    "LabelResult",
    "get_labeler",
    "label_run",
    "register_labeler",
]
