"""What a labeller sees and the registry of label methods.

A method takes a ``LabelContext`` and returns, for every alive feature in order, a ranked list of
candidate labels (rank 0 is the one scored). Methods register with ``register_labeler``;
``load_methods`` (which ``get_labeler`` calls) imports every module that registers a built-in one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sae_translate.errors import UserError
from sae_translate.label.config import BASELINES as BASELINES  # re-exported
from sae_translate.label.config import LabelConfig
from sae_translate.label.rules import Rule
from sae_translate.store.h5 import RunStore


@dataclass
class LabelResult:
    run_id: str
    db: str
    methods: tuple[str, ...]
    n_features: int  # alive features labelled
    n_labels: int
    n_examples: int
    seconds: float


@dataclass(frozen=True)
class Label:
    """A label's text, the rule it states (None for free text: scorers then match its words) and,
    for a describer's label, its fidelity: how well the rule detects the feature's firing on train
    tokens (``DescriberConfig.criterion``), what the describer chose it by (None where no method
    measured one)."""

    text: str
    rule: Rule | None = None
    fidelity: float | None = None


@dataclass
class LabelContext:
    """What a labeller may use. ``labels`` holds methods already computed in this call, ``shared``
    what one method built that others reuse (the describer)."""

    run: RunStore
    features: np.ndarray  # int64 alive features, ascending
    cfg: LabelConfig
    rng: np.random.Generator
    labels: dict[str, list[list[Label]]] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)


Labeler = Callable[[LabelContext], list[list[Label]] | list[list[str]]]
LABELERS: dict[str, Labeler] = {}


def register_labeler(name: str) -> Callable[[Labeler], Labeler]:
    """Decorator: make ``fn(ctx) -> candidates per feature`` available as method ``name``."""

    def add(fn: Labeler) -> Labeler:
        LABELERS[name] = fn
        return fn

    return add


# the modules whose methods register themselves (they import this one, so they are imported on use)
METHOD_MODULES = ("baselines", "describe", "translator")


def load_methods() -> dict[str, Labeler]:
    """Every registered method, after importing the modules that register the built-in ones."""
    for module in METHOD_MODULES:
        importlib.import_module(f"sae_translate.label.{module}")
    return LABELERS


def get_labeler(name: str) -> Labeler:
    if name not in load_methods():
        raise UserError(f"unknown label method {name!r}; choose from {', '.join(sorted(LABELERS))}")
    return LABELERS[name]
