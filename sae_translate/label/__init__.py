"""The label stage: labels per feature from every registered method (baselines, the describer
on corpus evidence, the translator).

Importing the package registers every method, so ``LABELERS`` is complete in a fresh process.
"""

from sae_translate.label import baselines, describe, translator  # noqa: F401  (they register their methods)
from sae_translate.label.base import (
    BASELINES,
    LABELERS,
    Label,
    LabelConfig,
    LabelContext,
    LabelResult,
    get_labeler,
    register_labeler,
)
from sae_translate.label.stage import label_run

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
