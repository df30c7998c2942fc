"""The ground-truth scorer of toy worlds: does the label name the feature's true concept.

The true concept is the one with the highest precision among the feature's firing tokens on
held-out data (world tagger); features whose best precision is below ``min_concept_precision``
or that fire fewer than ``min_concept_firings`` times have no dominant concept and are excluded.

"The label names the concept" (``names_concept``): the concept's name or one of its aliases
appears in the label as whole words (case and plural -s ignored), or, for a lexical concept, at
least half of the label's terms are member words of the concept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sae_translate.label.examples import HeldoutSlice

_WORD = re.compile(r"\w+")


def _phrase_in(phrase: str, text_words: list[str]) -> bool:
    words = [_singular(w) for w in _WORD.findall(phrase.lower().replace("_", " ").replace("-", " "))]
    if not words:
        return False
    n = len(words)
    return any(text_words[i:i + n] == words for i in range(len(text_words) - n + 1))


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def names_concept(label: str, concept: Any) -> bool:
    """Whether ``label`` names ``concept`` (a world Concept: name, kind, aliases, words)."""
    words = [_singular(w) for w in _WORD.findall(label.lower())]
    if any(_phrase_in(p, words) for p in (concept.name, *concept.aliases)):
        return True
    if concept.kind != "lexical" or not concept.words:
        return False
    members = {_singular(w.lower()) for w in concept.words}
    items = [i.strip().lower() for i in label.split(", ") if i.strip()]
    if not items:
        return False
    named = sum(_singular(i) in members or i in members for i in items)
    return named * 2 >= len(items)


@dataclass
class TrueConcepts:
    feature: np.ndarray       # int64 [n] features with a dominant concept
    concept: list[str]
    precision: np.ndarray     # float64 [n]
    n_firing: np.ndarray      # int64 [n]


Tagger = Callable[[Sequence[str]], list[frozenset[str]]]


def true_concepts(data: HeldoutSlice, vocab: list[str], concept_names: Sequence[str],
                  tagger: Tagger, features: np.ndarray, min_precision: float,
                  min_firings: int) -> TrueConcepts:
    """Each feature's highest-precision concept among its held-out firing tokens.

    ``tagger`` gives the concept set of every word of a sequence (the world's tagger); each
    held-out sequence is tagged whole so contextual concepts see their neighbours.
    """
    names = list(concept_names)
    column = {n: i for i, n in enumerate(names)}
    member = np.zeros((data.n_tokens, len(names)), dtype=bool)
    for i, row in enumerate(data.tokens):
        tags = tagger([vocab[t] for t in row])
        for j, concepts in enumerate(tags):
            for c in concepts:
                if c in column:
                    member[i * data.ctx + j, column[c]] = True
    firing = data.value > 0
    feat, tok = data.feature[firing].astype(np.int64), data.token_index[firing]
    n_firing = np.bincount(feat, minlength=data.d_sae)
    hits = np.stack([np.bincount(feat, weights=member[tok, c], minlength=data.d_sae)
                     for c in range(len(names))], axis=1) if names else np.zeros((data.d_sae, 0))
    best = hits.argmax(axis=1) if names else np.zeros(data.d_sae, np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_firing > 0, hits.max(axis=1, initial=0) / n_firing, 0.0)
    features = np.asarray(features, dtype=np.int64)
    ok = (precision[features] >= min_precision) & (n_firing[features] >= min_firings)
    kept = features[ok]
    return TrueConcepts(kept, [names[c] for c in best[kept]], precision[kept], n_firing[kept])
