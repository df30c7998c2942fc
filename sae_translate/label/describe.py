"""Description labels: the describer over evidence from the translator or from the corpus.

``describe-corpus`` reads the evidence off the feature's real train contexts, without a
translator: the honest measure of what the translator adds. The translator methods
(``label/translator.py``) read it off the translator's decoding.

The describer's run-level parts (the rule evaluator, WordNet categories over the vocabulary, the
train sample with its counts) are built once per label call and shared by every method.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from sae_translate.errors import UserError
from sae_translate.label.base import Label, LabelContext, register_labeler
from sae_translate.label.describer import (
    Describer,
    DescriberConfig,
    Description,
    Evidence,
    TrainSample,
)
from sae_translate.label.rules import RuleEvaluator, Selector
from sae_translate.label.word_classes import WordClasses, class_name, is_word_class
from sae_translate.label.wordnet import CategoryIndex
from sae_translate.progress import progress

FEATURES_PER_WORKER = 256  # fewer features than this per worker process: describe in this one
CHUNK = 64  # features a worker describes per task


class WordNetCategories:
    """``CategoryIndex`` proposals as rule selectors, with the closed word classes WordNet lacks
    (``word_classes.py``: determiners, pronouns, prepositions, modal verbs, ...). Both are built on
    first use (seconds over a large vocabulary): scoring rules that name no category never builds
    them. Without the part-of-speech lexicon the describer proposes no word classes (one warning);
    a stored rule naming one still needs it."""

    def __init__(self, vocab: Sequence[str]):
        self.vocab = list(vocab)
        self._index: CategoryIndex | None = None
        self._classes: WordClasses | None = None
        self._classes_missing = False

    @property
    def built(self) -> bool:
        return self._index is not None

    def prepare(self) -> None:
        _ = self.index
        self._proposable_classes()

    @property
    def index(self) -> CategoryIndex:
        if self._index is None:
            self._index = CategoryIndex(self.vocab)
        return self._index

    @property
    def classes(self) -> WordClasses:
        if self._classes is None:
            self._classes = WordClasses(self.vocab)
        return self._classes

    def _proposable_classes(self) -> WordClasses | None:
        """The word classes, or None (said once) where the lexicon is missing."""
        if self._classes is None and not self._classes_missing:
            try:
                return self.classes
            except UserError as e:
                self._classes_missing = True
                print(f"warning: labels name no word classes (determiners, pronouns, ...): {e}", file=sys.stderr)
        return self._classes

    def propose(self, weights: dict[int, float], top_n: int = 3) -> Sequence[Selector]:
        found = [Selector(synset=c.synset, name=c.name) for c in self.index.propose(weights, top_n)]
        classes = self._proposable_classes()
        if classes is not None:
            found += [Selector(synset=n, name=class_name(n)) for n in classes.propose(weights)]
        return found

    def lemma_of_forms(self, synset: str, words: Sequence[str]) -> str | None:
        return None if is_word_class(synset) else self.index.lemma_of_forms(synset, words)

    def ids(self, synset: str) -> np.ndarray:
        if is_word_class(synset):
            return self.classes.ids(synset)
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
        cfg = DescriberConfig(seed=ctx.cfg.seed, criterion=ctx.cfg.fidelity, window=ctx.cfg.window)
        evaluator, categories = rule_evaluator(ctx.run.vocab)
        sample = TrainSample(ctx.run, evaluator, ctx.features, cfg)
        ctx.shared["describer"] = Describer(sample, categories, cfg)
    return ctx.shared["describer"]


def check_workers(requested: int) -> None:
    if requested < 0:
        raise UserError(f"--workers must be 0 (one per CPU core) or more (got {requested})")


def label_workers(requested: int, n_features: int) -> int:
    """Processes the describer runs in: ``requested``, or with 0 one per usable CPU core and at
    least ``FEATURES_PER_WORKER`` features each. One (this process) where fork is not the safe
    way to share the describer (it is on Linux; macOS and Windows spawn)."""
    check_workers(requested)
    if not sys.platform.startswith("linux"):
        return 1
    if requested:
        return requested
    cores = len(os.sched_getaffinity(0))
    return max(1, min(cores, n_features // FEATURES_PER_WORKER))


# what forked workers describe: set by describe_features for the duration of one pool
_JOB: tuple[Describer, np.ndarray, Callable[[int], Evidence]] | None = None


def _describe_chunk(bounds: tuple[int, int]) -> list[Description | None]:
    assert _JOB is not None
    return _describe_chunk_with(*_JOB, bounds)


def describe_features(
    describer: Describer,
    features: np.ndarray,
    evidence: Callable[[int], Evidence],
    workers: int = 1,
    desc: str = "describe",
) -> list[Description | None]:
    """Each feature's description, ``evidence(i)`` the evidence of ``features[i]``. With several
    workers the features are described in forked processes that share the describer and its
    train sample copy-on-write; the descriptions are the same as in one process (describe is
    deterministic: its caches hold only what it would recompute)."""
    global _JOB
    chunks = [(s, min(s + CHUNK, len(features))) for s in range(0, len(features), CHUNK)]
    out: list[Description | None] = []
    with progress(total=len(features), unit="feature", desc=desc) as bar:
        if workers <= 1 or len(chunks) <= 1:
            for bounds in chunks:
                out += _describe_chunk_with(describer, features, evidence, bounds)
                bar.update(bounds[1] - bounds[0])
            return out
        describer.prepare()  # built once here, not once per worker
        _JOB = (describer, features, evidence)
        fork = multiprocessing.get_context("fork")
        try:
            with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=fork) as pool:
                for bounds, found in zip(chunks, pool.map(_describe_chunk, chunks)):
                    out += found
                    bar.update(bounds[1] - bounds[0])
        except BrokenProcessPool:
            raise UserError(
                "a describer worker process died (out of memory?); rerun with fewer --workers, or --workers 1"
            ) from None
        finally:
            _JOB = None
    return out


def _describe_chunk_with(
    describer: Describer, features: np.ndarray, evidence: Callable[[int], Evidence], bounds: tuple[int, int]
) -> list[Description | None]:
    return [describer.describe(int(features[i]), evidence(i)) for i in range(*bounds)]


def describe_all(
    ctx: LabelContext, evidence: Callable[[int], Evidence], desc: str, n_alternatives: int = 2
) -> list[list[Label]]:
    """Each feature's best rule (rank 0) and the next best, as labels; ``evidence(i)`` is the
    evidence of ``ctx.features[i]``."""
    describer = describer_for(ctx)
    workers = label_workers(ctx.cfg.workers, len(ctx.features))
    out: list[list[Label]] = []
    for found in describe_features(describer, ctx.features, evidence, workers, desc):
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
    features = ctx.features
    return describe_all(ctx, lambda i: sample.evidence(int(features[i])), "describe-corpus")
