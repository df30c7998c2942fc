"""Held-out example windows per feature, sampled as delphi samples them.

The held-out token stream is cut into fixed windows (``window`` tokens, never crossing a
sequence). A feature's activation in a window is its maximum over the window's tokens. Per
feature we keep:

- ``top``: the windows with the highest activation;
- ``quantile``: activating windows drawn evenly across activation quantiles (equal-count bins
  of the feature's activating windows ranked by activation, ``n_per_quantile`` from each);
- ``random``: as many random windows where the feature does not fire at all.

``quantile`` and ``random`` windows are what the scorers score; all three go to the
``examples`` table as text with each firing token marked ``«token»``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

KINDS = ("top", "quantile", "random")
KIND_TOP, KIND_QUANTILE, KIND_RANDOM = 0, 1, 2


@dataclass
class ExampleConfig:
    window: int = 16  # tokens per example window
    n_top: int = 5
    n_quantiles: int = 5
    n_per_quantile: int = 2  # n_quantiles * n_per_quantile activating windows to score
    max_heldout_tokens: int = 262_144  # bound on held-out tokens read (first held-out sequences)
    seed: int = 0

    @property
    def n_random(self) -> int:
        """Non-activating windows: as many as the scored activating ones."""
        return self.n_quantiles * self.n_per_quantile


class CodesLike(Protocol):
    indptr: np.ndarray
    feature: np.ndarray
    value: np.ndarray


class RunLike(Protocol):
    @property
    def ctx(self) -> int: ...
    @property
    def d_sae(self) -> int: ...
    @property
    def heldout_seqs(self) -> np.ndarray: ...
    @property
    def vocab(self) -> list[str]: ...

    def tokens(self, seqs: np.ndarray) -> np.ndarray: ...
    def codes(self, seqs: np.ndarray) -> CodesLike: ...


@dataclass
class HeldoutSlice:
    """Tokens and codes of some held-out sequences, with fast (token, feature) lookups."""

    seqs: np.ndarray  # int64 [n] run sequence ids, sorted
    tokens: np.ndarray  # int32 [n, ctx]
    ctx: int
    d_sae: int
    token_index: np.ndarray  # int64 [nnz] local token index of each code (row of the CSR)
    feature: np.ndarray  # int32 [nnz]
    value: np.ndarray  # float32 [nnz]
    _keys: np.ndarray  # int64 [nnz] token_index * d_sae + feature, sorted

    @classmethod
    def load(cls, run: RunLike, seqs: np.ndarray) -> HeldoutSlice:
        seqs = np.asarray(np.sort(np.unique(seqs)), dtype=np.int64)
        tokens = np.asarray(run.tokens(seqs), dtype=np.int32).reshape(len(seqs), run.ctx)
        codes = run.codes(seqs)
        counts = np.diff(np.asarray(codes.indptr, dtype=np.int64)).astype(np.int64)
        token_index = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        feature = np.asarray(codes.feature, dtype=np.int32)
        value = np.asarray(codes.value, dtype=np.float32)
        keys = token_index * run.d_sae + feature
        order = np.argsort(keys, kind="stable")
        return cls(seqs, tokens, run.ctx, run.d_sae, token_index[order], feature[order], value[order], keys[order])

    @property
    def n_tokens(self) -> int:
        return len(self.seqs) * self.ctx

    def local_tokens(self, seq: np.ndarray, start: np.ndarray, width: int) -> np.ndarray:
        """Local token indices [n, width] of windows (run seq, start); -1 past the sequence end."""
        local_seq = np.searchsorted(self.seqs, seq)
        if np.any(local_seq >= len(self.seqs)) or np.any(self.seqs[np.minimum(local_seq, len(self.seqs) - 1)] != seq):
            raise ValueError("window sequence not in this held-out slice")
        pos = np.asarray(start, dtype=np.int64)[:, None] + np.arange(width, dtype=np.int64)
        index = local_seq[:, None].astype(np.int64) * self.ctx + pos
        return np.where(pos < self.ctx, index, -1)

    def token_ids(self, local_index: np.ndarray) -> np.ndarray:
        """Token ids at local token indices; -1 where the index is -1."""
        flat = self.tokens.reshape(-1)
        return np.where(local_index >= 0, flat[np.maximum(local_index, 0)], -1).astype(np.int32)

    def activations(self, local_index: np.ndarray, feature: np.ndarray) -> np.ndarray:
        """Activation of ``feature`` at each local token index (broadcast); 0 where silent."""
        local_index, feature = np.broadcast_arrays(local_index, feature)
        keys = local_index.astype(np.int64) * self.d_sae + feature.astype(np.int64)
        pos = np.searchsorted(self._keys, keys.reshape(-1))
        pos = np.minimum(pos, max(len(self._keys) - 1, 0))
        if len(self._keys) == 0:
            return np.zeros(keys.shape, dtype=np.float32)
        hit = (self._keys[pos] == keys.reshape(-1)) & (local_index.reshape(-1) >= 0)
        return np.where(hit, self.value[pos], 0.0).astype(np.float32).reshape(keys.shape)


@dataclass
class ExampleSet:
    """Sampled example windows, one row per (feature, kind, rank)."""

    feature: np.ndarray  # int32 [n]
    kind: np.ndarray  # int8 [n]: KIND_TOP / KIND_QUANTILE / KIND_RANDOM
    rank: np.ndarray  # int32 [n]: order within (feature, kind)
    seq: np.ndarray  # int64 [n] run sequence id
    start: np.ndarray  # int32 [n] first token position of the window
    stop: np.ndarray  # int32 [n] one past the last position
    activation: np.ndarray  # float32 [n]: the feature's max activation in the window
    heldout_windows: np.ndarray  # int64 [d_sae]: activating held-out windows per feature

    def __len__(self) -> int:
        return len(self.feature)


def heldout_seqs_for(run: RunLike, max_tokens: int) -> np.ndarray:
    """The first held-out sequences, at most ``max_tokens`` tokens in all."""
    n = max(1, max_tokens // run.ctx)
    return np.asarray(run.heldout_seqs[:n], dtype=np.int64)


def sample_examples(data: HeldoutSlice, features: np.ndarray, cfg: ExampleConfig) -> ExampleSet:
    """Top, quantile and random non-activating windows for each of ``features`` (all vectorised)."""
    rng = np.random.default_rng(cfg.seed)
    per_seq = -(-data.ctx // cfg.window)
    n_windows = len(data.seqs) * per_seq
    wanted = np.zeros(data.d_sae, dtype=bool)
    wanted[np.asarray(features, dtype=np.int64)] = True

    # max activation per (feature, window), from the codes of wanted features
    keep = wanted[data.feature] & (data.value > 0)
    f = data.feature[keep].astype(np.int64)
    tok = data.token_index[keep]
    win = (tok // data.ctx) * per_seq + (tok % data.ctx) // cfg.window
    key = f * n_windows + win
    order = np.argsort(key, kind="stable")
    key, val = key[order], data.value[keep][order]
    if len(key):
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        wkey, wval = key[starts], np.maximum.reduceat(val, starts)
    else:
        wkey, wval = np.zeros(0, np.int64), np.zeros(0, np.float32)
    wfeat, wwin = wkey // n_windows, wkey % n_windows
    heldout_windows = np.bincount(wfeat, minlength=data.d_sae).astype(np.int64)

    # rank windows within each feature by activation, descending
    by_act = np.lexsort((-wval, wfeat))
    wfeat, wwin, wval = wfeat[by_act], wwin[by_act], wval[by_act]
    first = np.searchsorted(wfeat, wfeat, side="left")
    rank = np.arange(len(wfeat)) - first
    count = heldout_windows[wfeat]

    parts: list[tuple[np.ndarray, ...]] = []
    top = rank < cfg.n_top
    parts.append((wfeat[top], np.full(top.sum(), KIND_TOP), rank[top], wwin[top], wval[top]))

    # quantile bins by rank; a random draw of n_per_quantile inside each bin
    qbin = rank * cfg.n_quantiles // np.maximum(count, 1)
    shuffle = rng.random(len(wfeat))
    qorder = np.lexsort((shuffle, qbin, wfeat))
    group = wfeat[qorder] * cfg.n_quantiles + qbin[qorder]
    in_group = np.arange(len(group)) - np.searchsorted(group, group, side="left")
    chosen = qorder[in_group < cfg.n_per_quantile]
    chosen = chosen[np.lexsort((rank[chosen], wfeat[chosen]))]  # strongest first
    qfeat = wfeat[chosen]
    qrank = np.arange(len(qfeat)) - np.searchsorted(qfeat, qfeat, side="left")
    parts.append((qfeat, np.full(len(qfeat), KIND_QUANTILE), qrank, wwin[chosen], wval[chosen]))

    parts.append(
        _sample_silent(
            np.asarray(features, dtype=np.int64),
            wfeat * n_windows + wwin,
            heldout_windows,
            n_windows,
            cfg.n_random,
            rng,
        )
    )

    feat, kind, rk, w, act = (np.concatenate(c) for c in zip(*parts))
    order = np.lexsort((rk, kind, feat))
    feat, kind, rk, w, act = feat[order], kind[order], rk[order], w[order], act[order]
    start = (w % per_seq) * cfg.window
    return ExampleSet(
        feature=feat.astype(np.int32),
        kind=kind.astype(np.int8),
        rank=rk.astype(np.int32),
        seq=data.seqs[w // per_seq],
        start=start.astype(np.int32),
        stop=np.minimum(start + cfg.window, data.ctx).astype(np.int32),
        activation=act.astype(np.float32),
        heldout_windows=heldout_windows,
    )


def _sample_silent(
    features: np.ndarray,
    active_keys: np.ndarray,
    active_count: np.ndarray,
    n_windows: int,
    n: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, ...]:
    """``n`` distinct random windows per feature where the feature never fires."""
    active_keys = np.sort(active_keys)
    out_f: list[np.ndarray] = []
    out_w: list[np.ndarray] = []
    todo = features[active_count[features] < n_windows]
    if len(todo) and n > 0:
        cand = rng.integers(0, n_windows, size=(len(todo), 2 * n + 8))
        keys = todo[:, None] * n_windows + cand
        if len(active_keys):
            pos = np.minimum(np.searchsorted(active_keys, keys), len(active_keys) - 1)
            silent = active_keys[pos] != keys
        else:
            silent = np.ones(keys.shape, dtype=bool)
        # distinct windows: keep the first occurrence of each key in a row
        flat = np.where(silent, keys, -1).reshape(-1)
        _, first_idx = np.unique(flat, return_index=True)
        ok = np.zeros(flat.shape, dtype=bool)
        ok[first_idx] = True
        ok = (ok & (flat >= 0)).reshape(keys.shape)
        sel = ok & (np.cumsum(ok, axis=1) <= n)
        out_f.append(np.broadcast_to(todo[:, None], keys.shape)[sel])
        out_w.append(cand[sel])
        short = sel.sum(axis=1) < np.minimum(n, n_windows - active_count[todo])
        for f, got in zip(todo[short], [cand[i][sel[i]] for i in np.flatnonzero(short)]):
            # exhaustive draw for the few features that fire in most windows
            lo, hi = np.searchsorted(active_keys, [f * n_windows, (f + 1) * n_windows])
            free = np.setdiff1d(np.arange(n_windows), active_keys[lo:hi] - f * n_windows)
            free = np.setdiff1d(free, got)
            extra = rng.choice(free, size=min(n - len(got), len(free)), replace=False)
            out_f.append(np.full(len(extra), f, dtype=np.int64))
            out_w.append(extra.astype(np.int64))
    f = np.concatenate(out_f) if out_f else np.zeros(0, np.int64)
    w = np.concatenate(out_w) if out_w else np.zeros(0, np.int64)
    order = np.lexsort((w, f))
    f, w = f[order], w[order]
    rank = np.arange(len(f)) - np.searchsorted(f, f, side="left")
    return f, np.full(len(f), KIND_RANDOM), rank, w, np.zeros(len(f), np.float32)


def token_text(token: str) -> str:
    """A token as a label word: surrounding whitespace dropped, invisible tokens made visible."""
    text = token.strip()
    if text:
        return text
    return token.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "␣") or "∅"


def joiner_for(vocab: list[str]) -> str:
    """Word-level vocabularies are joined with spaces; subword ones carry their own spaces."""
    return "" if any(v[:1].isspace() for v in vocab) else " "


def render_windows(
    vocab: list[str], token_ids: np.ndarray, acts: np.ndarray | None = None, mark: str = "«»"
) -> list[str]:
    """Window text from token ids [n, W] (-1 = padding); tokens with act > 0 marked «token»."""
    joiner = joiner_for(vocab)
    open_m, close_m = mark[0], mark[1]
    display = np.array(vocab + [""], dtype=object)
    words = display[token_ids]  # -1 indexes the trailing ""
    if acts is None:
        return [joiner.join(w for w in row if w).strip() for row in words]
    out = []
    for row, act in zip(words, acts > 0):
        pieces = []
        for w, fired in zip(row, act):
            if not w:
                continue
            if fired:
                lead = w[: len(w) - len(w.lstrip())]
                w = f"{lead}{open_m}{w.lstrip()}{close_m}"
            pieces.append(w)
        out.append(joiner.join(pieces).strip())
    return out
