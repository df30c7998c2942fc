"""The simulator behind the detection and simulation scorers: which tokens a label selects.

A label with a rule runs it (``label/rules.py``); free text falls back to token match:

A label's terms: the label split at ", " into items; an item with letters or digits gives its
words (minus stopwords, unless it has nothing else) and the item itself; an item without gives
itself (so punctuation tokens can be named). A token is named when its stripped, lower-cased
text equals a term, up to a plural -s.
"""

from __future__ import annotations

import re

import numpy as np

from sae_translate.label.examples import token_text
from sae_translate.label.rules import Rule, RuleEvaluator, TokenView

STOPWORDS = frozenset(
    "a an the of and or in on at to for with by from is are was were be as it its this that "
    "these those word words token tokens".split()
)
_WORD = re.compile(r"\w+")


def _plural_variants(word: str) -> tuple[str, ...]:
    if len(word) > 3 and word.endswith("s"):
        return (word, word[:-1])
    return (word, word + "s") if len(word) > 2 else (word,)


def label_terms(label: str) -> set[str]:
    """The lower-cased terms a label names (see the module docstring)."""
    terms: set[str] = set()
    for item in label.lower().split(", "):
        item = item.strip()
        if not item:
            continue
        terms.add(item)
        words = _WORD.findall(item)
        content = [w for w in words if w not in STOPWORDS]
        terms.update(content or words)
    return terms


def vocab_index(vocab: list[str]) -> dict[str, list[int]]:
    """Normalised token text -> token ids with that text."""
    index: dict[str, list[int]] = {}
    for i, tok in enumerate(vocab):
        index.setdefault(token_text(tok).lower(), []).append(i)
    return index


def named_token_ids(label: str, index: dict[str, list[int]]) -> np.ndarray:
    """Token ids the label names."""
    ids: set[int] = set()
    for term in label_terms(label):
        for variant in _plural_variants(term):
            ids.update(index.get(variant, ()))
    return np.fromiter(sorted(ids), dtype=np.int64, count=len(ids))


def token_matches(labels: list[str], vocab: list[str], tokens: np.ndarray) -> np.ndarray:
    """bool [F, ...]: whether each token of feature f's windows is named by ``labels[f]``."""
    index = vocab_index(vocab)
    cache: dict[str, np.ndarray] = {}
    rows, ids = [], []
    for f, label in enumerate(labels):
        if label not in cache:
            cache[label] = named_token_ids(label, index)
        named = cache[label]
        rows.append(np.full(len(named), f, dtype=np.int64))
        ids.append(named)
    v = len(vocab) + 1
    keys = np.sort(np.concatenate(rows) * v + np.concatenate(ids)) if rows else np.zeros(0, np.int64)
    feat = np.arange(len(labels), dtype=np.int64).reshape((-1,) + (1,) * (tokens.ndim - 1))
    query = feat * v + np.where(tokens >= 0, tokens, v - 1)
    if len(keys) == 0:
        return np.zeros(tokens.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return (keys[pos] == query) & (tokens >= 0)


def detection_scores(matches: np.ndarray, activating: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Balanced accuracy of 'window fires iff it contains a named token'."""
    pred = matches.any(axis=-1)
    p, n = activating & valid, ~activating & valid
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = (pred & p).sum(1) / p.sum(1)
        tnr = (~pred & n).sum(1) / n.sum(1)
    return 0.5 * (tpr + tnr)


def simulation_scores(matches: np.ndarray, acts: np.ndarray, token_valid: np.ndarray) -> np.ndarray:
    """Pearson correlation of simulated (named = 1) and true per-token activations, per feature."""
    m = token_valid.reshape(len(acts), -1).astype(np.float64)
    x = matches.reshape(len(acts), -1).astype(np.float64) * m
    y = acts.reshape(len(acts), -1).astype(np.float64) * m
    n = m.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = x.sum(1) / n, y.sum(1) / n
        cov = (x * y).sum(1) / n - mx * my
        vx = (x * x).sum(1) / n - mx * mx
        vy = (y * y).sum(1) / n - my * my
        r = cov / np.sqrt(vx * vy)
    return np.where((vx > 1e-12) & (vy > 1e-12), np.clip(r, -1, 1), 0.0)


def rule_matches(
    rules: list[Rule | None],
    texts: list[str],
    evaluator: RuleEvaluator,
    view: TokenView,
    cells: np.ndarray,
    vocab: list[str],
) -> np.ndarray:
    """bool [F, K, W]: the tokens each feature's label selects in its windows. ``cells`` holds the
    windows' token indices into ``view`` (-1 = padding). A label with a rule runs it over the whole
    sequence (so context from before the window counts); one without matches its words."""
    ctx = view.tokens.shape[1]
    out = np.zeros(cells.shape, dtype=bool)
    valid = cells >= 0
    safe = np.where(valid, cells, 0)
    free = [f for f, r in enumerate(rules) if r is None]
    if free:
        tokens = np.where(valid[free], view.tokens.reshape(-1)[safe[free]], -1)
        out[free] = token_matches([texts[f] for f in free], vocab, tokens)
    for f, rule in enumerate(rules):
        if rule is not None:
            out[f] = evaluator.select(rule, view, safe[f] // ctx, safe[f] % ctx) & valid[f]
    return out
