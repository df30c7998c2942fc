"""Baseline labels: what a feature's top activations or decoder direction name without a translator.

- ``top-tokens``: the most frequent tokens among the feature's top train activations;
- ``logit-lens``: the top tokens of the feature's decoder direction through the unembedding;
- ``random``: another feature's ``top-tokens`` label (a derangement), the floor.
"""

from __future__ import annotations

import numpy as np

from sae_translate.errors import UserError
from sae_translate.label.base import Label, LabelContext, register_labeler
from sae_translate.label.rules import Rule
from sae_translate.store.h5 import RunStore


def token_set_label(tokens: list[str]) -> Label:
    """A token-set rule and its text ("apple, pear")."""
    rule = Rule.tokens(tokens)
    return Label(rule.text(), rule)


def gather_tokens(run: RunStore, positions: np.ndarray, block_seqs: int = 4096) -> np.ndarray:
    """Token ids at global positions (seq * ctx + pos), reading contiguous blocks of sequences."""
    positions = np.asarray(positions, dtype=np.int64)
    out = np.full(positions.shape, -1, dtype=np.int32)
    flat_pos, flat_out = positions.reshape(-1), out.reshape(-1)
    valid = np.flatnonzero(flat_pos >= 0)
    if len(valid) == 0:
        return out
    seq = flat_pos[valid] // run.ctx
    order = np.argsort(seq, kind="stable")
    valid, seq = valid[order], seq[order]
    for lo in range(int(seq[0]), int(seq[-1]) + 1, block_seqs):
        a, b = np.searchsorted(seq, [lo, lo + block_seqs])
        if a == b:
            continue
        hi = int(seq[b - 1]) + 1
        block = np.asarray(run.tokens(slice(lo, hi)), dtype=np.int32).reshape(-1)
        flat_out[valid[a:b]] = block[flat_pos[valid[a:b]] - lo * run.ctx]
    return out


@register_labeler("top-tokens")
def top_tokens_labels(ctx: LabelContext) -> list[list[Label]]:
    """Most frequent tokens among each feature's top train activations (ties: by summed activation).

    The first token is always named; later ones only if they occur at least twice, so one-off
    tokens do not dilute the label.
    """
    run, feats = ctx.run, ctx.features
    tokens = gather_tokens(run, run.top_positions[feats])
    values = np.asarray(run.top_values[feats], dtype=np.float64)
    row, col = np.nonzero(tokens >= 0)
    key = row.astype(np.int64) * len(run.vocab) + tokens[row, col]
    uniq, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    act_sum = np.bincount(inverse, weights=values[row, col], minlength=len(uniq))
    urow, utok = uniq // len(run.vocab), uniq % len(run.vocab)
    order = np.lexsort((-act_sum, -counts, urow))
    urow, utok, counts = urow[order], utok[order], counts[order]
    rank = np.arange(len(urow)) - np.searchsorted(urow, urow, side="left")
    keep = (rank < ctx.cfg.label_tokens) & ((rank == 0) | (counts >= 2))
    per_feature: list[list[str]] = [[] for _ in range(len(feats))]
    vocab = run.vocab
    for r, t in zip(urow[keep].tolist(), utok[keep].tolist()):
        per_feature[r].append(vocab[t])
    return [[token_set_label(toks)] if toks else [Label("<none>")] for toks in per_feature]


@register_labeler("logit-lens")
def logit_lens_labels(ctx: LabelContext) -> list[list[Label]]:
    """Top tokens of W_dec[f] @ W_U, as stored in the run."""
    lens = ctx.run.logit_lens_tokens
    if lens is None:
        raise UserError(
            f"{ctx.run.path} has no logit-lens tokens; drop logit-lens from --methods or re-extract the run"
        )
    vocab = ctx.run.vocab
    rows = np.asarray(lens[ctx.features, : ctx.cfg.label_tokens]).tolist()
    return [[token_set_label([vocab[t] for t in row if 0 <= t < len(vocab)])] for row in rows]


@register_labeler("random")
def random_labels(ctx: LabelContext) -> list[list[Label]]:
    """Each feature gets another feature's top-tokens label (a random derangement)."""
    source = ctx.labels.get("top-tokens") or top_tokens_labels(ctx)
    n = len(source)
    perm = ctx.rng.permutation(n)
    out: list[list[Label]] = [[Label("<none>")] for _ in range(n)]
    for i in range(n):  # a cycle through perm: nobody keeps its own label when n > 1
        out[perm[i]] = source[perm[(i + 1) % n]][:1]
    return out


@register_labeler("constant")
def constant_labels(ctx: LabelContext) -> list[list[Label]]:
    """One rule for every feature, the most frequent word of the train split's first sequences:
    the floor for any score that matches label text to a name."""
    run = ctx.run
    tokens = np.asarray(run.tokens(run.train_seqs[: max(1, 262_144 // run.ctx)])).reshape(-1)
    counts = np.bincount(tokens[tokens >= 0], minlength=len(run.vocab))
    words = [i for i in np.argsort(-counts, kind="stable").tolist() if any(c.isalnum() for c in run.vocab[i])]
    label = token_set_label([run.vocab[words[0] if words else int(counts.argmax())]])
    return [[label] for _ in ctx.features]
