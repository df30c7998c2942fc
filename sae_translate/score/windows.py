"""The scored windows of every feature, padded into arrays, and the AUROC they share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sae_translate.label.examples import HeldoutSlice, render_windows
from sae_translate.store.h5 import RunStore


@dataclass
class ScoringSet:
    """Scored windows per feature, padded to K windows of W tokens."""

    features: np.ndarray  # int64 [F]
    tokens: np.ndarray  # int32 [F, K, W], -1 = padding
    acts: np.ndarray  # float32 [F, K, W]: true activation of the feature
    activating: np.ndarray  # bool [F, K]: window from the quantile sample (else silent)
    valid: np.ndarray  # bool [F, K]
    window_id: np.ndarray  # int64 [F, K]: index into window_texts (-1 = padding)
    window_texts: list[str]  # unique windows as plain text
    cells: np.ndarray  # int64 [F, K, W]: token index in the held-out slice (-1 = padding)


def auroc(scores: np.ndarray, positive: np.ndarray, valid: np.ndarray, block: int = 4096) -> np.ndarray:
    """Per row: P(score of a positive > score of a negative), ties count half; NaN if undefined."""
    out = np.full(len(scores), np.nan)
    for s in range(0, len(scores), block):
        sc, pos, val = scores[s : s + block], positive[s : s + block], valid[s : s + block]
        p, n = pos & val, ~pos & val
        pair = p[:, :, None] & n[:, None, :]
        diff = sc[:, :, None] - sc[:, None, :]
        wins = ((diff > 0) + 0.5 * (diff == 0)) * pair
        count = pair.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s : s + block] = np.where(count > 0, wins.sum(axis=(1, 2)) / count, np.nan)
    return out


def load_scoring_set(run: RunStore, data: HeldoutSlice, rows: dict[str, np.ndarray]) -> ScoringSet:
    """Padded windows from ``examples`` rows (feature, kind, seq, start, stop), sorted by feature."""
    feature, kind = rows["feature"].astype(np.int64), rows["kind"]
    activating = kind == "quantile"
    has_pos = np.zeros(run.d_sae, bool)
    has_neg = np.zeros(run.d_sae, bool)
    has_pos[feature[activating]] = True
    has_neg[feature[~activating]] = True
    keep = has_pos[feature] & has_neg[feature]
    feature, activating = feature[keep], activating[keep]
    seq, start, stop = rows["seq"][keep], rows["start"][keep], rows["stop"][keep]
    order = np.lexsort((~activating, feature))
    feature, activating, seq, start, stop = (a[order] for a in (feature, activating, seq, start, stop))
    features, first = np.unique(feature, return_index=True)
    slot = np.arange(len(feature)) - np.repeat(first, np.diff(np.r_[first, len(feature)]))
    f_idx = np.searchsorted(features, feature)
    k_max = int(slot.max()) + 1 if len(slot) else 0
    width = int((stop - start).max()) if len(stop) else 0
    grid = data.local_tokens(seq, start, width)
    grid = np.where(np.arange(width)[None, :] < (stop - start)[:, None], grid, -1)
    ids = data.token_ids(grid)
    acts = data.activations(grid, feature[:, None])
    wkey = seq * (run.ctx + 1) + start
    uniq, first_w, window_id = np.unique(wkey, return_index=True, return_inverse=True)
    window_texts = render_windows(run.vocab, ids[first_w])

    F = len(features)
    out = ScoringSet(
        features,
        np.full((F, k_max, width), -1, np.int32),
        np.zeros((F, k_max, width), np.float32),
        np.zeros((F, k_max), bool),
        np.zeros((F, k_max), bool),
        np.full((F, k_max), -1, np.int64),
        window_texts,
        np.full((F, k_max, width), -1, np.int64),
    )
    out.cells[f_idx, slot] = grid
    out.tokens[f_idx, slot] = ids
    out.acts[f_idx, slot] = acts
    out.activating[f_idx, slot] = activating
    out.valid[f_idx, slot] = True
    out.window_id[f_idx, slot] = window_id
    return out
