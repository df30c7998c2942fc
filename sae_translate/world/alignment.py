"""Which concept each SAE feature stands for: among the tokens a feature fires on, the concept
with the highest precision (share of its firings on tokens of that concept)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureConcept:
    feature: int
    concept: str | None  # None when the feature never fired or no firing token has a concept
    precision: float  # share of the feature's firings on tokens of `concept`
    recall: float  # share of `concept`'s tokens the feature fires on
    firings: int


def concept_matrix(tags: Sequence[frozenset[str]], concepts: Sequence[str]) -> np.ndarray:
    """bool [n_tokens, n_concepts]: token t carries concept c."""
    index = {name: i for i, name in enumerate(concepts)}
    matrix = np.zeros((len(tags), len(concepts)), dtype=bool)
    for t, names in enumerate(tags):
        for name in names:
            if name in index:
                matrix[t, index[name]] = True
    return matrix


def align_features(
    indptr: np.ndarray,
    features: np.ndarray,
    tags: Sequence[frozenset[str]],
    concepts: Sequence[str],
    d_sae: int,
) -> list[FeatureConcept]:
    """Best concept of every feature from CSR codes over tokens (`indptr` [n_tokens + 1],
    `features` [nnz], the layout of activations.h5) and the tokens' ground-truth concepts."""
    n_tokens = len(indptr) - 1
    if len(tags) != n_tokens:
        raise ValueError(f"{len(tags)} tag sets for {n_tokens} tokens")
    truth = concept_matrix(tags, concepts)
    token_of = np.repeat(np.arange(n_tokens), np.diff(indptr))
    features = np.asarray(features, dtype=np.int64)
    firings = np.bincount(features, minlength=d_sae)
    hits = np.zeros((d_sae, len(concepts)), dtype=np.int64)
    for c in range(len(concepts)):
        on_concept = truth[token_of, c]
        hits[:, c] = np.bincount(features[on_concept], minlength=d_sae)
    concept_sizes = truth.sum(axis=0)
    results = []
    for f in range(d_sae):
        if firings[f] == 0 or hits[f].max() == 0:
            results.append(FeatureConcept(f, None, 0.0, 0.0, int(firings[f])))
            continue
        c = int(np.argmax(hits[f]))
        results.append(FeatureConcept(
            feature=f,
            concept=concepts[c],
            precision=float(hits[f, c] / firings[f]),
            recall=float(hits[f, c] / max(concept_sizes[c], 1)),
            firings=int(firings[f]),
        ))
    return results


def alignment_summary(
    aligned: Sequence[FeatureConcept],
    concepts: Sequence[str],
    min_precision: float = 0.8,
    min_firings: int = 10,
) -> dict[str, object]:
    """Counts of alive and concept-aligned features, and for each concept its best feature
    (highest F1 among the features aligned to it)."""
    alive = [a for a in aligned if a.firings > 0]
    good = [a for a in alive if a.concept and a.precision >= min_precision and a.firings >= min_firings]
    per_concept: dict[str, dict[str, float]] = {}
    for name in concepts:
        mine = [a for a in good if a.concept == name]
        if not mine:
            continue
        best = max(mine, key=lambda a: 2 * a.precision * a.recall / (a.precision + a.recall))
        per_concept[name] = {
            "features": len(mine),
            "best_feature": best.feature,
            "precision": round(best.precision, 3),
            "recall": round(best.recall, 3),
        }
    return {
        "alive": len(alive),
        "aligned": len(good),
        "aligned_share_of_alive": len(good) / max(len(alive), 1),
        "concepts_covered": len(per_concept),
        "concepts": len(concepts),
        "per_concept": per_concept,
    }
