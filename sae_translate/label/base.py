"""What a labeller sees and the registry of label methods.

A method takes a ``LabelContext`` and returns, for every alive feature in order, a ranked list of
candidate labels (rank 0 is the one scored). Methods register with ``register_labeler``; the
package ``sae_translate.label`` imports every module that registers one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sae_translate.errors import UserError
from sae_translate.label.examples import ExampleConfig
from sae_translate.label.rules import Rule
from sae_translate.store import db as label_db
from sae_translate.store.h5 import RunStore

BASELINES = ("top-tokens", "logit-lens", "constant", "random")


@dataclass
class LabelConfig:
    run: str
    db: str = str(label_db.DEFAULT_DB)
    methods: tuple[str, ...] = BASELINES
    run_id: str | None = None  # defaults to the run directory's name
    label_tokens: int = 3  # tokens named by a baseline label
    window: int = 16  # tokens per example window
    n_top_examples: int = 5
    n_quantiles: int = 5
    n_per_quantile: int = 2
    max_heldout_tokens: int = 262_144
    seed: int = 0
    device: str = "auto"
    # scorers run right after labelling by score.label_and_score (empty: label only)
    scorers: tuple[str, ...] = ("embedding", "detection", "simulation", "ground_truth", "name_match")
    world: str = ""  # toy-world dir for ground truth; "" = the run's own

    @property
    def example_config(self) -> ExampleConfig:
        return ExampleConfig(
            window=self.window,
            n_top=self.n_top_examples,
            n_quantiles=self.n_quantiles,
            n_per_quantile=self.n_per_quantile,
            max_heldout_tokens=self.max_heldout_tokens,
            seed=self.seed,
        )


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
    """A label's text and the rule it states (None for free text: scorers then match its words)."""

    text: str
    rule: Rule | None = None


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


def get_labeler(name: str) -> Labeler:
    if name not in LABELERS:
        raise UserError(f"unknown label method {name!r}; choose from {', '.join(sorted(LABELERS))}")
    return LABELERS[name]
