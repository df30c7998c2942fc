"""Ground truth of toy worlds: the feature's planted concept, and how well a label states it.

Planted concept: among the concepts of the tokens where the feature fires on held-out data (the
world's tagger), the one with the highest precision. Equal precision goes to the narrowest
concept (fewest tagged held-out tokens: "city" before its superconcept "place"); concepts equal
in both are a *tie*, and a best precision under ``min_precision`` means the feature is *split*
across concepts. Ties and splits are reported with their status and not scored: a feature is
never silently given to the first concept in config order.

Beside each planted concept, the F1 of the feature's own firing against it: the bound for a label
that states exactly what the feature does (a label can pass it only by naming more of the concept
than the feature fires on).

Two scores per labelled feature with a planted concept:

- ``ground_truth`` (extensional): F1 between the held-out tokens the label's rule selects and the
  tokens tagged with the concept ("fruit" for the fruit concept scores near 1, "apple, pear" its
  share). A label without a rule selects the tokens its words name.
- ``name_match``: the planted concept is the nearest to the label text by sentence-embedding
  cosine among all concepts' names and aliases (as concept-matching benchmarks score names).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from sae_translate.label.examples import HeldoutSlice

PLANTED, TIE, SPLIT = "planted", "tie", "split"
Tagger = Callable[[Sequence[str]], list[frozenset[str]]]


def concept_membership(
    data: HeldoutSlice, vocab: list[str], concept_names: Sequence[str], tagger: Tagger
) -> np.ndarray:
    """bool [tokens of ``data``, concepts]: the world's tags of every held-out token. Each sequence
    is tagged whole, so contextual concepts see their neighbours."""
    column = {n: i for i, n in enumerate(concept_names)}
    member = np.zeros((data.n_tokens, len(column)), dtype=bool)
    for i, row in enumerate(data.tokens):
        for j, concepts in enumerate(tagger([vocab[t] for t in row])):
            for c in concepts:
                if c in column:
                    member[i * data.ctx + j, column[c]] = True
    return member


@dataclass
class PlantedConcepts:
    feature: np.ndarray  # int64 [n] labelled features that fire often enough to judge
    concept: list[str]  # the planted concept ("" for a split)
    status: list[str]  # PLANTED, TIE or SPLIT
    precision: np.ndarray  # float64 [n]
    n_firing: np.ndarray  # int64 [n]
    # F1 of the feature's own held-out firing against its concept: what a label stating exactly
    # the feature scores. Below 1 where the SAE splits a concept over several features.
    firing_f1: np.ndarray  # float64 [n] (0 for ties and splits)

    def planted(self) -> dict[int, str]:
        return {int(f): c for f, c, s in zip(self.feature, self.concept, self.status) if s == PLANTED}


def planted_concepts(
    data: HeldoutSlice,
    member: np.ndarray,
    concept_names: Sequence[str],
    features: np.ndarray,
    min_precision: float,
    min_firings: int,
) -> PlantedConcepts:
    firing = data.value > 0
    feat, tok = data.feature[firing].astype(np.int64), data.token_index[firing]
    n_firing = np.bincount(feat, minlength=data.d_sae)
    features = np.asarray(features, dtype=np.int64)
    features = features[n_firing[features] >= min_firings]
    size = member.sum(0)  # tagged tokens per concept: the narrower concept wins equal precision
    out = PlantedConcepts(features, [], [], np.zeros(len(features)), n_firing[features], np.zeros(len(features)))
    order = np.argsort(feat, kind="stable")
    feat, tok = feat[order], tok[order]
    for i, f in enumerate(features.tolist()):
        a, b = np.searchsorted(feat, [f, f + 1])
        hits = member[tok[a:b]].sum(0)
        precision = hits / max(b - a, 1)
        best = precision.max(initial=0.0)
        out.precision[i] = best
        if best < min_precision or best == 0:
            out.concept.append("")
            out.status.append(SPLIT)
            continue
        top = np.flatnonzero(precision >= best - 1e-12)
        narrowest = top[size[top] == size[top].min()]
        out.concept.append(
            concept_names[int(narrowest[0])]
            if len(narrowest) == 1
            else " | ".join(concept_names[int(c)] for c in narrowest)
        )
        out.status.append(PLANTED if len(narrowest) == 1 else TIE)
        if len(narrowest) == 1:
            c = int(narrowest[0])
            out.firing_f1[i] = 2 * hits[c] / ((b - a) + size[c])
    return out


def f1(selected: np.ndarray, truth: np.ndarray) -> float:
    tp = float(np.count_nonzero(selected & truth))
    n_sel, n_true = float(np.count_nonzero(selected)), float(np.count_nonzero(truth))
    return 2 * tp / (n_sel + n_true) if n_sel + n_true > 0 else 0.0


def name_match(
    label_emb: np.ndarray, phrase_emb: np.ndarray, phrase_concept: np.ndarray, planted: np.ndarray
) -> np.ndarray:
    """1.0 where the nearest concept phrase (name or alias) to each label belongs to its planted
    concept. ``phrase_concept`` and ``planted`` index the same concept list."""
    if len(label_emb) == 0:
        return np.zeros(0)
    nearest = phrase_concept[(label_emb @ phrase_emb.T).argmax(1)]
    return (nearest == planted).astype(np.float64)


def concept_phrases(concepts: Sequence) -> tuple[list[str], np.ndarray]:
    """Every concept's name (underscores as spaces) and aliases, with the concept index of each."""
    phrases: list[str] = []
    owner: list[int] = []
    for i, c in enumerate(concepts):
        for p in dict.fromkeys([c.name.replace("_", " "), *c.aliases]):
            phrases.append(p)
            owner.append(i)
    return phrases, np.array(owner, dtype=np.int64)
