"""Description labels: the describer over evidence from the translator or from the corpus.

``describe-corpus`` reads the evidence off the feature's real train contexts, without a
translator: the honest measure of what the translator adds. The translator methods
(``label/translator.py``) read it off the translator's decoding.

The describer's run-level parts (the rule evaluator, WordNet categories over the vocabulary, the
train sample with its counts) are built once per label call and shared by every method.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from sae_translate.label.base import Label, LabelContext, register_labeler
from sae_translate.label.describer import (
    Describer,
    DescriberConfig,
    Evidence,
    TrainSample,
)
from sae_translate.label.rules import RuleEvaluator, Selector
from sae_translate.label.wordnet import CategoryIndex


class WordNetCategories:
    """``CategoryIndex`` proposals as rule selectors. The index is built on first use (seconds over
    a large vocabulary): scoring rules that name no category never builds it."""

    def __init__(self, vocab: Sequence[str]):
        self.vocab = list(vocab)
        self._index: CategoryIndex | None = None

    @property
    def built(self) -> bool:
        return self._index is not None

    @property
    def index(self) -> CategoryIndex:
        if self._index is None:
            self._index = CategoryIndex(self.vocab)
        return self._index

    def propose(self, weights: dict[int, float], top_n: int = 3) -> Sequence[Selector]:
        return [Selector(synset=c.synset, name=c.name) for c in self.index.propose(weights, top_n)]

    def ids(self, synset: str) -> np.ndarray:
        return np.array(sorted(self.index.extension(synset)), dtype=np.int64)


@functools.lru_cache(maxsize=2)
def _rule_evaluator(vocab: tuple[str, ...]) -> tuple[RuleEvaluator, WordNetCategories]:
    categories = WordNetCategories(vocab)
    return RuleEvaluator(vocab, categories.ids), categories


def rule_evaluator(vocab: Sequence[str]) -> tuple[RuleEvaluator, WordNetCategories]:
    """The evaluator every stage runs rules with, and WordNet categories over ``vocab`` (made
    once per vocabulary and process: the label and score stages share it; the category index is
    built on the first category rule or proposal)."""
    return _rule_evaluator(tuple(vocab))


def describer_for(ctx: LabelContext) -> Describer:
    """The run's describer, built on first use and shared by the methods of this label call."""
    if "describer" not in ctx.shared:
        cfg = DescriberConfig(seed=ctx.cfg.seed)
        evaluator, categories = rule_evaluator(ctx.run.vocab)
        sample = TrainSample(ctx.run, evaluator, ctx.features, cfg)
        ctx.shared["describer"] = Describer(sample, categories, cfg)
    return ctx.shared["describer"]


def describe_all(ctx: LabelContext, evidence: Sequence[Evidence], n_alternatives: int = 2) -> list[list[Label]]:
    """Each feature's best rule (rank 0) and the next best, as labels."""
    describer = describer_for(ctx)
    out: list[list[Label]] = []
    for f, ev in zip(ctx.features.tolist(), evidence):
        found = describer.describe(f, ev)
        if found is None:
            out.append([Label("<none>", None)])
            continue
        ranked = [(found.rule, found.fidelity)] + found.alternatives[:n_alternatives]
        out.append([Label(rule.text(), rule, fidelity) for rule, fidelity in ranked])
    return out


@register_labeler("describe-corpus")
def describe_corpus_labels(ctx: LabelContext) -> list[list[Label]]:
    """The describer on the feature's real train contexts, no translator."""
    sample = describer_for(ctx).sample
    return describe_all(ctx, [sample.evidence(int(f)) for f in ctx.features])
